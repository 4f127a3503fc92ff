"""How a trial's Kubernetes resource and pods read as a TrialOutcome (no `kubernetes` import).

The Kubernetes executor fetches the objects; this module decides from them, so each rule
lives in one place: the trial's successCondition/failureCondition (or the kind's
defaults, failure looked at first as in Katib), the primary container's exit code and
termination message (our collector's JSON result), the outcome record kept in a
ConfigMap once the resource is gone, and the "stopped" mark on a retained resource.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from katib.api.models import Experiment, Trial
from katib.errors import ExecutorError, InvalidArgumentError
from katib.executors.base import TrialOutcome, TrialPhase
from katib.executors.kubernetes_resources import (
    COLLECTOR_CONTAINERS,
    EARLY_STOPPED_LINE,
    OUTCOME_LABEL,
    OUTCOME_SUFFIX,
    STOPPED_ANNOTATION,
    TRIAL_LABEL,
    ResourceKind,
    trial_labels,
)


def parse_result(message: str) -> dict[str, Any]:
    """Our collector's result (JSON) from a termination message; {} for any other text."""
    text = message.strip()
    if not text.startswith("{"):
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def condition_message(obj: Mapping[str, Any]) -> str:
    """The reason and message of the resource's last true condition (or its phase message)."""
    status = obj.get("status") or {}
    for condition in reversed(status.get("conditions") or []):
        if condition.get("status") in ("True", "False") and condition.get("type") in (
            "Failed",
            "Succeeded",
            "Complete",
        ):
            reason, message = condition.get("reason") or "", condition.get("message") or ""
            return f"{reason}: {message}" if reason and message else reason or message
    phase, message = status.get("phase") or "", status.get("message") or ""
    return f"{phase}: {message}" if phase and message else message


def outcome_to_dict(outcome: TrialOutcome) -> dict[str, Any]:
    return {
        "phase": str(outcome.phase),
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "message": outcome.message,
        "early_stopped": outcome.early_stopped,
        "metrics_reason": outcome.metrics_reason,
    }


def outcome_from_dict(data: Mapping[str, Any]) -> TrialOutcome:
    return TrialOutcome(
        TrialPhase(str(data.get("phase") or TrialPhase.FINISHED)),
        exit_code=data.get("exit_code"),
        signal=data.get("signal"),
        message=str(data.get("message") or ""),
        early_stopped=bool(data.get("early_stopped")),
        metrics_reason=str(data.get("metrics_reason") or ""),
    )


# --- success and failure -------------------------------------------------------------------


def trial_conditions(trial: Trial, kind: ResourceKind) -> tuple[str, str]:
    """(successCondition, failureCondition): the trial's own, else the kind's defaults."""
    from katib.controller.conditions import default_conditions

    spec = trial.spec
    if spec.success_condition and spec.failure_condition:
        return spec.success_condition, spec.failure_condition
    try:
        return default_conditions(kind.api_version, kind.kind)
    except InvalidArgumentError as exc:
        raise ExecutorError(f"trial {trial.name}: {exc}") from None


def verdict(trial: Trial, kind: ResourceKind, obj: Mapping[str, Any]) -> str | None:
    """ "failed", "succeeded" or None (still running), failure looked at first."""
    from katib.controller.conditions import evaluate

    success, failure = trial_conditions(trial, kind)
    try:
        if evaluate(failure, obj):
            return "failed"
        if evaluate(success, obj):
            return "succeeded"
    except InvalidArgumentError as exc:
        raise ExecutorError(f"trial {trial.name}: {exc}") from None
    return None


def classify(experiment: Experiment, kind: ResourceKind, obj: Mapping[str, Any]) -> str:
    """Running, Succeeded or Failed for a trial resource found by label (find_trials)."""
    from katib.controller.conditions import default_conditions, evaluate

    template = experiment.spec.trial_template
    success, failure = (
        (template.success_condition, template.failure_condition)
        if template is not None and template.success_condition and template.failure_condition
        else default_conditions(kind.api_version, kind.kind)
    )
    if evaluate(failure, obj):
        return "Failed"
    if evaluate(success, obj):
        return "Succeeded"
    return "Running"


def outcome_from_pods(
    trial: Trial,
    obj: Mapping[str, Any],
    decided: str,
    pods: list[dict[str, Any]],
    log_tail: Callable[[str], str],
) -> TrialOutcome:
    """The ended trial's outcome from its resource and its primary pods.

    `decided` is the verdict ("succeeded"/"failed"); `log_tail(pod)` reads the last lines
    of a pod's primary container, asked only when a succeeded trial left no result.
    """
    primary_name = trial.spec.primary_container_name or ""
    exit_code: int | None = None
    container_note = ""
    result: dict[str, Any] = {}
    collector_error = ""
    primary_pod = ""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            if not terminated:
                continue
            cname = status.get("name")
            parsed = parse_result(terminated.get("message") or "")
            if cname == primary_name or (not primary_name and exit_code is None):
                exit_code = int(terminated.get("exitCode", 0))
                primary_pod = str((pod.get("metadata") or {}).get("name") or "")
                container_note = f"container {cname} exited with code {exit_code}" + (
                    f" ({terminated['reason']})" if terminated.get("reason") else ""
                )
                result = parsed or result
            elif cname in COLLECTOR_CONTAINERS:
                result = result or parsed
                if int(terminated.get("exitCode", 0)) != 0:
                    code = terminated.get("exitCode")
                    collector_error = f"metrics collector {cname} exited with code {code}"
    # the sidecar layout's primary script ends its output with this line when the
    # collector stopped the command (which then exits 0, as in Katib)
    if (
        not result
        and decided == "succeeded"
        and primary_pod
        and EARLY_STOPPED_LINE in log_tail(primary_pod).splitlines()
    ):
        result = {"early_stopped": True, "early_stopped_reason": "the collector's rules held"}
    early_stopped = bool(result.get("early_stopped"))
    reason = str(result.get("reason") or "")
    if decided == "succeeded":
        message = str(result.get("error") or "")
        if early_stopped and not message:
            message = f"early stopped: {result.get('early_stopped_reason') or 'rules held'}"
        return TrialOutcome(
            TrialPhase.FINISHED,
            exit_code=0,
            message=message,
            early_stopped=early_stopped,
            metrics_reason=reason,
        )
    parts = [condition_message(obj)]
    if container_note and exit_code:
        parts.append(container_note)
    if collector_error and not exit_code:  # the sidecar passes the command's code on
        parts.append(collector_error)
    if result.get("error"):
        parts.append(str(result["error"]))
    return TrialOutcome(
        TrialPhase.FINISHED,
        exit_code=exit_code if exit_code else 1,
        message="; ".join(p for p in parts if p),
        early_stopped=early_stopped,
        metrics_reason=reason,
    )


# --- records and marks ---------------------------------------------------------------------


def record_body(trial: Trial, outcome: TrialOutcome) -> dict[str, Any]:
    """The ConfigMap `<trial>-outcome` that keeps a finished trial's outcome."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": trial.name + OUTCOME_SUFFIX,
            "namespace": trial.namespace,
            "labels": {**trial_labels(trial), OUTCOME_LABEL: "true"},
        },
        "data": {"outcome": json.dumps(outcome_to_dict(outcome))},
    }


def outcome_from_record(answer: Mapping[str, Any], trial_name: str) -> TrialOutcome | None:
    """The outcome an outcome record holds; None when the ConfigMap is someone else's."""
    meta = answer.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(TRIAL_LABEL) != trial_name or labels.get(OUTCOME_LABEL) != "true":
        return None
    try:
        return outcome_from_dict(json.loads((answer.get("data") or {}).get("outcome") or "{}"))
    except (ValueError, TypeError):
        where = f"ConfigMap {meta.get('namespace', '')}/{trial_name}{OUTCOME_SUFFIX}"
        return TrialOutcome(TrialPhase.FINISHED, message=f"{where} holds an unreadable outcome")


def stopped_mark(obj: Mapping[str, Any]) -> TrialOutcome | None:
    """The outcome stored on a retained resource the executor stopped, if it did."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(STOPPED_ANNOTATION)
    if not text:
        return None
    try:
        return outcome_from_dict(json.loads(text))
    except (ValueError, TypeError):
        return TrialOutcome(TrialPhase.FINISHED, signal=15, message="stopped")
