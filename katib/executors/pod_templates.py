"""Where the pods of a trial resource are described, per kind (pure dicts, no client).

A trial's run object can be any kind; the metrics collector and the trial labels have to
reach the *pods* it creates. This module finds, in a rendered resource, each place that
describes pods ("pod template"), with what the operator will add to those pods' labels,
so `primaryPodLabels` can be matched before anything runs:

* batch/v1 Job (and any object holding a PodTemplateSpec): ``spec.template``;
  containers and sidecars in ``spec.containers``, volumes in ``spec.volumes``;
* TFJob, PyTorchJob, XGBoostJob, MPIJob, PaddleJob, JAXJob: each
  ``spec.<x>ReplicaSpecs.<Type>.template``, as above;
* Argo Workflow: each ``spec.templates[i]`` with a ``container`` or ``script`` (named
  ``main`` by Argo); sidecars in ``sidecars``, volumes in ``spec.volumes``;
* Tekton PipelineRun: each ``spec.pipelineSpec.tasks[i].taskSpec``; containers are its
  ``steps`` (named ``step-<name>``), sidecars in ``sidecars``, volumes in ``volumes``;
* TrainJob: none; its pods come from the training runtime (``spec.trainer`` holds only
  the command, args and env).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

KUBEFLOW_REPLICA_KEYS = {
    "TFJob": "tfReplicaSpecs",
    "PyTorchJob": "pytorchReplicaSpecs",
    "XGBoostJob": "xgbReplicaSpecs",
    "MPIJob": "mpiReplicaSpecs",
    "PaddleJob": "paddleReplicaSpecs",
    "JAXJob": "jaxReplicaSpecs",
}
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
TEKTON_TASK_LABEL = "tekton.dev/pipelineTask"


@dataclass
class PodTemplate:
    """One place that describes pods: where its labels, containers, sidecars and volumes go."""

    where: str  # a field path, for messages
    labels: dict[str, str]  # the template's own labels (mutable: the manifest's dict)
    implied_labels: dict[str, str]  # labels the operator adds to the pods it creates
    containers: list[dict[str, Any]]  # the containers (Tekton steps, the Argo container)
    sidecars: list[dict[str, Any]]  # where a sidecar container is appended
    volumes: list[dict[str, Any]]  # where a volume is appended
    pod_spec: dict[str, Any] | None = None  # a real PodSpec (shareProcessNamespace...)
    style: str = "pod"  # pod | argo | tekton
    container_names: list[str] = field(default_factory=list)

    def pod_labels(self) -> dict[str, str]:
        return {**self.implied_labels, **self.labels}

    def container_named(self, name: str) -> dict[str, Any] | None:
        for container, shown in zip(self.containers, self.container_names, strict=True):
            if shown == name:
                return container
        return None


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        value = parent[key] = {}
    return value


def _list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if not isinstance(value, list):
        value = parent[key] = []
    return value


def _labels_of(template: dict[str, Any]) -> dict[str, str]:
    return _dict(_dict(template, "metadata"), "labels")


def _pod_template(where: str, template: dict[str, Any], implied: dict[str, str]) -> PodTemplate:
    spec = _dict(template, "spec")
    containers = [c for c in _list(spec, "containers") if isinstance(c, dict)]
    return PodTemplate(
        where=where,
        labels=_labels_of(template),
        implied_labels=implied,
        containers=containers,
        sidecars=_list(spec, "containers"),
        volumes=_list(spec, "volumes"),
        pod_spec=spec,
        container_names=[str(c.get("name", "")) for c in containers],
    )


def _kubeflow(resource: dict[str, Any], kind: str) -> Iterator[PodTemplate]:
    key = KUBEFLOW_REPLICA_KEYS[kind]
    replicas = _dict(resource, "spec").get(key)
    if not isinstance(replicas, dict):
        return
    for role, replica in replicas.items():
        if not isinstance(replica, dict) or not isinstance(replica.get("template"), dict):
            continue
        implied = {REPLICA_TYPE_LABEL: str(role).lower()}
        if str(role).lower() in ("master", "chief", "launcher"):
            implied[JOB_ROLE_LABEL] = "master" if str(role).lower() != "launcher" else "launcher"
        yield _pod_template(f"spec.{key}.{role}.template", replica["template"], implied)


def _argo(resource: dict[str, Any]) -> Iterator[PodTemplate]:
    spec = _dict(resource, "spec")
    for i, template in enumerate(spec.get("templates") or []):
        if not isinstance(template, dict):
            continue
        for key in ("container", "script"):
            main = template.get(key)
            if isinstance(main, dict):
                yield PodTemplate(
                    where=f"spec.templates[{i}]",
                    labels=_labels_of(template),
                    implied_labels={},
                    containers=[main],
                    sidecars=_list(template, "sidecars"),
                    volumes=_list(spec, "volumes"),
                    style="argo",
                    container_names=["main"],  # Argo always names the main container so
                )
                break


def _tekton(resource: dict[str, Any]) -> Iterator[PodTemplate]:
    pipeline = _dict(resource, "spec").get("pipelineSpec")
    if not isinstance(pipeline, dict):
        return
    for key in ("tasks", "finally"):
        for i, task in enumerate(pipeline.get(key) or []):
            if not isinstance(task, dict) or not isinstance(task.get("taskSpec"), dict):
                continue
            task_spec = task["taskSpec"]
            steps = [s for s in task_spec.get("steps") or [] if isinstance(s, dict)]
            yield PodTemplate(
                where=f"spec.pipelineSpec.{key}[{i}].taskSpec",
                labels=_labels_of(task_spec),
                implied_labels={TEKTON_TASK_LABEL: str(task.get("name", ""))},
                containers=steps,
                sidecars=_list(task_spec, "sidecars"),
                volumes=_list(task_spec, "volumes"),
                style="tekton",
                container_names=[f"step-{s.get('name', '')}" for s in steps],
            )


def _generic(node: Any, path: str) -> Iterator[PodTemplate]:
    """Any PodTemplateSpec-shaped dict ({metadata?, spec: {containers: [...]}})."""
    if isinstance(node, dict):
        spec = node.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("containers"), list):
            yield _pod_template(path or "(root)", node, {})
            return
        for key, value in node.items():
            yield from _generic(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _generic(value, f"{path}[{i}]")


def pod_templates(resource: dict[str, Any]) -> list[PodTemplate]:
    """Every pod template of a rendered trial resource (empty for TrainJob)."""
    kind = str(resource.get("kind", ""))
    if kind in KUBEFLOW_REPLICA_KEYS:
        return list(_kubeflow(resource, kind))
    if kind == "Workflow":
        return list(_argo(resource))
    if kind == "PipelineRun":
        return list(_tekton(resource))
    if kind == "TrainJob":
        return []
    return list(_generic(resource.get("spec"), "spec"))


def matches(template: PodTemplate, wanted: Mapping[str, str] | None) -> bool:
    """Will the template's pods carry every label of `wanted` (primaryPodLabels)?"""
    if not wanted:
        return True
    labels = template.pod_labels()
    return all(labels.get(k) == v for k, v in wanted.items())
