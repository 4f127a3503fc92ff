"""What the Kubernetes executor knows about trial resources, without the `kubernetes` client.

Labels and names it puts on the cluster, the resource kinds (apiVersion + kind + plural),
how a retained resource is stopped, and how an API answer maps onto katib.errors. Kept
apart from katib.executors.kubernetes (the only module importing the client) so that it
can be read and tested without a cluster or the client installed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from katib.api.models import Trial
from katib.errors import ExecutorError, KatibError, UnavailableError

EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
TRIAL_LABEL = "katib.kubeflow.org/trial"
OUTCOME_LABEL = "katib.kubeflow.org/outcome"
STOPPED_ANNOTATION = "katib.kubeflow.org/stopped"
OUTCOME_SUFFIX = "-outcome"
#: Containers our manifests add for the collector (Katib's names for the sidecar).
COLLECTOR_CONTAINERS = ("metrics-logger-and-collector", "metrics-collector")
PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")
#: What the primary container prints last when its collector stopped it early.
EARLY_STOPPED_LINE = "Training Container was Early Stopped"
#: The content type of the merge patches the executor sends.
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class ResourceKind:
    """A trial resource type as the API serves it."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def is_job(self) -> bool:
        return self.api_version == "batch/v1" and self.kind == "Job"


JOB = ResourceKind("batch/v1", "Job", "jobs")

#: Merge patches that stop a retained resource's pods but keep the resource.
STOP_PATCHES: dict[str, dict[str, Any]] = {
    "Job": {"spec": {"suspend": True}},
    "TrainJob": {"spec": {"suspend": True}},
    "TFJob": {"spec": {"runPolicy": {"suspend": True}}},
    "PyTorchJob": {"spec": {"runPolicy": {"suspend": True}}},
    "XGBoostJob": {"spec": {"runPolicy": {"suspend": True}}},
    "MPIJob": {"spec": {"runPolicy": {"suspend": True}}},
    "Workflow": {"spec": {"shutdown": "Terminate"}},
    "PipelineRun": {"spec": {"status": "Cancelled"}},
}


class KubernetesApiError(ExecutorError):
    """The API refused a call (4xx); `status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class KubernetesUnavailableError(UnavailableError):
    """The API failed (5xx, 429), timed out or could not be reached; retrying may help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _body_message(body: str | bytes | None) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body or ""
    try:
        decoded = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    return str(decoded.get("message") or "") if isinstance(decoded, dict) else ""


def api_error(what: str, status: int | None, reason: str | None, body: Any) -> KatibError:
    """The katib error for an API answer: retryable for 5xx and 429, else KubernetesApiError."""
    code = status or 0
    detail = _body_message(body if isinstance(body, (str, bytes)) else None)
    text = f"{what}: the Kubernetes API answered {code} {reason or ''}".rstrip()
    if detail:
        text += f": {detail}"
    if code >= 500 or code == 429:
        return KubernetesUnavailableError(text, code)
    return KubernetesApiError(text, code)


def is_status(exc: KatibError, status: int) -> bool:
    """Did the API answer `status` (a KubernetesApiError or KubernetesUnavailableError)?"""
    return getattr(exc, "status", None) == status


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` merged into a copy of `base`, mappings key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def stop_patch(
    kind: ResourceKind, stopped_outcome: Mapping[str, Any]
) -> tuple[dict[str, Any], bool]:
    """The merge patch that marks a retained resource stopped (and stops its pods when the
    kind has a suspend field); the bool says whether it does stop them."""
    patch: dict[str, Any] = {
        "metadata": {"annotations": {STOPPED_ANNOTATION: json.dumps(dict(stopped_outcome))}}
    }
    extra = STOP_PATCHES.get(kind.kind)
    if extra is None:
        return patch, False
    return merge(patch, extra), True


def trial_labels(trial: Trial) -> dict[str, str]:
    """The labels of the trial's resource (and of its outcome record)."""
    from katib.executors.kubernetes_manifest import trial_labels as manifest_labels

    return {**manifest_labels(trial), TRIAL_LABEL: trial.name}


def pod_selector(trial: Trial) -> str:
    """The label selector of the trial's primary pods (its label plus primaryPodLabels)."""
    from katib.executors.kubernetes_manifest import pod_label_selector

    kind = (trial.spec.run_spec or {}).get("kind")
    # TrainJob pods come from its runtime and carry the JobSet's labels, not ours
    selector = pod_label_selector({"kind": kind, "metadata": {"name": trial.name}})
    extra = ",".join(f"{k}={v}" for k, v in (trial.spec.primary_pod_labels or {}).items())
    return f"{selector},{extra}" if extra else selector
