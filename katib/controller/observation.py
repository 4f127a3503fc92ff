"""From observation logs to a trial's observation, and from observations to the optimum.

Katib's semantics (reference 2.3, 5.6), with one deliberate change: min and max
ignore values that are not finite numbers (NaN, inf), so a diverged trial can
never become the optimal one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from katib.api.models import (
    UNAVAILABLE,
    Experiment,
    Metric,
    MetricStrategyType,
    ObjectiveType,
    Observation,
    OptimalTrial,
    Trial,
    TrialConditionType,
)
from katib.storage.base import MetricLogEntry


def finite(value: str) -> float | None:
    """The value as a finite float, or None (NaN, inf, not a number)."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def strategies_of(experiment: Experiment) -> dict[str, str]:
    """Metric name -> strategy, for the objective and every additional metric."""
    objective = experiment.spec.objective
    if objective is None:
        return {}
    default = {
        ObjectiveType.MINIMIZE: MetricStrategyType.MIN,
        ObjectiveType.MAXIMIZE: MetricStrategyType.MAX,
    }.get(ObjectiveType(objective.type or ""), MetricStrategyType.LATEST)
    result: dict[str, str] = {}
    names = [objective.objective_metric_name or "", *list(objective.additional_metric_names or [])]
    explicit = {s.name: str(s.value) for s in objective.metric_strategies or []}
    for name in names:
        if name:
            result[name] = explicit.get(name, str(default))
    return result


def build_observation(
    entries: Iterable[MetricLogEntry], metric_names: Sequence[str]
) -> Observation:
    """min/max/latest per metric; entries must come ordered by (time, insertion)."""
    metrics = {name: Metric(name=name) for name in metric_names}
    best_min: dict[str, float] = {}
    best_max: dict[str, float] = {}
    for entry in entries:
        metric = metrics.get(entry.metric_name)
        if metric is None:
            continue
        metric.latest = entry.value
        number = finite(entry.value)
        if number is None:
            continue
        if entry.metric_name not in best_min or number < best_min[entry.metric_name]:
            best_min[entry.metric_name] = number
            metric.min = entry.value
        if entry.metric_name not in best_max or number > best_max[entry.metric_name]:
            best_max[entry.metric_name] = number
            metric.max = entry.value
    return Observation(metrics=list(metrics.values()))


def metric_value(observation: Observation | None, name: str, strategy: str) -> str | None:
    """The metric's value under its strategy, falling back to latest (Katib); None if absent."""
    if observation is None:
        return None
    for metric in observation.metrics:
        if metric.name != name:
            continue
        chosen = {"min": metric.min, "max": metric.max}.get(strategy, metric.latest)
        if chosen == UNAVAILABLE:
            chosen = metric.latest
        return None if chosen == UNAVAILABLE else chosen
    return None


def objective_value(experiment: Experiment, trial: Trial) -> float | None:
    """The trial's objective as a finite number, or None if it has none."""
    objective = experiment.spec.objective
    if objective is None or not objective.objective_metric_name:
        return None
    name = objective.objective_metric_name
    strategy = strategies_of(experiment).get(name, "latest")
    raw = metric_value(trial.status.observation, name, strategy)
    return None if raw is None else finite(raw)


_CANDIDATES = {TrialConditionType.SUCCEEDED, TrialConditionType.EARLY_STOPPED}


def optimal_trial(experiment: Experiment, trials: Sequence[Trial]) -> OptimalTrial | None:
    """The best trial so far among succeeded and early-stopped ones with a finite objective."""
    objective = experiment.spec.objective
    if objective is None:
        return None
    maximize = ObjectiveType(objective.type or "") == ObjectiveType.MAXIMIZE
    name = objective.objective_metric_name
    if not name:
        return None
    strategy = strategies_of(experiment).get(name, "latest")  # once, not per trial
    best: tuple[float, Trial] | None = None
    for trial in trials:
        if trial.condition not in _CANDIDATES:
            continue
        raw = metric_value(trial.status.observation, name, strategy)
        value = None if raw is None else finite(raw)
        if value is None:
            continue
        if best is None or (value > best[0] if maximize else value < best[0]):
            best = (value, trial)
    if best is None:
        return None
    trial = best[1]
    return OptimalTrial(
        best_trial_name=trial.name,
        parameter_assignments=[a.model_copy() for a in trial.spec.parameter_assignments],
        observation=trial.status.observation.model_copy(deep=True)
        if trial.status.observation
        else None,
    )


def goal_reached(experiment: Experiment, best: OptimalTrial | None) -> bool:
    objective = experiment.spec.objective
    if objective is None or objective.goal is None or best is None or best.observation is None:
        return False
    name = objective.objective_metric_name or ""
    raw = metric_value(best.observation, name, strategies_of(experiment).get(name, "latest"))
    value = None if raw is None else finite(raw)
    if value is None:
        return False
    if ObjectiveType(objective.type or "") == ObjectiveType.MAXIMIZE:
        return value >= objective.goal
    return value <= objective.goal
