"""Two experiment-level additions the reconcile loop honours: a time budget and warm start.

Both live in metadata (annotations and labels), so an Experiment stays a valid Katib
Experiment and a restarted controller reads them back from storage.

- Time budget (a Katib feature request): ``katib-local/timeout-seconds`` counts from
  the experiment's status.startTime. Once spent, no trial is created or launched; with
  ``katib-local/on-timeout: kill`` running trials are stopped (Killed) and the experiment
  ends at once, with ``wait`` (the default) it ends when they have finished. The reason
  is ExperimentTimeoutReached; the experiment Succeeded if any trial did, else Failed.
- Warm start: trials labelled ``katib-local/warm-start: "true"`` are earlier results
  stored as completed trials. The algorithm sees them in GetSuggestions' history; they
  are never polled, do not count toward any budget and cannot be the optimal trial.
"""

from __future__ import annotations

from datetime import UTC, datetime

from katib.api.models import Experiment, ExperimentStatus, Trial

TIMEOUT_ANNOTATION = "katib-local/timeout-seconds"
ON_TIMEOUT_ANNOTATION = "katib-local/on-timeout"
ON_TIMEOUT_POLICIES = ("wait", "kill")
WARM_START_LABEL = "katib-local/warm-start"
TIMEOUT_REASON = "ExperimentTimeoutReached"


def is_warm_start(trial: Trial) -> bool:
    return (trial.metadata.labels or {}).get(WARM_START_LABEL) == "true"


def time_budget(experiment: Experiment) -> tuple[float, str] | None:
    """(seconds, "wait"|"kill") from the annotations, or None without a valid budget."""
    annotations = experiment.metadata.annotations or {}
    raw = annotations.get(TIMEOUT_ANNOTATION)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    policy = annotations.get(ON_TIMEOUT_ANNOTATION, "wait")
    return seconds, policy if policy in ON_TIMEOUT_POLICIES else "wait"


def out_of_time(experiment: Experiment, exp_status: ExperimentStatus) -> bool:
    budget = time_budget(experiment)
    if budget is None or not exp_status.start_time:
        return False
    try:
        start = datetime.fromisoformat(exp_status.start_time.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (datetime.now(UTC) - start).total_seconds() >= budget[0]


def timeout_message(experiment: Experiment, succeeded: bool) -> str:
    budget = time_budget(experiment)
    seconds, policy = budget if budget else (0.0, "wait")
    how = "running trials were stopped" if policy == "kill" else "running trials finished"
    verdict = "succeeded" if succeeded else "failed (no trial succeeded)"
    return (
        f"Experiment has {verdict} because its time budget of {seconds:g} s ran out; "
        f"no new trials were started and {how}"
    )
