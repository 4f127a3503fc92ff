"""Check manifests against the Kubernetes OpenAPI schema (kubernetes-validate, strict).

Built-in kinds (Job, Deployment, Service, Role, ...) are validated whole. Custom
resources (TFJob, PyTorchJob, XGBoostJob, MPIJob, TrainJob, Argo Workflow, Tekton
PipelineRun) have no schema there, so what they contain of Kubernetes' own types is
validated instead, each wrapped in a batch/v1 Job:

* Kubeflow replica templates (and any PodTemplateSpec) as the Job's pod template;
* an Argo template's main container (named ``main``, ``source`` of script templates
  dropped), its ``sidecars`` and the workflow's ``volumes`` as a PodSpec;
* a Tekton task's ``steps`` (named ``step-<name>``), ``sidecars`` and ``volumes`` as a
  PodSpec, keeping only the fields a core Container has (``script`` and the like are
  Tekton's own);
* a TrainJob's ``spec.trainer`` command, args and env as a container.

Note the library's traps: it wants plain dicts (a client model's ``to_dict()`` is
snake_case) and reports only the first error.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate

from katib.executors.pod_templates import pod_templates

SCHEMA_VERSION = kubernetes_validate.latest_version()
_BUILTIN_GROUPS = (
    "v1",
    "apps/",
    "batch/",
    "rbac.authorization.k8s.io/",
    "networking.k8s.io/",
    "policy/",
    "autoscaling/",
    "storage.k8s.io/",
    "scheduling.k8s.io/",
    "coordination.k8s.io/",
)
CONTAINER_FIELDS = frozenset(
    {
        "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env",
        "resources", "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices",
        "livenessProbe", "readinessProbe", "startupProbe", "lifecycle",
        "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy",
        "securityContext", "stdin", "stdinOnce", "tty",
    }
)  # fmt: skip


def is_builtin(manifest: dict[str, Any]) -> bool:
    api_version = str(manifest.get("apiVersion", ""))
    return api_version == "v1" or api_version.startswith(_BUILTIN_GROUPS[1:])


def _as_job(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": template},
    }


def _container(raw: dict[str, Any], name: str) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in raw.items() if k in CONTAINER_FIELDS}
    out["name"] = name
    out.setdefault("image", "image-set-elsewhere")
    return out


def wrapped_pod_specs(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, a batch/v1 Job holding it) for each Kubernetes-typed part of a custom resource."""
    kind = manifest.get("kind")
    out: list[tuple[str, dict[str, Any]]] = []
    if kind == "TrainJob":
        trainer = (manifest.get("spec") or {}).get("trainer") or {}
        spec = {"containers": [_container(trainer, "node")], "restartPolicy": "Never"}
        out.append(("spec.trainer", _as_job("trainjob-trainer", {"spec": spec})))
        return out
    for template in pod_templates(copy.deepcopy(manifest)):
        if template.style == "pod":
            raw = {"metadata": {"labels": template.pod_labels()}, "spec": template.pod_spec}
        else:
            containers = [
                _container(c, n)
                for c, n in zip(template.containers, template.container_names, strict=True)
            ]
            containers += [
                _container(s, str(s.get("name", f"sidecar-{i}")))
                for i, s in enumerate(template.sidecars)
            ]
            spec = {"containers": containers, "restartPolicy": "Never"}
            if template.volumes:
                spec["volumes"] = template.volumes
            raw = {"metadata": {"labels": template.pod_labels()}, "spec": spec}
        out.append((template.where, _as_job("wrapped-pod-template", raw)))
    return out


def validate_manifest(manifest: dict[str, Any], version: str = SCHEMA_VERSION) -> list[str]:
    """Validate strictly; returns what was validated ("Job" or the wrapped parts' paths).

    Raises kubernetes_validate.ValidationError (first error only) on a schema violation,
    and ValueError for a custom resource with nothing Kubernetes-typed to check.
    """
    if is_builtin(manifest):
        kubernetes_validate.validate(manifest, version, strict=True)
        return [str(manifest.get("kind"))]
    parts = wrapped_pod_specs(manifest)
    if not parts:
        raise ValueError(f"{manifest.get('kind')}: no pod template to validate")
    for _, job in parts:
        kubernetes_validate.validate(job, version, strict=True)
    return [where for where, _ in parts]
