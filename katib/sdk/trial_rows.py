"""Stored trials as plain rows (typed parameters, objective value): what tables and plots read.

Katib keeps parameter values and metrics as text; plots, importance and data frames
want numbers where the search space says numbers. One conversion, shared by the SDK's
result object, its plots and the server's plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from katib.api.models import (
    UNAVAILABLE,
    MetricStrategyType,
    ObjectiveSpec,
    ObjectiveType,
    ParameterSpec,
    ParameterType,
    Trial,
)
from katib.controller.time_budget import is_warm_start


@dataclass
class TrialRow:
    """One trial, ready to tabulate or plot."""

    name: str
    condition: str
    params: dict[str, Any]
    value: float | None  # the objective under its metric strategy, if finite
    metrics: dict[str, float] = field(default_factory=dict)
    start_time: str | None = None
    completion_time: str | None = None
    message: str = ""
    warm_start: bool = False


def _number(text: str | None) -> float | None:
    if text is None or text == UNAVAILABLE:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def objective_strategy(objective: ObjectiveSpec) -> str:
    """min/max/latest for the objective metric (explicit strategy, else by objective type)."""
    name = objective.objective_metric_name or ""
    for strategy in objective.metric_strategies or []:
        if strategy.name == name:
            return str(strategy.value)
    if objective.type == ObjectiveType.MINIMIZE:
        return str(MetricStrategyType.MIN)
    if objective.type == ObjectiveType.MAXIMIZE:
        return str(MetricStrategyType.MAX)
    return str(MetricStrategyType.LATEST)


def typed_value(text: str, spec: ParameterSpec | None) -> Any:
    """A parameter value as its search space types it (int, float, or the categorical text)."""
    kind = spec.parameter_type if spec is not None else None
    if kind == ParameterType.CATEGORICAL:
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    integral = number.is_integer() and not any(c in text for c in ".eE")
    if kind == ParameterType.INT or (kind in (None, ParameterType.DISCRETE) and integral):
        return int(number)
    return number


def rows_from_trials(
    trials: Sequence[Trial],
    objective: ObjectiveSpec,
    parameters: Sequence[ParameterSpec] | None = None,
) -> list[TrialRow]:
    """Rows in the given (creation) order; metrics use each metric's strategy value."""
    specs: Mapping[str, ParameterSpec] = {p.name or "": p for p in parameters or []}
    objective_name = objective.objective_metric_name or ""
    objective_by = objective_strategy(objective)
    rows: list[TrialRow] = []
    for trial in trials:
        metrics: dict[str, float] = {}
        value: float | None = None
        observation = trial.status.observation
        for metric in observation.metrics if observation else []:
            chosen = {"min": metric.min, "max": metric.max}.get(
                objective_by if metric.name == objective_name else "latest", metric.latest
            )
            number = _number(chosen) if chosen != UNAVAILABLE else _number(metric.latest)
            if number is None:
                continue
            metrics[metric.name] = number
            if metric.name == objective_name:
                value = number
        conditions = trial.status.conditions
        rows.append(
            TrialRow(
                name=trial.name,
                condition=str(trial.condition),
                params={
                    a.name: typed_value(a.value, specs.get(a.name))
                    for a in trial.spec.parameter_assignments
                },
                value=value,
                metrics=metrics,
                start_time=trial.status.start_time,
                completion_time=trial.status.completion_time,
                message=(conditions[-1].message or "") if conditions else "",
                warm_start=is_warm_start(trial),
            )
        )
    return rows


#: Conditions whose objective value counts (Katib's candidates for the optimal trial).
SCORED_CONDITIONS = frozenset({"Succeeded", "EarlyStopped"})


def completed_rows(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """This experiment's own succeeded (or early-stopped) trials that have an objective value."""
    return [
        r
        for r in rows
        if r.value is not None and not r.warm_start and r.condition in SCORED_CONDITIONS
    ]
