"""The Kubernetes executor's whole lifecycle over HTTP: the official client against the API double.

Nothing is patched: every call goes through `kubernetes.client` to the double's HTTP
server (katib.testing.kube_api_double), whose simulated operators run the pods and set
the resources' status; faults (409, 404, 410, 500, slow answers) are injected there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from katib.api.loading import load_experiment_dict
from katib.api.models import (
    Condition,
    Experiment,
    ObjectMeta,
    ParameterAssignment,
    Trial,
    TrialSpec,
    TrialStatus,
)
from katib.controller.templating import render_run_spec
from katib.errors import ExecutorError, InvalidArgumentError, InvalidSpecError, UnavailableError
from katib.executors.base import LaunchContext, TrialOutcome, TrialPhase
from katib.executors.kubernetes import (
    OUTCOME_SUFFIX,
    STOPPED_ANNOTATION,
    TRIAL_LABEL,
    KubernetesExecutor,
    api_client_for,
)
from katib.executors.registry import executor_class
from katib.testing.kube_api_double import Fault, KubeApiDouble, PodScript

PROGRAM = "import sys; print('accuracy=' + sys.argv[1].split('=', 1)[1])"
EARLY_RESULT = json.dumps({"exit_code": 0, "early_stopped": True, "early_stopped_reason": "rules"})


def behaviour(resource: dict[str, Any], container: dict[str, Any]) -> PodScript:
    """--value=fail exits 1, sleep runs until stopped; early and early-json were stopped by
    their collector (the sidecar layout's last log line / a collector result as the
    termination message)."""
    argv = " ".join(
        str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]
    )
    if "--value=fail" in argv:
        return PodScript(exit_code=1, seconds=0.05, log="Traceback: boom\n")
    if "--value=sleep" in argv:
        return PodScript(seconds=None)
    if "--value=early-json" in argv:
        return PodScript(seconds=0.05, termination_message=EARLY_RESULT)
    if "--value=early" in argv:
        return PodScript(seconds=0.05, log="accuracy=0.1\nTraining Container was Early Stopped\n")
    value = argv.rsplit("--value=", 1)[-1].split()[0] if "--value=" in argv else "0"
    return PodScript(seconds=0.05, log=f"epoch 1\naccuracy={value}\n")


def _container(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "python:3.12",
        "command": ["python3", "-c", PROGRAM, "--value=${trialParameters.value}"],
    }


def _pod_template(name: str) -> dict[str, Any]:
    return {"spec": {"restartPolicy": "Never", "containers": [_container(name)]}}


#: kind -> (trialSpec, primaryContainerName, extra trialTemplate fields)
TEMPLATES: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "Job": (
        {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": _pod_template("main")}},
        "main",
        {},
    ),
    "TFJob": (
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "TFJob",
            "spec": {
                "tfReplicaSpecs": {
                    "Worker": {
                        "replicas": 2,
                        "restartPolicy": "Never",
                        "template": _pod_template("tensorflow"),
                    }
                }
            },
        },
        "tensorflow",
        {},
    ),
    "PyTorchJob": (
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "spec": {
                "pytorchReplicaSpecs": {
                    "Master": {"replicas": 1, "template": _pod_template("pytorch")},
                    "Worker": {"replicas": 1, "template": _pod_template("pytorch")},
                }
            },
        },
        "pytorch",
        {},
    ),
    "Workflow": (
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "spec": {
                "entrypoint": "train",
                "templates": [{"name": "train", "container": _container("main")}],
            },
        },
        "main",
        # validation wants them for kinds Katib has no defaults for (the upstream example's)
        {
            "successCondition": 'status.[@this].#(phase=="Succeeded")#',
            "failureCondition": 'status.[@this].#(phase=="Failed")#',
        },
    ),
}


def experiment_for(
    kind: str = "Job",
    *,
    name: str = "k8s",
    namespace: str = "default",
    retain: bool = False,
    extra: dict[str, Any] | None = None,
    values: list[str] | None = None,
    trials: tuple[int, int] = (3, 1),
) -> Experiment:
    """``trials``: (maxTrialCount, parallelTrialCount)."""
    trial_spec, primary, template_extra = TEMPLATES[kind]
    doc: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "maxTrialCount": trials[0],
            "parallelTrialCount": trials[1],
            "parameters": [
                {
                    "name": "value",
                    "parameterType": "categorical",
                    "feasibleSpace": {
                        "list": values or ["0.5", "fail", "sleep", "early", "early-json"]
                    },
                }
            ],
            "trialTemplate": {
                "retain": retain,
                "primaryContainerName": primary,
                "trialParameters": [{"name": "value", "reference": "value"}],
                "trialSpec": json.loads(json.dumps(trial_spec)),
                **template_extra,
                **(extra or {}),
            },
        },
    }
    return load_experiment_dict(doc)


def trial_for(experiment: Experiment, name: str, value: str, running: bool = False) -> Trial:
    template = experiment.spec.trial_template
    assert template is not None
    both = bool(template.success_condition and template.failure_condition)
    status = TrialStatus()
    if running:
        status.conditions = [Condition(type="Running", status="True", reason="TrialRunning")]
    return Trial(
        metadata=ObjectMeta(
            name=name,
            namespace=experiment.namespace,
            labels={"katib.kubeflow.org/experiment": experiment.name},
        ),
        spec=TrialSpec(
            parameter_assignments=[ParameterAssignment(name="value", value=value)],
            run_spec=render_run_spec(experiment, name, {"value": value}),
            primary_container_name=template.primary_container_name,
            primary_pod_labels=template.primary_pod_labels,
            retain_run=template.retain,
            success_condition=template.success_condition if both else None,
            failure_condition=template.failure_condition if both else None,
        ),
        status=status,
    )


def wait_for(
    executor: KubernetesExecutor, trial: Trial, phases: set[TrialPhase], timeout: float = 15.0
) -> TrialOutcome:
    deadline = time.monotonic() + timeout
    while True:
        outcome = executor.poll(trial)
        if outcome.phase in phases or time.monotonic() > deadline:
            return outcome
        time.sleep(0.02)


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def kube() -> Iterator[KubeApiDouble]:
    with KubeApiDouble(behaviour=behaviour, namespaces=("default", "team-a")) as double:
        yield double


@pytest.fixture
def new_executor(kube: KubeApiDouble) -> Iterator[Callable[..., KubernetesExecutor]]:
    made: list[KubernetesExecutor] = []

    def make(**options: Any) -> KubernetesExecutor:
        options.setdefault("request_timeout", 3.0)
        options.setdefault("watch_timeout", 2.0)
        executor = KubernetesExecutor(api_client=api_client_for(kube.url), **options)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()
        executor.api.close()


@pytest.fixture
def executor(new_executor: Callable[..., KubernetesExecutor]) -> KubernetesExecutor:
    return new_executor()


def context_for(experiment: Experiment) -> LaunchContext:
    return LaunchContext(experiment=experiment, db_manager_address="katib-db-manager.kubeflow:6789")


def creates(kube: KubeApiDouble, plural: str) -> int:
    return sum(1 for m, p, _ in kube.requests if m == "POST" and p.endswith(f"/{plural}"))


# --- the lifecycle ---------------------------------------------------------------------


def test_job_runs_succeeds_and_is_cleaned_up(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-ok", "0.5")
    assert executor.poll(trial).phase == TrialPhase.NOT_STARTED
    executor.launch(trial, context_for(experiment))
    executor.launch(trial, context_for(experiment))  # 409 from the API: nothing new
    job = kube.get("jobs", "default", "k8s-ok")
    assert job is not None and job["metadata"]["labels"][TRIAL_LABEL] == "k8s-ok"
    assert creates(kube, "jobs") == 2 and len(kube.objects("jobs")) == 1

    outcome = wait_for(executor, trial, {TrialPhase.FINISHED, TrialPhase.LOST})
    assert outcome.phase == TrialPhase.FINISHED and outcome.succeeded, outcome
    # cleaned up with foreground propagation, its outcome kept in a labelled ConfigMap
    assert ("jobs", "default", "k8s-ok", "Foreground") in kube.deletions
    assert wait_until(lambda: kube.get("jobs", "default", "k8s-ok") is None)
    record = kube.get("configmaps", "default", "k8s-ok" + OUTCOME_SUFFIX)
    assert record is not None and record["metadata"]["labels"][TRIAL_LABEL] == "k8s-ok"

    executor.launch(trial, context_for(experiment))  # finished: never created again
    assert creates(kube, "jobs") == 2
    again = executor.poll(trial)
    assert again.phase == TrialPhase.FINISHED and again.succeeded


def test_job_failure_names_the_reason_and_exit_code(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-fail", "fail")
    executor.launch(trial, context_for(experiment))
    outcome = wait_for(executor, trial, {TrialPhase.FINISHED, TrialPhase.LOST})
    assert outcome.phase == TrialPhase.FINISHED and not outcome.succeeded
    assert outcome.exit_code == 1
    assert "BackoffLimitExceeded" in outcome.message
    assert "container main exited with code 1" in outcome.message


def test_status_is_followed_through_a_watch(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-watched", "sleep")
    executor.launch(trial, context_for(experiment))
    assert wait_for(executor, trial, {TrialPhase.RUNNING}).phase == TrialPhase.RUNNING

    def watches() -> list[dict[str, list[str]]]:
        return [q for m, p, q in kube.requests if p.endswith("/jobs") and "watch" in q]

    assert wait_until(lambda: bool(watches()))
    assert all(q.get("resourceVersion") for q in watches())
    assert all(q["labelSelector"] == [TRIAL_LABEL] for q in watches())
    gets_before = sum(1 for m, p, _ in kube.requests if p.endswith("/jobs/k8s-watched"))
    for _ in range(20):  # polling a running trial is served from the watch cache
        assert executor.poll(trial).phase == TrialPhase.RUNNING
    gets_after = sum(1 for m, p, _ in kube.requests if p.endswith("/jobs/k8s-watched"))
    assert gets_after == gets_before
    kube.finish("default", "k8s-watched", exit_code=0)
    outcome = wait_for(executor, trial, {TrialPhase.FINISHED})
    assert outcome.succeeded


@pytest.mark.parametrize("kind", ["TFJob", "PyTorchJob", "Workflow"])
def test_other_kinds_use_their_default_conditions(
    kind: str, kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for(kind)
    spec = TEMPLATES[kind][0]
    group, version = spec["apiVersion"].split("/")
    plural = {"TFJob": "tfjobs", "PyTorchJob": "pytorchjobs", "Workflow": "workflows"}[kind]
    ok = trial_for(experiment, f"k8s-{plural}-ok", "0.5")
    bad = trial_for(experiment, f"k8s-{plural}-bad", "fail")
    for trial in (ok, bad):
        trial.spec.success_condition = trial.spec.failure_condition = None  # the defaults
        executor.launch(trial, context_for(experiment))
    assert f"/apis/{group}/{version}/namespaces/default/{plural}" in {
        p for _, p, _ in kube.requests
    }
    # discovery found the plural from apiVersion + kind
    assert any(p == f"/apis/{group}/{version}" for _, p, _ in kube.requests)
    good = wait_for(executor, ok, {TrialPhase.FINISHED, TrialPhase.LOST})
    assert good.phase == TrialPhase.FINISHED and good.succeeded, good
    failed = wait_for(executor, bad, {TrialPhase.FINISHED, TrialPhase.LOST})
    assert failed.phase == TrialPhase.FINISHED and not failed.succeeded
    assert failed.message
    assert (plural, "default", ok.name, "Foreground") in kube.deletions


def test_explicit_conditions_from_the_template_decide(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    # success as soon as the Job has an active pod: the template's condition, not the default
    experiment = experiment_for(
        extra={
            "successCondition": "status.[@this].#(active>0)#",
            "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#',
        }
    )
    trial = trial_for(experiment, "k8s-custom", "sleep")
    executor.launch(trial, context_for(experiment))
    outcome = wait_for(executor, trial, {TrialPhase.FINISHED})
    assert outcome.phase == TrialPhase.FINISHED and outcome.succeeded


def test_early_stop_by_the_controller_and_by_the_collector(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    running = trial_for(experiment, "k8s-stopped", "sleep")
    executor.launch(running, context_for(experiment))
    assert wait_for(executor, running, {TrialPhase.RUNNING}).phase == TrialPhase.RUNNING
    executor.stop(running)
    executor.stop(running)  # idempotent
    outcome = executor.poll(running)  # at once, as the controller polls right after stop
    assert outcome.phase == TrialPhase.FINISHED and not outcome.succeeded
    assert outcome.signal == 15 and "stopped" in outcome.message
    assert wait_until(lambda: not kube.objects("pods"))

    for value in ("early", "early-json"):
        collected = trial_for(experiment, f"k8s-{value}", value)
        executor.launch(collected, context_for(experiment))
        outcome = wait_for(executor, collected, {TrialPhase.FINISHED, TrialPhase.LOST})
        assert outcome.succeeded and outcome.early_stopped, (value, outcome)
        assert "early stopped" in outcome.message
    normal = trial_for(experiment, "k8s-not-early", "0.5")
    executor.launch(normal, context_for(experiment))
    outcome = wait_for(executor, normal, {TrialPhase.FINISHED, TrialPhase.LOST})
    assert outcome.succeeded and not outcome.early_stopped


def test_retain_keeps_finished_and_stopped_resources(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for(retain=True)
    done = trial_for(experiment, "k8s-kept", "0.5")
    executor.launch(done, context_for(experiment))
    assert wait_for(executor, done, {TrialPhase.FINISHED}).succeeded
    assert executor.poll(done).succeeded  # again: it stays, and so does the answer
    assert kube.get("jobs", "default", "k8s-kept") is not None
    assert not [d for d in kube.deletions if d[2] == "k8s-kept"]

    sleeping = trial_for(experiment, "k8s-kept-stopped", "sleep")
    executor.launch(sleeping, context_for(experiment))
    assert wait_for(executor, sleeping, {TrialPhase.RUNNING}).phase == TrialPhase.RUNNING
    executor.stop(sleeping)
    outcome = executor.poll(sleeping)
    assert outcome.phase == TrialPhase.FINISHED
    assert not outcome.succeeded and outcome.signal == 15
    job = kube.get("jobs", "default", "k8s-kept-stopped")
    assert job is not None and job["spec"]["suspend"] is True
    assert STOPPED_ANNOTATION in job["metadata"]["annotations"]
    owner = job["metadata"]["uid"]

    def no_pods() -> bool:
        return not [
            p for p in kube.objects("pods") if p["metadata"]["ownerReferences"][0]["uid"] == owner
        ]

    assert wait_until(no_pods)
    executor.stop(sleeping)  # idempotent
    assert executor.poll(sleeping).signal == 15


def test_retained_tfjob_is_suspended_not_deleted(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for("TFJob", retain=True)
    trial = trial_for(experiment, "k8s-tf-kept", "sleep")
    executor.launch(trial, context_for(experiment))
    assert wait_for(executor, trial, {TrialPhase.RUNNING}).phase == TrialPhase.RUNNING
    executor.stop(trial)
    assert wait_for(executor, trial, {TrialPhase.FINISHED}).signal == 15
    tfjob = kube.get("tfjobs", "default", "k8s-tf-kept")
    assert tfjob is not None and tfjob["spec"]["runPolicy"]["suspend"] is True


def test_a_new_executor_adopts_running_trials(
    kube: KubeApiDouble, new_executor: Callable[..., KubernetesExecutor]
) -> None:
    experiment = experiment_for()
    first = new_executor()
    trial = trial_for(experiment, "k8s-adopted", "sleep")
    first.launch(trial, context_for(experiment))
    assert wait_for(first, trial, {TrialPhase.RUNNING}).phase == TrialPhase.RUNNING
    first.close()  # the controller restarts: nothing survives in memory

    second = new_executor()
    stored = trial_for(experiment, "k8s-adopted", "sleep", running=True)
    assert second.poll(stored).phase == TrialPhase.RUNNING
    assert second.find_trials(experiment) == {"k8s-adopted": "Running"}
    second.launch(stored, context_for(experiment))  # idempotent across restarts too
    assert len(kube.objects("jobs")) == 1
    kube.finish("default", "k8s-adopted", exit_code=0)
    outcome = wait_for(second, stored, {TrialPhase.FINISHED})
    assert outcome.succeeded


def test_an_experiments_resources_are_removed_by_label(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for(name="k8s-gone-exp", retain=True)
    other = experiment_for(name="k8s-kept-exp")
    done = trial_for(experiment, "k8s-gone-a", "0.5")
    running = trial_for(experiment, "k8s-gone-b", "sleep")
    unrelated = trial_for(other, "k8s-kept-c", "sleep")
    for trial, exp in ((done, experiment), (running, experiment), (unrelated, other)):
        executor.launch(trial, context_for(exp))
    assert wait_for(executor, done, {TrialPhase.FINISHED}).succeeded
    assert executor.remove_experiment(experiment) == 2
    assert wait_until(
        lambda: [j["metadata"]["name"] for j in kube.objects("jobs")] == ["k8s-kept-c"]
    )
    assert executor.find_trials(other) == {"k8s-kept-c": "Running"}


def test_a_vanished_resource_is_lost(
    kube: KubeApiDouble, new_executor: Callable[..., KubernetesExecutor]
) -> None:
    experiment = experiment_for()
    first = new_executor()
    trial = trial_for(experiment, "k8s-vanished", "sleep")
    first.launch(trial, context_for(experiment))
    assert wait_for(first, trial, {TrialPhase.RUNNING}).phase == TrialPhase.RUNNING
    first.close()
    kube.remove("jobs", "default", "k8s-vanished")

    second = new_executor()
    outcome = second.poll(trial_for(experiment, "k8s-vanished", "sleep", running=True))
    assert outcome.phase == TrialPhase.LOST
    assert "Job default/k8s-vanished vanished" in outcome.message
    # a trial that was never marked Running is simply not started yet
    assert second.poll(trial).phase == TrialPhase.NOT_STARTED


def test_trials_run_in_the_experiments_namespace_only(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for(namespace="team-a")
    trial = trial_for(experiment, "k8s-team", "0.5")
    executor.launch(trial, context_for(experiment))
    assert [j["metadata"]["name"] for j in kube.objects("jobs", "team-a")] == ["k8s-team"]
    assert kube.objects("jobs", "default") == []
    assert wait_for(executor, trial, {TrialPhase.FINISHED}).succeeded

    elsewhere = trial_for(experiment_for(namespace="default"), "k8s-other", "0.5")
    with pytest.raises(ExecutorError, match="experiment's namespace 'team-a'"):
        executor.launch(elsewhere, context_for(experiment))

    ghost = experiment_for(namespace="ghost")
    with pytest.raises(ExecutorError, match=r'Job ghost/k8s-ghost.*namespaces "ghost" not found'):
        executor.launch(trial_for(ghost, "k8s-ghost", "0.5"), context_for(ghost))


def test_pod_log_of_the_primary_container(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-logs", "0.75")
    executor.launch(trial, context_for(experiment))
    assert wait_until(lambda: "accuracy=0.75" in executor.read_log(trial))
    assert executor.read_log(trial, tail_lines=1) == "accuracy=0.75\n"


# --- ConfigMap trial templates ----------------------------------------------------------------

CONFIGMAP_TEMPLATE = """\
apiVersion: batch/v1
kind: Job
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: main
          image: python:3.12
          command: ["python3", "-c", "print('accuracy=' + '${trialParameters.value}')"]
          args: ["--value=${trialParameters.value}"]
"""


def configmap_experiment(name: str, configmap: str, *, namespace: str = "default") -> Experiment:
    """An Experiment whose trial template lives only in ConfigMap `configmap`."""
    doc: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "maxTrialCount": 2,
            "parallelTrialCount": 1,
            "parameters": [
                {
                    "name": "value",
                    "parameterType": "categorical",
                    "feasibleSpace": {"list": ["0.25", "0.5"]},
                }
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "value", "reference": "value"}],
                # the kind is unknown until the ConfigMap is read: conditions are required
                "successCondition": 'status.conditions.#(type=="Complete")#|#(status=="True")#',
                "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#',
                "configMap": {
                    "configMapName": configmap,
                    "configMapNamespace": namespace,
                    "templatePath": "job.yaml",
                },
            },
        },
    }
    return load_experiment_dict(doc)


def put_template(kube: KubeApiDouble, name: str, namespace: str = "default") -> None:
    kube.put_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"job.yaml": CONFIGMAP_TEMPLATE},
        }
    )


def test_a_configmap_template_is_read_from_the_cluster(
    kube: KubeApiDouble, new_executor: Callable[..., KubernetesExecutor]
) -> None:
    put_template(kube, "trial-template", "team-a")
    experiment = configmap_experiment("k8s-cm", "trial-template", namespace="team-a")
    # nowhere but on the cluster: no local copy and no KATIB_CONFIGMAP_PATH
    with pytest.raises(InvalidSpecError, match="configMap not found: team-a/trial-template"):
        render_run_spec(experiment, "k8s-cm-local", {"value": "0.5"})
    executor = new_executor()
    trial = trial_for(experiment, "k8s-cm-a", "0.5")  # renders through the executor
    assert trial.spec.run_spec is not None
    assert trial.spec.run_spec["kind"] == "Job"
    container = trial.spec.run_spec["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--value=0.5"]
    assert (
        "GET",
        "/api/v1/namespaces/team-a/configmaps/trial-template",
    ) in {(m, p) for m, p, _ in kube.requests}
    executor.launch(trial, context_for(experiment))
    assert kube.get("jobs", "team-a", "k8s-cm-a") is not None
    outcome = wait_for(executor, trial, {TrialPhase.FINISHED, TrialPhase.LOST})
    assert outcome.phase == TrialPhase.FINISHED and outcome.succeeded, outcome
    # the kind of the experiment's trials comes from the ConfigMap too; cleaned up soon
    assert executor.find_trials(experiment) in ({}, {"k8s-cm-a": "Succeeded"})
    assert wait_until(lambda: executor.find_trials(experiment) == {})

    executor.close()  # closed: renders no longer reach the cluster
    with pytest.raises(InvalidSpecError, match="configMap not found: team-a/trial-template"):
        render_run_spec(experiment, "k8s-cm-closed", {"value": "0.5"})


def test_a_configmap_missing_on_the_cluster_is_named(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = configmap_experiment("k8s-cm-missing", "no-such-template")
    with pytest.raises(InvalidSpecError) as caught:
        render_run_spec(experiment, "k8s-cm-missing-a", {"value": "0.5"})
    message = str(caught.value)
    assert "configMap not found on the Kubernetes cluster: default/no-such-template" in message
    assert "spec.trialTemplate" in message
    kube.inject(Fault(status=503, method="GET", path="/configmaps/trial-template$"))
    put_template(kube, "trial-template")
    broken = configmap_experiment("k8s-cm-503", "trial-template")
    with pytest.raises(UnavailableError, match=r"ConfigMap default/trial-template.*503"):
        render_run_spec(broken, "k8s-cm-503-a", {"value": "0.5"})
    assert render_run_spec(broken, "k8s-cm-503-a", {"value": "0.5"})["kind"] == "Job"


@pytest.mark.slow
def test_an_experiment_with_a_configmap_template_runs_on_the_double(tmp_path: Path) -> None:
    """The controller renders each trial from the ConfigMap on the cluster."""
    from katib.controller.runtime import RunOptions, Runtime

    experiment = configmap_experiment("k8s-cm-run", "run-template")
    with KubeApiDouble(behaviour=behaviour) as kube:
        put_template(kube, "run-template")
        api = api_client_for(kube.url)
        executor = KubernetesExecutor(api_client=api, request_timeout=3.0, watch_timeout=2.0)
        try:
            with Runtime(data_dir=tmp_path / "data", executor=executor) as runtime:
                stored = runtime.submit(experiment)
                runtime.run(stored.name, stored.namespace, options=RunOptions(0.02))
                trials = runtime.storage.list_trials(stored.name, stored.namespace)
        finally:
            api.close()
        assert len(trials) == 2
        for trial in trials:
            # no metric reaches DBManager from the double's pods: the trial itself ended well
            assert trial.condition in ("Succeeded", "MetricsUnavailable"), trial.status
            record = kube.get("configmaps", "default", trial.name + OUTCOME_SUFFIX)
            assert record is not None and '"exit_code": 0' in record["data"]["outcome"]
        created = [p for m, p, _ in kube.requests if m == "POST" and p.endswith("/jobs")]
        assert len(created) == 2


def test_an_experiment_whose_configmap_is_missing_fails_naming_it(tmp_path: Path) -> None:
    from katib.controller.runtime import RunOptions, Runtime

    experiment = configmap_experiment("k8s-cm-none", "absent-template")
    with KubeApiDouble(behaviour=behaviour) as kube:
        api = api_client_for(kube.url)
        executor = KubernetesExecutor(api_client=api, request_timeout=3.0, watch=False)
        try:
            with Runtime(data_dir=tmp_path / "data", executor=executor) as runtime:
                stored = runtime.submit(experiment)
                final = runtime.run(stored.name, stored.namespace, options=RunOptions(0.02))
                trials = runtime.storage.list_trials(stored.name, stored.namespace)
        finally:
            api.close()
        assert final.status is not None
        failed = [c for c in final.status.conditions if c.type == "Failed" and c.status == "True"]
        assert failed, final.status.conditions
        assert "default/absent-template" in (failed[0].message or "")
        assert trials == []
        assert not [p for m, p, _ in kube.requests if m == "POST" and p.endswith("/jobs")]


# --- API errors --------------------------------------------------------------------------


def test_conflict_with_another_trials_object_is_an_error(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    kube.put_object(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "k8s-taken", "namespace": "default", "labels": {"app": "x"}},
            "spec": {"template": _pod_template("main")},
        }
    )
    with pytest.raises(ExecutorError, match="Job default/k8s-taken already exists and does not"):
        executor.launch(trial_for(experiment, "k8s-taken", "0.5"), context_for(experiment))


def test_a_conflict_for_an_object_that_cannot_be_read_is_retryable(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-409", "0.5")
    kube.inject(Fault(status=409, method="POST", path="/jobs$"))
    with pytest.raises(UnavailableError, match="409") as caught:
        executor.launch(trial, context_for(experiment))
    assert caught.value.retryable
    executor.launch(trial, context_for(experiment))  # the retry creates it
    assert wait_for(executor, trial, {TrialPhase.FINISHED}).succeeded


def test_a_kind_the_cluster_does_not_serve_is_named(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-nokind", "0.5")
    assert trial.spec.run_spec is not None
    trial.spec.run_spec["apiVersion"] = "example.com/v1"
    trial.spec.run_spec["kind"] = "Trainer"
    with pytest.raises(ExecutorError, match=r"does not serve Trainer in example\.com/v1"):
        executor.launch(trial, context_for(experiment))


def test_not_found_on_read_is_not_started(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-404", "0.5")
    kube.inject(Fault(status=404, method="GET", path="/jobs/k8s-404$", times=None))
    assert executor.poll(trial).phase == TrialPhase.NOT_STARTED


def test_server_errors_are_retryable_and_name_the_resource(
    kube: KubeApiDouble, executor: KubernetesExecutor
) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-500", "0.5")
    kube.inject(Fault(status=500, method="POST", path="/jobs$"))
    with pytest.raises(UnavailableError, match=r"Job default/k8s-500: .*500") as caught:
        executor.launch(trial, context_for(experiment))
    assert caught.value.retryable
    assert kube.objects("jobs") == []
    executor.launch(trial, context_for(experiment))
    kube.inject(Fault(status=503, method="GET", path="/jobs/k8s-500$"))
    executor.close()  # no watch cache: the poll must GET
    plain = KubernetesExecutor(api_client=executor.api, watch=False, request_timeout=3.0)
    with pytest.raises(UnavailableError, match=r"Job default/k8s-500: .*503"):
        plain.poll(trial)
    assert wait_for(plain, trial, {TrialPhase.FINISHED}).succeeded
    plain.close()


def test_a_slow_api_times_out_as_unavailable(
    kube: KubeApiDouble, new_executor: Callable[..., KubernetesExecutor]
) -> None:
    executor = new_executor(request_timeout=0.3, watch=False)
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-slow", "0.5")
    kube.inject(Fault(status=None, delay=3.0, method="POST", path="/jobs$"))
    started = time.monotonic()
    with pytest.raises(
        UnavailableError, match=r"Job default/k8s-slow: .*did not answer within 0\.3 s"
    ):
        executor.launch(trial, context_for(experiment))
    assert time.monotonic() - started < 2.5  # cut short, not waiting for the answer
    # the slow create went through after all: launching again is idempotent
    assert wait_until(lambda: kube.get("jobs", "default", "k8s-slow") is not None)
    executor.launch(trial, context_for(experiment))
    assert wait_for(executor, trial, {TrialPhase.FINISHED}).succeeded


def test_watch_410_gone_relists(kube: KubeApiDouble, executor: KubernetesExecutor) -> None:
    experiment = experiment_for()
    trial = trial_for(experiment, "k8s-gone", "sleep")
    kube.inject(Fault(status=410, watch=True, times=2))
    executor.launch(trial, context_for(experiment))
    assert wait_for(executor, trial, {TrialPhase.RUNNING}).phase == TrialPhase.RUNNING
    assert wait_until(lambda: executor.watch_relists() >= 3)  # first list + one per 410
    kube.compact()  # history forgotten: the watch's resourceVersion is now too old
    relists = executor.watch_relists()
    kube.finish("default", "k8s-gone", exit_code=0)
    assert wait_until(lambda: executor.watch_relists() > relists)
    assert wait_for(executor, trial, {TrialPhase.FINISHED}).succeeded


# --- a whole experiment --------------------------------------------------------------------


@pytest.mark.slow
def test_an_experiment_runs_to_completion_with_trials_on_the_double(tmp_path: Path) -> None:
    """Controller, DBManager, suggestion service and executor as in `katib run`; the
    double's pods report their metric to DBManager over gRPC, as the collector does."""
    from katib.controller.runtime import RunOptions, Runtime
    from metrics_collector.parsers import ParsedMetric
    from metrics_collector.reporter import Reporter

    def collector(resource: dict[str, Any], container: dict[str, Any]) -> PodScript:
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        value = next(a.split("=", 1)[1] for a in argv if str(a).startswith("--value="))
        reporter = Reporter(
            env["KATIB_TRIAL_NAME"],
            env["KATIB_DB_MANAGER_ADDRESS"],
            spool_path=tmp_path / f"{env['KATIB_TRIAL_NAME']}.unreported",
        )
        reporter.add([ParsedMetric("accuracy", value, datetime.now(UTC))])
        assert reporter.close(timeout=5.0) == 0
        return PodScript(seconds=0.05, log=f"accuracy={value}\n")

    experiment = experiment_for(
        name="k8s-run", values=["0.25", "0.5", "0.75", "0.9"], trials=(4, 2)
    )
    with KubeApiDouble(behaviour=collector) as kube:
        api = api_client_for(kube.url)
        executor = KubernetesExecutor(api_client=api, request_timeout=3.0, watch_timeout=2.0)
        try:
            with Runtime(data_dir=tmp_path / "data", executor=executor) as runtime:
                stored = runtime.submit(experiment)
                final = runtime.run(stored.name, stored.namespace, options=RunOptions(0.02))
                trials = runtime.storage.list_trials(stored.name, stored.namespace)
        finally:
            api.close()
        assert final.status is not None
        assert [c.reason for c in final.status.conditions if c.status == "True"][-1] == (
            "ExperimentMaxTrialsReached"
        )
        assert len(trials) == 4
        for trial in trials:
            assert trial.condition == "Succeeded", trial.status
            assert trial.status.observation is not None
            metric = trial.status.observation.metrics[0]
            assert metric.name == "accuracy" and metric.latest == trial.assignments["value"]
            record = kube.get("configmaps", "default", trial.name + OUTCOME_SUFFIX)
            assert record is not None
        assert wait_until(lambda: not kube.objects("jobs") and not kube.objects("pods"))
        assert {d[3] for d in kube.deletions if d[0] == "jobs"} == {"Foreground"}


# --- choosing the executor -------------------------------------------------------------------


def test_the_registry_imports_kubernetes_only_when_chosen(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from katib.executors.registry import create_executor, executor_class\n"
        f"executor = create_executor('local', data_dir={str(tmp_path)!r})\n"
        "assert type(executor).__name__ == 'LocalExecutor'\n"
        "assert 'kubernetes' not in sys.modules, 'imported too early'\n"
        "assert executor_class('kubernetes').name == 'kubernetes'\n"
        "assert 'kubernetes' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with pytest.raises(InvalidArgumentError, match="unknown executor 'slurm'"):
        executor_class("slurm")


def _experiment_file(tmp_path: Path, name: str) -> Path:
    doc = experiment_for(name=name, values=["0.3", "0.6", "0.9"], trials=(3, 2)).to_dict()
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_katib_run_on_kubernetes_explains_what_it_needs(tmp_path: Path) -> None:
    path = _experiment_file(tmp_path, "k8s-cli-bad")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KATIB_DATA_DIR=str(tmp_path / "data"), KUBECONFIG=str(tmp_path / "missing"))
    base = [sys.executable, "-m", "katib.cli.main", "run", str(path), "-q"]
    no_address = subprocess.run(
        [*base, "--executor", "kubernetes"], env=env, capture_output=True, text=True, timeout=60
    )
    assert no_address.returncode != 0
    assert "--db-manager-address" in no_address.stderr and "Traceback" not in no_address.stderr
    no_config = subprocess.run(
        [*base, "--executor", "kubernetes", "--db-manager-address", "10.0.0.1:16789"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_config.returncode != 0
    assert "no usable Kubernetes configuration" in no_config.stderr
    assert "Traceback" not in no_config.stderr


@pytest.mark.slow
def test_katib_run_with_the_kubernetes_executor_against_the_double(tmp_path: Path) -> None:
    """`katib run --executor kubernetes` in a subprocess, with a kubeconfig for the double;
    the double's pods report to the run's DBManager at --db-manager-address."""
    from metrics_collector.parsers import ParsedMetric
    from metrics_collector.reporter import Reporter

    def collector(resource: dict[str, Any], container: dict[str, Any]) -> PodScript:
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        value = next(a.split("=", 1)[1] for a in argv if str(a).startswith("--value="))
        reporter = Reporter(
            env["KATIB_TRIAL_NAME"],
            env["KATIB_DB_MANAGER_ADDRESS"],
            spool_path=tmp_path / f"{env['KATIB_TRIAL_NAME']}.unreported",
        )
        reporter.add([ParsedMetric("accuracy", value, datetime.now(UTC))])
        reporter.close(timeout=5.0)
        return PodScript(seconds=0.1)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = _experiment_file(tmp_path, "k8s-cli")
    with KubeApiDouble(behaviour=collector) as kube:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "double", "cluster": {"server": kube.url}}],
                    "users": [{"name": "tester", "user": {}}],
                    "contexts": [
                        {"name": "double", "context": {"cluster": "double", "user": "tester"}}
                    ],
                    "current-context": "",
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env.update(KATIB_DATA_DIR=str(tmp_path / "data"), KUBECONFIG=str(kubeconfig))
        run = subprocess.run(
            [
                *[sys.executable, "-m", "katib.cli.main", "run", str(path), "-q"],
                *["--executor", "kubernetes", "--kube-context", "double"],
                *["--db-manager-address", f"127.0.0.1:{port}"],
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Succeeded" in run.stdout
        created = [p for m, p, _ in kube.requests if m == "POST" and p.endswith("/jobs")]
        assert len(created) == 3
        records = kube.objects("configmaps", "default")
        assert len(records) == 3
        assert all(json.loads(r["data"]["outcome"])["exit_code"] == 0 for r in records)


@pytest.mark.slow
def test_the_controller_early_stops_a_running_trial(tmp_path: Path) -> None:
    """SetTrialStatus -> the controller stops the Job -> the trial ends EarlyStopped."""
    from katib.controller.runtime import RunOptions, Runtime
    from metrics_collector.parsers import ParsedMetric
    from metrics_collector.reporter import Reporter

    def reports_then_sleeps(resource: dict[str, Any], container: dict[str, Any]) -> PodScript:
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        reporter = Reporter(
            env["KATIB_TRIAL_NAME"],
            env["KATIB_DB_MANAGER_ADDRESS"],
            spool_path=tmp_path / "unreported.jsonl",
        )
        reporter.add([ParsedMetric("accuracy", "0.2", datetime.now(UTC))])
        reporter.close(timeout=5.0)
        return PodScript(seconds=None)  # runs until stopped

    experiment = experiment_for(name="k8s-es", values=["sleep"], trials=(1, 1))
    with KubeApiDouble(behaviour=reports_then_sleeps) as kube:
        api = api_client_for(kube.url)
        executor = KubernetesExecutor(api_client=api, request_timeout=3.0, watch_timeout=2.0)
        try:
            with Runtime(data_dir=tmp_path / "data", executor=executor) as runtime:
                stored = runtime.submit(experiment)
                requested: list[str] = []

                def on_pass(result: Any) -> None:
                    running = [t.name for t in result.trials if t.condition == "Running"]
                    if running and not requested and kube.objects("pods"):
                        requested.append(running[0])
                        runtime.on_trial_stopped(running[0])

                runtime.run(
                    stored.name, stored.namespace, on_pass=on_pass, options=RunOptions(0.02)
                )
                trials = runtime.storage.list_trials(stored.name, stored.namespace)
        finally:
            api.close()
        assert requested and [t.condition for t in trials] == ["EarlyStopped"]
        assert ("jobs", "default", requested[0], "Foreground") in kube.deletions
