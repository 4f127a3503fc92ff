"""medianstop: settings and messages, the median rule, message conversion (no network)."""

from __future__ import annotations

import statistics
from typing import Any, cast

import pytest

from katib.apis.v1beta1 import api_pb2
from katib.controller.conversion import rule_from_pb
from katib.errors import InvalidArgumentError
from katib.testing.early_stopping import MemorySource, as_logs, make_experiment, stamp
from suggestion_services.base import ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.early_stopping import (
    Comparison,
    EarlyStoppingRule,
    LoggedValue,
    get_early_stopping,
)
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.medianstop import MedianStop, first_steps_average
from suggestion_services.server import early_stopping_experiment_from_proto, rule_to_proto


@pytest.fixture(autouse=True)
def _cold_cache() -> None:
    clear_all_caches()


def done(name: str, value: float = 0.5) -> TrialRecord:
    return TrialRecord(name, {"x": name}, TrialCondition.SUCCEEDED, value)


# --- settings -----------------------------------------------------------------------


def test_defaults_are_katibs() -> None:
    assert MedianStop().settings({}) == (3, 4)
    assert MedianStop().settings({"min_trials_required": "1", "start_step": "9"}) == (1, 9)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_trials_required": "0"}, "min_trials_required must be greater than zero (>0)"),
        ({"min_trials_required": "-2"}, "min_trials_required must be greater than zero (>0)"),
        ({"start_step": "0"}, "start_step must be greater or equal than one (>=1)"),
        ({"burn_in": "3"}, "unknown setting burn_in for algorithm medianstop"),
        (
            {"start_step": "two"},
            "failed to validate start_step(two): invalid literal for int() with base 10: 'two'",
        ),
    ],
)
def test_bad_settings_get_katibs_message(settings: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        MedianStop().validate_settings(settings)
    assert str(info.value) == message


def test_unknown_algorithm_name() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        get_early_stopping("meanstop")
    assert str(info.value) == "unknown algorithm name meanstop"
    assert get_early_stopping("medianstop") is MedianStop


# --- the average of the first steps ---------------------------------------------------


def test_first_steps_are_taken_by_time_with_ties_in_log_order() -> None:
    log = [
        LoggedValue(stamp(5), "100"),  # late: not among the first three
        LoggedValue(stamp(1), "1"),
        LoggedValue(stamp(2), "2"),
        LoggedValue(stamp(2), "4"),  # same time as "2": keeps its place after it
        LoggedValue(stamp(2), "8"),
    ]
    assert first_steps_average(log, 3) == (1 + 2 + 4) / 3
    assert first_steps_average(log, 1) == 1


def test_non_numbers_are_skipped_and_short_logs_averaged_whole() -> None:
    log = [
        LoggedValue("0001-01-01T00:00:00Z", "unavailable"),
        LoggedValue(stamp(1), "nan"),
        LoggedValue(stamp(2), "0.5"),
        LoggedValue("not a time", "0.25"),  # unparseable time sorts first, like zero time
    ]
    assert first_steps_average(log, 4) == (0.25 + 0.5) / 2
    assert first_steps_average([LoggedValue(stamp(1), "unavailable")], 4) is None


# --- the rule -------------------------------------------------------------------------


def rules_for(
    curves: dict[str, list[float]],
    objective: ObjectiveType = ObjectiveType.MAXIMIZE,
    settings: dict[str, str] | None = None,
    extra: list[TrialRecord] | None = None,
) -> tuple[list[EarlyStoppingRule], MemorySource]:
    source = MemorySource(as_logs(curves))
    trials = [done(name) for name in curves] + (extra or [])
    experiment = make_experiment("medianstop", settings, objective)
    return MedianStop().get_rules(experiment, trials, source), source


def test_median_not_mean_on_a_skewed_set() -> None:
    # First-two-step averages 0.5, 0.6, 0.7 and one diverged trial at -9.
    curves = {"a": [0.4, 0.6], "b": [0.5, 0.7], "c": [0.6, 0.8], "d": [-9.0, -9.0]}
    rules, _ = rules_for(curves, settings={"start_step": "2"})
    averages = [0.5, 0.6, 0.7, -9.0]
    assert statistics.median(averages) != statistics.mean(averages)
    assert rules == [
        EarlyStoppingRule("accuracy", str(statistics.median(averages)), Comparison.LESS, 2)
    ]
    assert float(rules[0].value) == pytest.approx(0.55)


def test_no_rule_until_min_trials_required() -> None:
    curves = {"a": [0.1] * 4, "b": [0.2] * 4}
    assert rules_for(curves)[0] == []
    curves["c"] = [0.3] * 4
    assert rules_for(curves)[0] == [EarlyStoppingRule("accuracy", "0.2", Comparison.LESS, 4)]
    assert rules_for(curves, settings={"min_trials_required": "4"})[0] == []


def test_minimize_compares_greater() -> None:
    rules, _ = rules_for({"a": [3.0], "b": [1.0], "c": [2.0]}, ObjectiveType.MINIMIZE)
    assert rules == [EarlyStoppingRule("accuracy", "2.0", Comparison.GREATER, 4)]


def test_only_succeeded_trials_count_and_are_read() -> None:
    others = [
        TrialRecord("running", {"x": "r"}, TrialCondition.RUNNING, None),
        TrialRecord("stopped", {"x": "s"}, TrialCondition.EARLY_STOPPED, 0.0),
        TrialRecord("failed", {"x": "f"}, TrialCondition.FAILED, None),
    ]
    rules, source = rules_for({"a": [1.0], "b": [2.0], "c": [3.0]}, extra=others)
    assert rules[0].value == "2.0"
    assert sorted(source.reads) == ["a", "b", "c"]


def test_cache_saves_reads_but_not_correctness() -> None:
    curves = {"a": [1.0], "b": [2.0], "c": [3.0]}
    algorithm = MedianStop()
    experiment = make_experiment("medianstop")
    trials = [done(n) for n in curves]
    first = MemorySource(as_logs(curves))
    assert algorithm.get_rules(experiment, trials, first)[0].value == "2.0"
    second = MemorySource(as_logs(curves))
    assert algorithm.get_rules(experiment, trials, second)[0].value == "2.0"
    assert second.reads == []  # every average came from the cache
    # "c" recreated under the same name (new objective value): read again.
    curves["c"] = [9.0]
    third = MemorySource(as_logs(curves))
    rules = algorithm.get_rules(experiment, [*trials[:2], done("c", 0.9)], third)
    assert third.reads == ["c"] and rules[0].value == "2.0"
    curves["d"] = [10.0]
    fourth = MemorySource(as_logs(curves))
    rules = algorithm.get_rules(experiment, [*trials[:2], done("c", 0.9), done("d")], fourth)
    assert fourth.reads == ["d"] and rules[0].value == "5.5"
    # Another store (another DBManager address) never reuses these averages.
    other = MemorySource(as_logs({"a": [5.0], "b": [5.0], "c": [5.0]}), key="elsewhere")
    assert algorithm.get_rules(experiment, trials, other)[0].value == "5.0"


def test_without_an_objective_name_there_is_no_rule() -> None:
    experiment = make_experiment("medianstop")
    experiment = type(experiment)(
        name=experiment.name, algorithm_name="medianstop", objective_metric_name=""
    )
    assert MedianStop().get_rules(experiment, [done("a")], MemorySource({})) == []


# --- message conversion ---------------------------------------------------------------


def test_experiment_message_to_plain_data() -> None:
    message = api_pb2.Experiment(name="exp")
    message.spec.objective.type = api_pb2.MINIMIZE
    message.spec.objective.objective_metric_name = "loss"
    message.spec.objective.additional_metric_names.append("acc")
    message.spec.algorithm.algorithm_name = "random"
    message.spec.algorithm.algorithm_settings.add(name="random_state", value="1")
    message.spec.early_stopping.algorithm_name = "medianstop"
    message.spec.early_stopping.algorithm_settings.add(name="start_step", value="2")
    info = early_stopping_experiment_from_proto(message)
    assert info.name == "exp"
    assert info.algorithm_name == "medianstop"
    assert info.objective_type == ObjectiveType.MINIMIZE
    assert info.objective_metric_name == "loss"
    assert info.additional_metric_names == ("acc",)
    assert info.settings == {"start_step": "2"}  # not the suggestion algorithm's settings


@pytest.mark.parametrize(
    ("comparison", "wire", "crd"),
    [
        (Comparison.EQUAL, api_pb2.EQUAL, "equal"),
        (Comparison.LESS, api_pb2.LESS, "less"),
        (Comparison.GREATER, api_pb2.GREATER, "greater"),
    ],
)
def test_rule_round_trip(comparison: Comparison, wire: int, crd: str) -> None:
    message = rule_to_proto(EarlyStoppingRule("acc", "0.5", comparison, 3))
    assert (message.name, message.value, message.comparison, message.start_step) == (
        "acc",
        "0.5",
        wire,
        3,
    )
    rule = rule_from_pb(message)
    assert rule.to_dict() == {"name": "acc", "value": "0.5", "comparison": crd, "startStep": 3}


def test_unknown_comparison_from_the_wire_is_equal() -> None:
    # Katib's controller maps a comparison outside 1-3 to equal.
    for wire in (int(api_pb2.UNKNOWN_COMPARISON), 7):
        message = api_pb2.EarlyStoppingRule(
            name="acc", value="1", comparison=cast(Any, wire), start_step=1
        )
        assert rule_from_pb(message).comparison == "equal"
