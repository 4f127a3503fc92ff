"""Median stopping: stop a trial whose objective lags behind the median of finished trials.

Katib's medianstop service (reference 4.3), made stateless: every call looks at the
SUCCEEDED trials of the request, averages each one's first `start_step` objective
values (observation log ordered by time, ties in the store's insertion order), and
once `min_trials_required` trials have such an average, returns one rule

    {name: objective, value: str(median of the averages), comparison, start_step}

with comparison LESS for maximize (stop when the best value so far is below the
median) and GREATER for minimize.

Deliberate difference from Katib: Katib returns the arithmetic MEAN of the
per-trial averages under the name "median" (quirk 12). We return the median, as
the name and the literature (Golovin et al., Google Vizier, 2017) say: one
diverged trial cannot drag the threshold far, so the rule stops trials worse than
half of the finished ones, not worse than an outlier-skewed mean.

Other choices: values that are not finite numbers ("unavailable", "nan") are
skipped before taking the first `start_step`, and a succeeded trial without any
numeric objective value does not count (Katib divides by zero there). Katib
remembers averages forever in one process; here a bounded per-experiment cache
only saves DBManager reads and is rebuilt from the request's trials on every call.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from datetime import UTC, datetime
from typing import ClassVar

from .base import ObjectiveType, SettingParser, TrialCondition, TrialRecord
from .early_stopping import (
    BaseEarlyStopping,
    Comparison,
    EarlyStoppingExperiment,
    EarlyStoppingRule,
    LoggedValue,
    ObservationSource,
    int_setting,
)
from .experiment_cache import ExperimentCache

DEFAULT_MIN_TRIALS_REQUIRED = 3
DEFAULT_START_STEP = 4
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)

#: A succeeded trial, identified so that a trial recreated under the same name misses.
_TrialKey = tuple[str, tuple[tuple[str, str], ...], float | None]


def _time_key(entry: LoggedValue) -> datetime:
    """Sort key: the row's time; an unparseable one counts as Katib's zero time."""
    try:
        parsed = datetime.fromisoformat(entry.time_stamp)
    except ValueError:
        return _ZERO_TIME
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _finite(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def first_steps_average(log: Sequence[LoggedValue], start_step: int) -> float | None:
    """Mean of the first `start_step` numeric values by time (stable: ties keep log order)."""
    values: list[float] = []
    for entry in sorted(log, key=_time_key):
        number = _finite(entry.value)
        if number is None:
            continue
        values.append(number)
        if len(values) == start_step:
            break
    return sum(values) / len(values) if values else None


class MedianStop(BaseEarlyStopping):
    """Katib's `medianstop`, with a true median (see the module docstring)."""

    name = "medianstop"
    settings_schema: ClassVar[Mapping[str, SettingParser]] = {
        "min_trials_required": int_setting(
            "min_trials_required", 1, "min_trials_required must be greater than zero (>0)"
        ),
        "start_step": int_setting(
            "start_step", 1, "start_step must be greater or equal than one (>=1)"
        ),
    }

    #: Per experiment: trial key -> its average (None: no numeric value). Only a speed-up.
    _averages: ClassVar[ExperimentCache[dict[_TrialKey, float | None]]] = ExperimentCache(64)

    def settings(self, settings: Mapping[str, str]) -> tuple[int, int]:
        """(min_trials_required, start_step) with Katib's defaults."""
        parsed = self.parse_settings(settings)
        min_trials = parsed.get("min_trials_required", DEFAULT_MIN_TRIALS_REQUIRED)
        start_step = parsed.get("start_step", DEFAULT_START_STEP)
        assert isinstance(min_trials, int) and isinstance(start_step, int)
        return min_trials, start_step

    def get_rules(
        self,
        experiment: EarlyStoppingExperiment,
        trials: Sequence[TrialRecord],
        source: ObservationSource,
    ) -> list[EarlyStoppingRule]:
        min_trials, start_step = self.settings(experiment.settings)
        metric = experiment.objective_metric_name
        averages = self.trial_averages(experiment, trials, source, start_step)
        if not metric or len(averages) < min_trials:
            return []
        comparison = (
            Comparison.LESS
            if experiment.objective_type == ObjectiveType.MAXIMIZE
            else Comparison.GREATER
        )
        median = statistics.median(averages)
        return [EarlyStoppingRule(metric, str(median), comparison, start_step)]

    def trial_averages(
        self,
        experiment: EarlyStoppingExperiment,
        trials: Sequence[TrialRecord],
        source: ObservationSource,
        start_step: int,
    ) -> list[float]:
        """The first-steps average of every SUCCEEDED trial that has one, in request order."""
        metric = experiment.objective_metric_name
        if not metric:
            return []
        cache_key: Hashable = (source.key, experiment.name, metric, start_step)
        cached = self._averages.get(cache_key) or {}
        current: dict[_TrialKey, float | None] = {}
        for trial in trials:
            if trial.condition != TrialCondition.SUCCEEDED:
                continue
            key: _TrialKey = (
                trial.name,
                tuple(sorted(trial.assignments.items())),
                trial.objective_value,
            )
            if key in cached:
                current[key] = cached[key]
            elif key not in current:
                log = source.observation_log(trial.name, metric)
                current[key] = first_steps_average(log, start_step)
        self._averages.put(cache_key, current)
        return [value for value in current.values() if value is not None]
