"""Katib's Suggestion object, derived from an experiment and its trials.

Katib keeps one Suggestion CR per experiment (same name): the algorithm, how many
assignments were requested, the settings the service returned, and every assignment
handed out. Here the experiment and its trials already hold all of that, so the
Suggestion is computed on read instead of stored: no second copy that could
disagree, and no size limit (Katib's CR hits etcd's object limit on large grids).
Warm-start trials are history, not suggestions, and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from katib.api.models import (
    EXPERIMENT_LABEL,
    Condition,
    Experiment,
    ObjectMeta,
    Suggestion,
    SuggestionSpec,
    SuggestionStatus,
    Trial,
    TrialAssignment,
)
from katib.controller.time_budget import is_warm_start

#: Experiment condition -> the Suggestion condition Katib's controller sets with it.
_CONDITIONS: dict[str, tuple[str, str, str]] = {
    "Created": ("Created", "SuggestionCreated", "Suggestion is created"),
    "Running": ("Running", "SuggestionRunning", "Suggestion is running"),
    "Succeeded": ("Succeeded", "SuggestionSucceeded", "Suggestion is succeeded"),
    "Failed": ("Failed", "SuggestionFailed", "Suggestion has failed"),
}


def suggestion_of(experiment: Experiment, trials: Sequence[Trial]) -> Suggestion:
    """The Suggestion of `experiment`, whose trials (creation order) are `trials`."""
    assignments = [
        TrialAssignment(
            name=t.name,
            parameter_assignments=[a.model_copy() for a in t.spec.parameter_assignments],
            early_stopping_rules=[r.model_copy() for r in t.spec.early_stopping_rules or []]
            or None,
            labels=_own_labels(experiment, t),
        )
        for t in trials
        if not is_warm_start(t)
    ]
    status = experiment.status
    conditions = []
    for c in status.conditions if status else []:
        mapped = _CONDITIONS.get(c.type)
        if mapped is None:
            continue
        conditions.append(
            Condition(
                type=mapped[0],
                status=c.status,
                reason=mapped[1],
                message=mapped[2],
                last_update_time=c.last_update_time,
                last_transition_time=c.last_transition_time,
            )
        )
    return Suggestion(
        metadata=ObjectMeta(
            name=experiment.name,
            namespace=experiment.namespace,
            labels=dict(experiment.metadata.labels or {}) or None,
        ),
        spec=SuggestionSpec(
            algorithm=experiment.spec.algorithm,
            early_stopping=experiment.spec.early_stopping,
            requests=len(assignments),
            resume_policy=experiment.spec.resume_policy,
        ),
        status=SuggestionStatus(
            algorithm_settings=list(status.algorithm_settings or []) or None if status else None,
            suggestion_count=len(assignments),
            suggestions=assignments or None,
            start_time=status.start_time if status else None,
            completion_time=status.completion_time if status else None,
            conditions=conditions,
        ),
    )


def _own_labels(experiment: Experiment, trial: Trial) -> dict[str, str] | None:
    """The labels the algorithm gave the trial (those not copied from the experiment)."""
    inherited = experiment.metadata.labels or {}
    labels = {
        k: v
        for k, v in (trial.metadata.labels or {}).items()
        if k != EXPERIMENT_LABEL and inherited.get(k) != v
    }
    return labels or None
