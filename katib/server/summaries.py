"""Experiment summaries for listings, built from the stored documents without models.

A list of a thousand experiments must not validate a thousand full specs, so these
functions read the camelCase documents directly. Trial counts of unfinished
experiments come from one aggregate query; a finished experiment keeps the final
counts its last reconcile pass stored in its status.
"""

from __future__ import annotations

from typing import Any

from katib.storage.base import BaseStorage

STATUSES = ("Created", "Running", "Restarting", "Succeeded", "Failed")
TERMINAL = ("Succeeded", "Failed")

#: Latest trial condition -> the summary's count key.
_COUNT_KEYS = {
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Running": "running",
    "Created": "pending",
    "Killed": "killed",
    "EarlyStopped": "earlyStopped",
    "MetricsUnavailable": "metricsUnavailable",
}
#: Status count fields -> the trial condition they count.
_STATUS_COUNTS = {
    "trialsSucceeded": "Succeeded",
    "trialsFailed": "Failed",
    "trialsKilled": "Killed",
    "trialsPending": "Created",
    "trialsRunning": "Running",
    "trialsEarlyStopped": "EarlyStopped",
    "trialMetricsUnavailable": "MetricsUnavailable",
}


def experiment_status(doc: dict[str, Any]) -> str:
    """The latest condition that holds ("Created" before the controller has seen it)."""
    conditions = (doc.get("status") or {}).get("conditions") or []
    true = [c.get("type") for c in conditions if c.get("status", "True") == "True"]
    return str(true[-1]) if true else "Created"


def _latest_type(doc: dict[str, Any]) -> str | None:
    conditions = (doc.get("status") or {}).get("conditions") or []
    return conditions[-1].get("type") if conditions else None


def _strategy(objective: dict[str, Any], metric: str) -> str:
    for entry in objective.get("metricStrategies") or []:
        if entry.get("name") == metric:
            return str(entry.get("value"))
    return {"maximize": "max", "minimize": "min"}.get(str(objective.get("type")), "latest")


def best_of(doc: dict[str, Any]) -> dict[str, Any] | None:
    """{trialName, value, parameters, observation} from status.currentOptimalTrial, or None.

    The value is the objective metric under its strategy (latest when that one is
    unavailable), as a number when it parses as one.
    """
    optimal = (doc.get("status") or {}).get("currentOptimalTrial") or {}
    if not optimal.get("bestTrialName"):
        return None
    objective = (doc.get("spec") or {}).get("objective") or {}
    name = objective.get("objectiveMetricName")
    observation = optimal.get("observation")
    value: float | str | None = None
    for metric in (observation or {}).get("metrics") or []:
        if not name or metric.get("name") != name:
            continue
        chosen = metric.get({"min": "min", "max": "max"}.get(_strategy(objective, name), "latest"))
        if chosen in (None, "unavailable"):
            chosen = metric.get("latest")
        if chosen not in (None, "unavailable"):
            try:
                value = float(chosen)
            except (TypeError, ValueError):
                value = str(chosen)
        break
    return {
        "trialName": optimal["bestTrialName"],
        "value": value,
        "parameters": {
            a.get("name"): a.get("value") for a in optimal.get("parameterAssignments") or []
        },
        "observation": observation,
    }


def summary_of(doc: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """The list entry of one experiment (shape in docs/server.md)."""
    trials = dict.fromkeys(["total", *_COUNT_KEYS.values()], 0)
    for condition, count in counts.items():
        trials["total"] += count
        key = _COUNT_KEYS.get(condition)
        if key is not None:
            trials[key] += count
    spec = doc.get("spec") or {}
    status = doc.get("status") or {}
    metadata = doc.get("metadata") or {}
    objective = spec.get("objective") or {}
    best = best_of(doc)
    if best is not None:
        best.pop("observation", None)
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace") or "default",
        "algorithm": (spec.get("algorithm") or {}).get("algorithmName"),
        "status": experiment_status(doc),
        "trials": trials,
        "maxTrialCount": spec.get("maxTrialCount"),
        "parallelTrialCount": spec.get("parallelTrialCount"),
        "objectiveMetricName": objective.get("objectiveMetricName"),
        "objectiveType": objective.get("type"),
        "best": best,
        "creationTimestamp": metadata.get("creationTimestamp") or status.get("startTime"),
        "completionTimestamp": status.get("completionTime"),
    }


def _final_counts(doc: dict[str, Any]) -> dict[str, int]:
    status = doc.get("status") or {}
    return {cond: int(status[key]) for key, cond in _STATUS_COUNTS.items() if status.get(key)}


def list_summaries(
    storage: BaseStorage, namespace: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """Summaries of every experiment (of one namespace, with one status), oldest first."""
    docs = storage.list_experiment_documents(namespace)
    counts = storage.count_trials_by_condition(namespace, unfinished_only=True)
    items = []
    for doc in docs:
        if status is not None and experiment_status(doc) != status:
            continue
        metadata = doc.get("metadata") or {}
        key = (metadata.get("namespace") or "default", metadata.get("name") or "")
        # the same test as the storage's unfinished_only: the latest condition's type
        finished = _latest_type(doc) in TERMINAL
        items.append(summary_of(doc, _final_counts(doc) if finished else counts.get(key, {})))
    return items
