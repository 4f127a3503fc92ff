"""Trial manifests for every kind: labels, the collector on the primary container only,
and strict validation against the Kubernetes 1.37 OpenAPI schema (kubernetes-validate)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from katib.api.loading import load_experiment, load_experiment_dict
from katib.api.models import (
    EXPERIMENT_LABEL,
    EarlyStoppingRule,
    Experiment,
    ObjectMeta,
    ParameterAssignment,
    Trial,
    TrialSpec,
)
from katib.controller.templating import render_run_spec, sample_assignments
from katib.errors import InvalidArgumentError
from katib.executors.kubernetes_manifest import (
    CONTROL_DIR,
    CONTROL_VOLUME,
    METRICS_VOLUME,
    OWNER_ANNOTATION,
    PRIMARY_SCRIPT,
    TRIAL_LABEL,
    build_trial_manifest,
    label_selector,
    pod_label_selector,
    trial_labels,
)
from katib.executors.pod_templates import pod_templates
from katib.testing.manifest_schema import SCHEMA_VERSION, validate_manifest, wrapped_pod_specs

ROOT = Path(__file__).resolve().parents[2]
KINDS = sorted((Path(__file__).parent / "trial_kinds").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
ADDRESS = "katib-server.katib.svc:6789"


def make_trial(exp: Experiment, name: str = "", rules: bool = False) -> Trial:
    name = name or f"{exp.name}-k8s1"
    values = sample_assignments(exp)
    tt = exp.spec.trial_template
    assert tt is not None
    return Trial(
        metadata=ObjectMeta(
            name=name, namespace=exp.namespace, labels={EXPERIMENT_LABEL: exp.name}
        ),
        spec=TrialSpec(
            parameter_assignments=[ParameterAssignment(name=k, value=v) for k, v in values.items()],
            run_spec=render_run_spec(exp, name, values),
            primary_container_name=tt.primary_container_name,
            primary_pod_labels=tt.primary_pod_labels,
            early_stopping_rules=[
                EarlyStoppingRule(name="loss", value="0.3", comparison="less", start_step=3)
            ]
            if rules
            else None,
        ),
    )


def test_schema_version_is_the_newest_shipped() -> None:
    assert SCHEMA_VERSION == "1.37.0"


@pytest.mark.parametrize("collector", ["sidecar", "wrapper"])
@pytest.mark.parametrize("path", KINDS + EXAMPLES, ids=lambda p: p.stem)
def test_every_kind_and_example_validates(path: Path, collector: str) -> None:
    exp = load_experiment(path)
    trial = make_trial(exp, rules=True)
    manifest = build_trial_manifest(
        exp, trial, db_manager_address=ADDRESS, collector=collector, token_secret="katib-token"
    )
    validated = validate_manifest(manifest)
    assert validated
    meta = manifest["metadata"]
    assert meta["name"] == trial.name and meta["namespace"] == exp.namespace
    assert (
        meta["labels"][EXPERIMENT_LABEL] == exp.name and meta["labels"][TRIAL_LABEL] == trial.name
    )
    assert meta["annotations"][OWNER_ANNOTATION] == f"{exp.namespace}/{exp.name}/{trial.name}"
    assert list(manifest)[:4] == ["apiVersion", "kind", "metadata", "spec"]


def _load_kind(stem: str) -> Experiment:
    return load_experiment(Path(__file__).parent / "trial_kinds" / f"{stem}.yaml")


def _containers(template: Any) -> dict[str, dict[str, Any]]:
    return {name: c for c, name in zip(template.containers, template.container_names, strict=True)}


def test_job_sidecar_layout() -> None:
    exp = load_experiment(ROOT / "examples" / "random-sklearn.yaml")
    trial = make_trial(exp, rules=True)
    manifest = build_trial_manifest(exp, trial, db_manager_address=ADDRESS, token_secret="tok")
    pod = manifest["spec"]["template"]
    assert pod["metadata"]["labels"] == trial_labels(trial)
    main, sidecar = pod["spec"]["containers"]
    assert main["command"] == ["sh"]
    assert main["args"][:3] == ["-c", PRIMARY_SCRIPT, "katib-trial"]
    assert main["args"][3:5] == ["python3", "train_sklearn.py"]  # the original argv, quoted as argv
    env = {e["name"]: e for e in main["env"]}
    assert env["KATIB_TRIAL_NAME"]["value"] == trial.name
    assert env["KATIB_DB_MANAGER_ADDRESS"]["value"] == ADDRESS
    assert env["KATIB_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "tok", "key": "token"}}
    assert env["KATIB_METRICS_LOG"]["value"] == "/var/log/katib/metrics.log"
    assert env["KATIB_CONTROL_DIR"]["value"] == CONTROL_DIR
    assert sidecar["name"] == "metrics-logger-and-collector"
    assert sidecar["image"] == "katib-local:latest"
    args = sidecar["args"]
    assert args[:3] == ["--sidecar", "--control-dir", CONTROL_DIR]
    assert args[args.index("--metric-names") + 1] == "Validation-accuracy,Train-accuracy"
    assert args[args.index("--db-manager-address") + 1] == ADDRESS
    assert args[args.index("--file-path") + 1] == "/var/log/katib/metrics.log"
    assert args[args.index("--stop-rule") + 1] == "loss;0.3;less;3"
    assert args[args.index("--objective-type") + 1] == "maximize"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[CONTROL_VOLUME] == {"name": CONTROL_VOLUME, "emptyDir": {}}
    assert volumes[METRICS_VOLUME] == {"name": METRICS_VOLUME, "emptyDir": {}}
    for container in (main, sidecar):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts == {CONTROL_DIR: CONTROL_VOLUME, "/var/log/katib": METRICS_VOLUME}
    assert "shareProcessNamespace" not in pod["spec"]  # the marker needs no shared pids


def _metrics_path(exp: Experiment) -> str:
    mc = exp.spec.metrics_collector_spec
    fsp = mc.source.file_system_path if mc and mc.source else None
    assert fsp is not None and fsp.path
    return fsp.path


def test_job_wrapper_layout() -> None:
    exp = load_experiment(ROOT / "examples" / "file-text.yaml")
    trial = make_trial(exp)
    manifest = build_trial_manifest(exp, trial, db_manager_address=ADDRESS, collector="wrapper")
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    argv = containers[0]["command"] + containers[0]["args"]
    assert argv[:3] == ["python", "-m", "metrics_collector"]
    cut = argv.index("--")
    flags = argv[:cut]
    assert flags[flags.index("--source-kind") + 1] == "file"
    assert flags[flags.index("--file-path") + 1] == _metrics_path(exp)
    assert "--echo" in flags
    assert argv[cut + 1 :][0] == "python3"


def test_kubeflow_jobs_collect_on_the_primary_replica_only() -> None:
    for stem, primary, other in [
        ("tfjob", "Chief", "Worker"),
        ("pytorchjob", "Master", "Worker"),
        ("xgboostjob", "Master", "Worker"),
        ("mpijob", "Launcher", "Worker"),
    ]:
        exp = _load_kind(stem)
        manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
        templates = {t.where.split(".")[2]: t for t in pod_templates(manifest)}
        assert set(templates) == {primary, other}
        assert [c.get("name") for c in templates[primary].sidecars][
            -1
        ] == "metrics-logger-and-collector", stem
        assert all(
            c.get("name") != "metrics-logger-and-collector" for c in templates[other].sidecars
        ), stem
        for t in templates.values():  # every pod can be found by the trial label
            assert t.labels[TRIAL_LABEL] == f"{exp.name}-k8s1"


def test_argo_workflow_sidecar_and_pod_labels() -> None:
    exp = _load_kind("argo-workflow")
    manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
    spec = manifest["spec"]
    assert spec["podMetadata"]["labels"][TRIAL_LABEL] == "argo-workflow-k8s1"
    training = spec["templates"][2]
    assert training["container"]["command"] == ["sh"]
    assert [s["name"] for s in training["sidecars"]] == ["metrics-logger-and-collector"]
    assert "sidecars" not in spec["templates"][1] or not spec["templates"][1]["sidecars"]
    assert {v["name"] for v in spec["volumes"]} == {CONTROL_VOLUME, METRICS_VOLUME}


def test_tekton_pipeline_run_step_and_sidecar() -> None:
    exp = _load_kind("tekton-pipeline-run")
    manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
    tasks = manifest["spec"]["pipelineSpec"]["tasks"]
    training = tasks[1]["taskSpec"]
    assert training["steps"][0]["command"] == ["sh"]
    assert training["steps"][0]["args"][3:5] == ["python3", "/opt/mxnet-mnist/mnist.py"]
    assert [s["name"] for s in training["sidecars"]] == ["metrics-logger-and-collector"]
    assert not tasks[0]["taskSpec"].get("sidecars")
    assert (
        manifest["metadata"]["labels"][TRIAL_LABEL] == "tekton-pipeline-run-k8s1"
    )  # Tekton copies them


def test_trainjob_is_wrapped_on_node_zero() -> None:
    exp = _load_kind("trainjob")
    manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
    trainer = manifest["spec"]["trainer"]
    assert trainer["command"][:2] == ["sh", "-c"]
    assert 'JOB_COMPLETION_INDEX:-0}" = 0' in trainer["command"][2]
    assert "python -m metrics_collector" in trainer["command"][2]
    assert trainer["args"][:2] == ["python", "/workspace/train.py"]
    assert manifest["spec"]["labels"][TRIAL_LABEL] == trial_name(manifest)
    assert manifest["metadata"]["annotations"]["katib.kubeflow.org/metrics-collector"] == "wrapper"
    assert pod_label_selector(manifest) == f"jobset.sigs.k8s.io/jobset-name={trial_name(manifest)}"
    assert exp.spec.trial_template is not None and exp.spec.trial_template.retain is True


def trial_name(manifest: dict[str, Any]) -> str:
    return str(manifest["metadata"]["name"])


def test_push_adds_only_the_environment() -> None:
    exp = load_experiment(ROOT / "examples" / "push.yaml")
    manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    assert containers[0]["command"][0] != "sh"
    assert {e["name"] for e in containers[0]["env"]} >= {
        "KATIB_TRIAL_NAME",
        "KATIB_DB_MANAGER_ADDRESS",
    }


def test_custom_collector_becomes_the_sidecar() -> None:
    exp = load_experiment(ROOT / "examples" / "custom-collector.yaml")
    manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
    spec = manifest["spec"]["template"]["spec"]
    mc = exp.spec.metrics_collector_spec
    custom = mc.collector.custom_collector if mc and mc.collector else None
    assert custom is not None
    assert spec["containers"][-1]["name"] == custom["name"]
    assert spec["shareProcessNamespace"] is True


def test_users_own_volume_at_the_metrics_path_is_shared() -> None:
    exp = load_experiment(ROOT / "examples" / "file-text.yaml")
    trial = make_trial(exp)
    directory = _metrics_path(exp).rsplit("/", 1)[0]
    run_spec = copy.deepcopy(trial.spec.run_spec)
    assert run_spec is not None
    pod = run_spec["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": directory}]
    pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}}]
    trial.spec.run_spec = run_spec
    manifest = build_trial_manifest(exp, trial, db_manager_address=ADDRESS)
    validate_manifest(manifest)
    spec = manifest["spec"]["template"]["spec"]
    sidecar_mounts = {m["mountPath"]: m["name"] for m in spec["containers"][-1]["volumeMounts"]}
    assert sidecar_mounts[directory] == "data"
    assert METRICS_VOLUME not in {v["name"] for v in spec["volumes"]}


def _job_experiment(**template: Any) -> Experiment:
    container: dict[str, Any] = {
        "name": "main",
        "image": "python:3.11",
        "command": ["python", "t.py", "--x=${trialParameters.x}"],
    }
    container.update(template.pop("container", {}))
    return load_experiment_dict(
        {
            "metadata": {"name": "edge", "namespace": "ns1"},
            "spec": {
                "objective": {"type": "minimize", "objectiveMetricName": "loss"},
                "algorithm": {"algorithmName": "random"},
                "parallelTrialCount": 1,
                "maxTrialCount": 1,
                "parameters": [
                    {
                        "name": "x",
                        "parameterType": "double",
                        "feasibleSpace": {"min": "0", "max": "1"},
                    }
                ],
                "trialTemplate": {
                    "primaryContainerName": "main",
                    "trialParameters": [{"name": "x", "reference": "x"}],
                    "trialSpec": {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "spec": {
                            "template": {
                                "spec": {"containers": [container], "restartPolicy": "Never"}
                            }
                        },
                    },
                    **template,
                },
                **template.pop("spec", {}),
            },
        }
    )


def test_no_command_is_a_clear_error() -> None:
    exp = _job_experiment(container={"command": None, "args": ["--x=${trialParameters.x}"]})
    with pytest.raises(InvalidArgumentError, match=r"has no command.*give `command`"):
        build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)


def test_missing_primary_container_names_the_containers() -> None:
    exp = _job_experiment()
    trial = make_trial(exp)
    trial.spec.primary_container_name = "trainer"
    with pytest.raises(
        InvalidArgumentError,
        match=r"primary container 'trainer' not found in spec.template \(containers: main\)",
    ):
        build_trial_manifest(exp, trial, db_manager_address=ADDRESS)


def test_bad_collector_mode() -> None:
    exp = _job_experiment()
    with pytest.raises(InvalidArgumentError, match="collector must be one of sidecar, wrapper"):
        build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS, collector="magic")


def test_namespace_comes_from_the_experiment() -> None:
    exp = _job_experiment()
    manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
    assert manifest["metadata"]["namespace"] == "ns1"


def test_selectors() -> None:
    assert label_selector() == "app.kubernetes.io/managed-by=katib-local"
    assert (
        label_selector("e1")
        == "app.kubernetes.io/managed-by=katib-local,katib.kubeflow.org/experiment=e1"
    )
    assert label_selector("e1", "t1").endswith(",katib.kubeflow.org/trial=t1")
    exp = _job_experiment()
    trial = make_trial(exp, "edge-t9")
    assert trial_labels(trial) == {
        "katib.kubeflow.org/experiment": "edge",
        "katib.kubeflow.org/trial": "edge-t9",
        "app.kubernetes.io/managed-by": "katib-local",
    }
    manifest = build_trial_manifest(exp, trial, db_manager_address=ADDRESS)
    assert pod_label_selector(manifest) == "katib.kubeflow.org/trial=edge-t9"


def test_validation_is_strict() -> None:
    """The schema check catches what a cluster would reject (so passing means something)."""
    exp = _job_experiment()
    manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
    bad = copy.deepcopy(manifest)
    bad["spec"]["template"]["spec"]["containers"][0]["comand"] = ["typo"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(bad)
    bad = copy.deepcopy(manifest)
    bad["spec"]["template"]["spec"]["containers"][1]["env"] = [{"name": "X", "value": 1}]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(bad)
    crd = build_trial_manifest(
        _load_kind("pytorchjob"), make_trial(_load_kind("pytorchjob")), db_manager_address=ADDRESS
    )
    crd["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "volumeMounts"
    ].append({"name": "x", "mountPath": 7})
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(crd)


def test_custom_resources_are_checked_through_a_wrapping_job() -> None:
    exp = _load_kind("argo-workflow")
    manifest = build_trial_manifest(exp, make_trial(exp), db_manager_address=ADDRESS)
    parts = wrapped_pod_specs(manifest)
    assert [where for where, _ in parts] == ["spec.templates[1]", "spec.templates[2]"]
    job = parts[1][1]
    assert job["kind"] == "Job"
    names = [c["name"] for c in job["spec"]["template"]["spec"]["containers"]]
    assert names == ["main", "metrics-logger-and-collector"]


def test_no_template_matching_primary_pod_labels_falls_back_to_the_container() -> None:
    """A TFJob with Workers only: no pod will carry job-role=master, so every template with
    the primary container gets the collector, rather than none."""
    exp = _load_kind("tfjob")
    trial = make_trial(exp)
    run_spec = copy.deepcopy(trial.spec.run_spec)
    assert run_spec is not None
    del run_spec["spec"]["tfReplicaSpecs"]["Chief"]
    trial.spec.run_spec = run_spec
    manifest = build_trial_manifest(exp, trial, db_manager_address=ADDRESS)
    (worker,) = pod_templates(manifest)
    assert [c.get("name") for c in worker.sidecars] == [
        "tensorflow",
        "metrics-logger-and-collector",
    ]
    validate_manifest(manifest)


def test_any_custom_resource_with_a_pod_template() -> None:
    exp = _job_experiment()
    trial = make_trial(exp)
    job = trial.spec.run_spec
    assert job is not None
    custom = {
        "apiVersion": "example.com/v1",
        "kind": "Trainer",
        "metadata": job["metadata"],
        "spec": {"runner": {"replicas": 1, "template": job["spec"]["template"]}},
    }
    trial.spec.run_spec = custom
    manifest = build_trial_manifest(exp, trial, db_manager_address=ADDRESS, collector="wrapper")
    template = manifest["spec"]["runner"]["template"]
    assert template["metadata"]["labels"][TRIAL_LABEL] == trial.name
    assert template["spec"]["containers"][0]["command"] == ["python"]
    assert validate_manifest(manifest) == ["spec.runner.template"]


def test_go_template_experiment_uses_the_first_container() -> None:
    exp = load_experiment(ROOT / "examples" / "gotemplate.yaml")
    tt = exp.spec.trial_template
    assert tt is not None and tt.primary_container_name is None
    manifest = build_trial_manifest(
        exp, make_trial(exp, "gotemplate-random-z1"), db_manager_address=ADDRESS
    )
    main, sidecar = manifest["spec"]["template"]["spec"]["containers"]
    assert main["name"] == "gotemplate-random-z1"  # {{.Trial}}, as v1alpha3 templates named it
    assert main["command"] == ["sh"] and sidecar["name"] == "metrics-logger-and-collector"
