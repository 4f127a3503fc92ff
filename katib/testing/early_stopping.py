"""Contract tests every early-stopping algorithm must pass, in-process or over gRPC.

Use: subclass `EarlyStoppingContract` and provide an `algorithm_name` fixture
(tests/contract parametrises it over suggestion_services.early_stopping.EARLY_STOPPING,
so new algorithms are covered automatically). Override `call_rules` / `call_validate`
to run the same checks through another transport (the integration tests use a real
EarlyStopping server reading a real DBManager), and set `observes_reads = False` there.

The checks hold for any sensible algorithm with its default settings: well-formed
rules, statelessness, tolerance of any history, and rules that, applied the way the
metrics collector applies them, stop a curve worse than every finished trial and let
one better than every finished trial run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from katib.errors import InvalidArgumentError
from metrics_collector.early_stopping import RuleChecker, StopRule
from suggestion_services.base import ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.early_stopping import (
    Comparison,
    EarlyStoppingExperiment,
    EarlyStoppingRule,
    LoggedValue,
    get_early_stopping,
)
from suggestion_services.experiment_cache import clear_all_caches

METRIC = "accuracy"
OTHER_METRIC = "loss"
_EPOCH = datetime(2024, 3, 4, 17, 0, 0, tzinfo=UTC)

#: trial name -> (time_stamp, value) rows of the objective metric, in report order.
Logs = dict[str, list[tuple[str, str]]]


def stamp(seconds: float) -> str:
    """An RFC3339 time `seconds` after a fixed instant."""
    return (_EPOCH + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def curve(level: float, steps: int, maximize: bool = True) -> list[float]:
    """A learning curve that rises (or falls) towards `level` with a little noise."""
    rng = random.Random(f"{level}-{steps}-{maximize}")
    values = []
    for step in range(1, steps + 1):
        progress = level * (1 - 0.6 ** step)
        noise = rng.uniform(-0.005, 0.005)
        values.append(progress + noise if maximize else 1.0 - progress + noise)
    return values


def as_logs(curves: Mapping[str, Sequence[float]], start: float = 0.0) -> Logs:
    """One row per value, a second apart, so the log order is the curve order."""
    return {
        name: [(stamp(start + i), repr(v)) for i, v in enumerate(values)]
        for name, values in curves.items()
    }


def make_experiment(
    algorithm: str,
    settings: Mapping[str, str] | None = None,
    objective: ObjectiveType = ObjectiveType.MAXIMIZE,
    name: str = "es-contract",
) -> EarlyStoppingExperiment:
    return EarlyStoppingExperiment(
        name=name,
        algorithm_name=algorithm,
        objective_type=objective,
        objective_metric_name=METRIC,
        additional_metric_names=(OTHER_METRIC,),
        settings=dict(settings or {}),
    )


def succeeded(curves: Mapping[str, Sequence[float]], maximize: bool = True) -> list[TrialRecord]:
    """SUCCEEDED trials whose objective value is their best point of the curve."""
    pick = max if maximize else min
    return [
        TrialRecord(name, {"lr": str(i)}, TrialCondition.SUCCEEDED, pick(values))
        for i, (name, values) in enumerate(curves.items())
    ]


def stops(rules: Sequence[EarlyStoppingRule], values: Sequence[float], maximize: bool) -> bool:
    """Would the collector stop a trial reporting `values` for the objective?"""
    parsed = [
        StopRule.parse(f"{r.name};{r.value};{r.comparison};{r.start_step}") for r in rules
    ]
    checker = RuleChecker(parsed, METRIC, maximize)
    return any(checker.observe([(METRIC, repr(v))]) for v in values)


class MemorySource:
    """ObservationSource over a dict, recording which trials were read."""

    def __init__(self, logs: Logs, key: str = "memory") -> None:
        self._logs = logs
        self._key = key
        self.reads: list[str] = []

    @property
    def key(self) -> str:
        return self._key

    def observation_log(self, trial_name: str, metric_name: str) -> list[LoggedValue]:
        self.reads.append(trial_name)
        if metric_name != METRIC:
            return []
        return [LoggedValue(ts, v) for ts, v in self._logs.get(trial_name, [])]


class EarlyStoppingContract:
    """The checks; needs an `algorithm_name` fixture from the subclass's module."""

    #: False for transports that cannot see which trials were read.
    observes_reads: ClassVar[bool] = True
    #: Trials whose logs the last in-process call read.
    last_reads: list[str]

    # --- transport (override for gRPC) --------------------------------------------
    def call_validate(self, algorithm_name: str, settings: Mapping[str, str]) -> None:
        get_early_stopping(algorithm_name)().validate_settings(settings)

    def call_rules(
        self,
        experiment: EarlyStoppingExperiment,
        trials: Sequence[TrialRecord],
        logs: Logs,
    ) -> list[EarlyStoppingRule]:
        source = MemorySource(logs)
        algorithm = get_early_stopping(experiment.algorithm_name)()
        rules = algorithm.get_rules(experiment, trials, source)
        self.last_reads = source.reads
        return rules

    # --- helpers ------------------------------------------------------------------
    def history(
        self, algorithm_name: str, maximize: bool = True, count: int = 10, steps: int = 20
    ) -> tuple[EarlyStoppingExperiment, list[TrialRecord], Logs]:
        """`count` succeeded trials with curves levelling off between 0.5 and 0.8."""
        curves = {
            f"done-{i}": curve(0.5 + 0.3 * i / max(count - 1, 1), steps, maximize)
            for i in range(count)
        }
        objective = ObjectiveType.MAXIMIZE if maximize else ObjectiveType.MINIMIZE
        experiment = make_experiment(algorithm_name, objective=objective)
        return experiment, succeeded(curves, maximize), as_logs(curves)

    # --- settings -------------------------------------------------------------------
    def test_default_settings_are_valid(self, algorithm_name: str) -> None:
        self.call_validate(algorithm_name, {})

    def test_unknown_setting_is_rejected_by_name(self, algorithm_name: str) -> None:
        with pytest.raises(InvalidArgumentError) as info:
            self.call_validate(algorithm_name, {"no_such_setting": "1"})
        assert str(info.value).endswith(
            f"unknown setting no_such_setting for algorithm {algorithm_name}"
        )

    def test_unknown_algorithm_is_rejected(self, algorithm_name: str) -> None:
        with pytest.raises(InvalidArgumentError) as info:
            self.call_validate(f"{algorithm_name}-nope", {})
        assert str(info.value).endswith(f"unknown algorithm name {algorithm_name}-nope")

    # --- rules ----------------------------------------------------------------------
    def test_no_trials_gives_well_formed_rules(self, algorithm_name: str) -> None:
        rules = self.call_rules(make_experiment(algorithm_name), [], {})
        self.check_rules(rules)

    @pytest.mark.parametrize("maximize", [True, False], ids=["maximize", "minimize"])
    def test_rules_are_well_formed(self, algorithm_name: str, maximize: bool) -> None:
        experiment, trials, logs = self.history(algorithm_name, maximize)
        rules = self.call_rules(experiment, trials, logs)
        assert rules, "10 succeeded trials with 20 steps each should be enough history"
        self.check_rules(rules)

    @staticmethod
    def check_rules(rules: Sequence[EarlyStoppingRule]) -> None:
        for rule in rules:
            assert rule.name in (METRIC, OTHER_METRIC), rule
            assert rule.comparison in tuple(Comparison), rule
            assert rule.start_step >= 1, rule
            assert math.isfinite(float(rule.value)), rule

    @pytest.mark.parametrize("maximize", [True, False], ids=["maximize", "minimize"])
    def test_rules_stop_a_bad_curve_and_spare_a_good_one(
        self, algorithm_name: str, maximize: bool
    ) -> None:
        experiment, trials, logs = self.history(algorithm_name, maximize)
        rules = self.call_rules(experiment, trials, logs)
        assert stops(rules, curve(0.2, 20, maximize), maximize), rules
        assert not stops(rules, curve(0.95, 20, maximize), maximize), rules

    def test_same_request_same_rules_warm_or_cold(self, algorithm_name: str) -> None:
        experiment, trials, logs = self.history(algorithm_name)
        first = self.call_rules(experiment, trials, logs)
        assert self.call_rules(experiment, trials, logs) == first
        clear_all_caches()  # as a restarted service
        assert self.call_rules(experiment, trials, logs) == first
        shuffled = list(trials)
        random.Random(3).shuffle(shuffled)
        assert self.call_rules(experiment, shuffled, logs) == first

    def test_history_change_is_seen_despite_caches(self, algorithm_name: str) -> None:
        experiment, trials, logs = self.history(algorithm_name)
        before = self.call_rules(experiment, trials, logs)
        # Every trial recreated under its old name with a much worse curve.
        worse = {t.name: curve(0.1, 20) for t in trials}
        after = self.call_rules(experiment, succeeded(worse), as_logs(worse))
        assert after != before
        clear_all_caches()
        assert self.call_rules(experiment, succeeded(worse), as_logs(worse)) == after

    def test_any_history_is_tolerated(self, algorithm_name: str) -> None:
        experiment, trials, logs = self.history(algorithm_name)
        odd = [
            TrialRecord("running", {"lr": "a"}, TrialCondition.RUNNING, None),
            TrialRecord("created", {"lr": "b"}, TrialCondition.CREATED, None),
            TrialRecord("failed", {"lr": "c"}, TrialCondition.FAILED, None),
            TrialRecord("stopped", {"lr": "d"}, TrialCondition.EARLY_STOPPED, 0.3),
            TrialRecord("no-logs", {"lr": "e"}, TrialCondition.SUCCEEDED, 0.7),
            TrialRecord("unavailable", {"lr": "f"}, TrialCondition.SUCCEEDED, None),
        ]
        logs = {
            **logs,
            "running": [(stamp(0), "0.1")],
            "unavailable": [("0001-01-01T00:00:00Z", "unavailable")],
        }
        rules = self.call_rules(experiment, [*odd, *trials], logs)
        self.check_rules(rules)
        assert stops(rules, curve(0.2, 20), True)

    def test_only_requested_trials_are_read(self, algorithm_name: str) -> None:
        if not self.observes_reads:
            pytest.skip("this transport cannot observe reads")
        experiment, trials, logs = self.history(algorithm_name)
        logs["not-in-request"] = [(stamp(0), "0.5")]
        clear_all_caches()
        self.call_rules(experiment, trials, logs)
        assert set(self.last_reads) <= {t.name for t in trials}

    def test_settings_in_the_request_are_checked(self, algorithm_name: str) -> None:
        experiment, trials, logs = self.history(algorithm_name)
        bad = replace(experiment, settings={"no_such_setting": "1"})
        with pytest.raises(InvalidArgumentError):
            self.call_rules(bad, trials, logs)
