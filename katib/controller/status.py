"""Conditions and the experiment's aggregated status, kept as Katib keeps them (ref 2.3-3.4)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from katib.api.models import (
    Condition,
    Experiment,
    ExperimentConditionType,
    ExperimentStatus,
    Trial,
    TrialConditionType,
)

_LAST_SECOND: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """The current UTC second, formatted once per second (a pass asks several times)."""
    global _LAST_SECOND
    second = int(datetime.now(UTC).timestamp())
    cached = _LAST_SECOND
    if cached[0] != second:
        cached = _LAST_SECOND = (
            second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
    return cached[1]


def set_condition(
    conditions: list[Condition], type_: str, status: str, reason: str, message: str
) -> None:
    """Upsert a condition; a changed condition moves to the end (it is the latest transition)."""
    now = now_rfc3339()
    for i, existing in enumerate(conditions):
        if existing.type != type_:
            continue
        if existing.status == status and existing.reason == reason and existing.message == message:
            existing.last_update_time = now
            return
        transition = existing.last_transition_time if existing.status == status else now
        del conditions[i]
        conditions.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_update_time=now,
                last_transition_time=transition,
            )
        )
        return
    conditions.append(
        Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_update_time=now,
            last_transition_time=now,
        )
    )


def has_condition(conditions: Sequence[Condition], type_: str) -> bool:
    return any(c.type == type_ and c.status == "True" for c in conditions)


def is_experiment_completed(experiment: Experiment) -> bool:
    conditions = experiment.status.conditions if experiment.status else []
    return has_condition(conditions, ExperimentConditionType.SUCCEEDED) or has_condition(
        conditions, ExperimentConditionType.FAILED
    )


def _keep_running_reason(conditions: list[Condition]) -> None:
    """Katib re-sets Running to False (keeping its reason) when a terminal condition arrives."""
    for c in conditions:
        if c.type == "Running" and c.status == "True":
            set_condition(conditions, "Running", "False", c.reason or "", c.message or "")
            return


def mark_trial(trial: Trial, type_: TrialConditionType, reason: str, message: str) -> None:
    conditions = trial.status.conditions
    if type_ == TrialConditionType.RUNNING:
        set_condition(conditions, type_, "True", reason, message)
        return
    if type_ != TrialConditionType.CREATED:
        _keep_running_reason(conditions)
        trial.status.completion_time = now_rfc3339()
    set_condition(conditions, type_, "True", reason, message)


def mark_experiment(
    status: ExperimentStatus, type_: ExperimentConditionType, reason: str, message: str
) -> None:
    if type_ in (ExperimentConditionType.SUCCEEDED, ExperimentConditionType.FAILED):
        _keep_running_reason(status.conditions)
        status.completion_time = now_rfc3339()
    set_condition(status.conditions, type_, "True", reason, message)


#: A trial's latest condition -> its count and list in the experiment's status.
BUCKETS = {
    TrialConditionType.KILLED: "killed",
    TrialConditionType.FAILED: "failed",
    TrialConditionType.SUCCEEDED: "succeeded",
    TrialConditionType.EARLY_STOPPED: "early_stopped",
    TrialConditionType.RUNNING: "running",
    TrialConditionType.METRICS_UNAVAILABLE: "metrics_unavailable",
    TrialConditionType.CREATED: "pending",
}


def aggregate(status: ExperimentStatus, trials: Sequence[Trial]) -> dict[str, int]:
    """Fill the trial lists and counts (zero counts are left out, as Katib's omitempty does)."""
    lists: dict[str, list[str]] = {bucket: [] for bucket in BUCKETS.values()}
    for trial in trials:
        lists[BUCKETS[trial.condition]].append(trial.name)
    return fill_lists(status, lists)


def fill_lists(status: ExperimentStatus, lists: dict[str, list[str]]) -> dict[str, int]:
    """Set the status's counts and trial lists from trial names by bucket (see BUCKETS)."""
    counts = {bucket: len(names) for bucket, names in lists.items()}
    status.trials = sum(counts.values()) or None
    status.trials_succeeded = counts["succeeded"] or None
    status.trials_failed = counts["failed"] or None
    status.trials_killed = counts["killed"] or None
    status.trials_pending = counts["pending"] or None
    status.trials_running = counts["running"] or None
    status.trials_early_stopped = counts["early_stopped"] or None
    status.trial_metrics_unavailable = counts["metrics_unavailable"] or None
    status.succeeded_trial_list = lists["succeeded"] or None
    status.failed_trial_list = lists["failed"] or None
    status.killed_trial_list = lists["killed"] or None
    status.pending_trial_list = lists["pending"] or None
    status.running_trial_list = lists["running"] or None
    status.early_stopped_trial_list = lists["early_stopped"] or None
    status.metrics_unavailable_trial_list = lists["metrics_unavailable"] or None
    return counts
