"""Which parameters mattered: fANOVA importance over the finished trials.

The trials go into an in-memory Optuna study (nothing is stored), with one
distribution per parameter taken from the search space when it is known, else
inferred from the values seen; Optuna's default evaluator (fANOVA on a random
forest) scores them. Used by TuneResult.plot_param_importances and the server's plots.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

from katib.api.models import (
    Distribution,
    ObjectiveSpec,
    ObjectiveType,
    ParameterSpec,
    ParameterType,
    Trial,
)
from katib.errors import InvalidArgumentError
from katib.sdk.trial_rows import TrialRow, completed_rows, rows_from_trials

#: Fewer finished trials than this cannot rank anything.
MIN_TRIALS = 2


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _from_spec(spec: ParameterSpec) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space = spec.feasible_space
    if space is None:
        return None
    low, high = _float(space.min), _float(space.max)
    log = space.distribution in (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL)
    if spec.parameter_type == ParameterType.INT and low is not None and high is not None:
        return IntDistribution(int(low), int(high), log=log and low > 0)
    if spec.parameter_type == ParameterType.DOUBLE and low is not None and high is not None:
        return FloatDistribution(low, high, log=log and low > 0)
    if spec.parameter_type == ParameterType.CATEGORICAL and space.list_:
        return CategoricalDistribution(list(space.list_))
    if spec.parameter_type == ParameterType.DISCRETE and space.list_:
        numbers = [_float(v) for v in space.list_]
        if all(n is not None for n in numbers):
            return CategoricalDistribution(sorted({n for n in numbers if n is not None}))
        return CategoricalDistribution(list(space.list_))
    return None


def _inferred(values: list[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if all(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return CategoricalDistribution(sorted({str(v) for v in values}))
    numbers = [float(v) for v in values]
    low, high = min(numbers), max(numbers)
    if all(isinstance(v, int) for v in values):
        return IntDistribution(int(low), int(high))
    return FloatDistribution(low, high)


def _fits(distribution: Any, value: Any) -> Any:
    """The value as the distribution stores it, or None when it lies outside."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            if choice == value or str(choice) == str(value):
                return choice
        if isinstance(value, str) and _float(value) in distribution.choices:
            return _float(value)
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or not distribution.low <= number <= distribution.high:
        return None
    return int(number) if isinstance(distribution, IntDistribution) else number


def param_importances(
    trials: Sequence[Trial] | Sequence[TrialRow],
    objective_type: str,
    objective_metric_name: str,
    parameters: Sequence[ParameterSpec] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Parameter name -> importance (summing to 1), most important first.

    Only this experiment's succeeded trials with an objective value count. A parameter
    that never varied scores 0. InvalidArgumentError with fewer than MIN_TRIALS of them.
    """
    objective = ObjectiveSpec(type=objective_type, objective_metric_name=objective_metric_name)
    rows = [t for t in trials if isinstance(t, TrialRow)]
    rows += rows_from_trials([t for t in trials if isinstance(t, Trial)], objective, parameters)
    scored = completed_rows(rows)
    if len(scored) < MIN_TRIALS:
        raise InvalidArgumentError(
            f"parameter importance needs at least {MIN_TRIALS} succeeded trials with a value "
            f"of {objective_metric_name!r}; there are {len(scored)}"
        )
    names = sorted({name for row in scored for name in row.params})
    specs = {p.name: p for p in parameters or []}
    distributions: dict[str, Any] = {}
    for name in names:
        known = _from_spec(specs[name]) if name in specs else None
        distributions[name] = known or _inferred(
            [row.params[name] for row in scored if name in row.params]
        )

    import optuna

    direction = (
        optuna.study.StudyDirection.MAXIMIZE
        if objective_type == ObjectiveType.MAXIMIZE
        else optuna.study.StudyDirection.MINIMIZE
    )
    optuna_logger = logging.getLogger("optuna")
    level = optuna_logger.level
    optuna_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(direction=direction)
            for row in scored:
                params = {n: _fits(distributions[n], row.params.get(n)) for n in names}
                if any(v is None for v in params.values()):
                    continue  # outside the space (an edited space, warm-start history)
                study.add_trial(
                    optuna.trial.create_trial(
                        params=params, distributions=distributions, value=row.value
                    )
                )
            varied = [
                n
                for n in names
                if len({str(t.params[n]) for t in study.trials}) > 1
            ]
            if len(study.trials) < MIN_TRIALS:
                raise InvalidArgumentError(
                    f"parameter importance needs at least {MIN_TRIALS} trials inside the "
                    f"search space; there are {len(study.trials)}"
                )
            scores: dict[str, float] = {}
            if varied:
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
                scores = dict(
                    optuna.importance.get_param_importances(
                        study, evaluator=evaluator, params=varied
                    )
                )
    finally:
        optuna_logger.setLevel(level)
    result = {n: float(scores.get(n, 0.0)) for n in names}
    return dict(sorted(result.items(), key=lambda item: (-item[1], item[0])))
