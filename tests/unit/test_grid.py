"""Grid search: order, skipping used points, validation messages, exhaustion, laziness."""

from __future__ import annotations

import time

import pytest

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError
from katib.testing.algorithms import as_history, make_experiment
from suggestion_services.base import TrialCondition, TrialRecord
from suggestion_services.grid import GridSearch
from suggestion_services.search_space import ParameterSpec

SPECS = [
    ParameterSpec("x", "double", "0.1", "0.3", "0.1"),
    ParameterSpec("n", "int", "1", "2"),
]


def points(result: list) -> list[tuple[str, str]]:
    return [(s.assignments["x"], s.assignments["n"]) for s in result]


def test_cartesian_order_in_parameter_order() -> None:
    exp = make_experiment("grid", SPECS)
    assert points(GridSearch().suggest(exp, [], 6)) == [
        ("0.1", "1"), ("0.1", "2"), ("0.2", "1"), ("0.2", "2"), ("0.3", "1"), ("0.3", "2"),
    ]


def test_skips_used_points_compared_by_value() -> None:
    exp = make_experiment("grid", SPECS)
    history = [
        TrialRecord("a", {"x": "0.10", "n": "1"}, TrialCondition.FAILED),
        TrialRecord("b", {"x": "0.2", "n": "1.0"}, TrialCondition.RUNNING),
        TrialRecord("c", {"x": "0.15", "n": "1"}, TrialCondition.SUCCEEDED, 1.0),  # off grid
    ]
    assert points(GridSearch().suggest(exp, history, 3)) == [
        ("0.1", "2"), ("0.2", "2"), ("0.3", "1"),
    ]


def test_short_reply_then_exhausted() -> None:
    exp = make_experiment("grid", SPECS)
    first = GridSearch().suggest(exp, [], 4)
    history = as_history([s.assignments for s in first])
    rest = GridSearch().suggest(exp, history, 4)
    assert len(rest) == 2  # only two points remain
    history += as_history([s.assignments for s in rest], start=4)
    with pytest.raises(SearchSpaceExhaustedError) as info:
        GridSearch().suggest(exp, history, 1)
    assert str(info.value) == "grid search space exhausted: all 6 points have been suggested"


def test_double_without_step_is_rejected() -> None:
    exp = make_experiment("grid", [ParameterSpec("lr", "double", "0.1", "0.3")])
    message = "Param lr step is nil; For discrete search space, all parameters must include step"
    with pytest.raises(InvalidArgumentError, match=message):
        GridSearch().validate_settings(exp)
    with pytest.raises(InvalidArgumentError, match="step is nil"):
        GridSearch().suggest(exp, [], 1)


def test_settings_validation() -> None:
    GridSearch().validate_settings(make_experiment("grid", SPECS, {"random_state": "5"}))
    with pytest.raises(InvalidArgumentError, match="unknown setting foo for algorithm grid"):
        GridSearch().validate_settings(make_experiment("grid", SPECS, {"foo": "1"}))
    with pytest.raises(InvalidArgumentError, match="random_state should be great or equal"):
        GridSearch().validate_settings(make_experiment("grid", SPECS, {"random_state": "-2"}))


def test_max_trial_count_beyond_grid_is_accepted() -> None:
    """Katib rejects this; here the grid simply runs out and the experiment ends."""
    GridSearch().validate_settings(make_experiment("grid", SPECS, max_trial_count=7))
    exp = make_experiment("grid", SPECS, max_trial_count=7)
    points = GridSearch().suggest(exp, [], 7)
    assert len(points) == 6


def test_random_state_does_not_change_order() -> None:
    a = GridSearch().suggest(make_experiment("grid", SPECS, {"random_state": "1"}), [], 3)
    b = GridSearch().suggest(make_experiment("grid", SPECS, {"random_state": "2"}), [], 3)
    assert a == b


def test_huge_grid_is_not_materialised() -> None:
    specs = [
        ParameterSpec("x", "double", "0", "1", "1e-6"),
        ParameterSpec("n", "int", "1", "100000"),
        ParameterSpec("c", "categorical", list=("a", "b", "c")),
    ]
    exp = make_experiment("grid", specs)
    assert exp.search_space.size is not None and exp.search_space.size > 1e11
    start = time.perf_counter()
    first = GridSearch().suggest(exp, [], 3)
    history = as_history([s.assignments for s in first])
    nxt = GridSearch().suggest(exp, history, 2)
    assert time.perf_counter() - start < 1.0
    assert [s.assignments for s in nxt] == [
        {"x": "0.0", "n": "2", "c": "a"}, {"x": "0.0", "n": "2", "c": "b"},
    ]


def test_history_of_a_thousand_is_fast() -> None:
    specs = [ParameterSpec("x", "double", "0", "1", "0.01"),
             ParameterSpec("n", "int", "1", "50")]
    exp = make_experiment("grid", specs)
    history = as_history([s.assignments for s in GridSearch().suggest(exp, [], 1000)])
    GridSearch().suggest(exp, history, 3)  # warm up
    start = time.perf_counter()
    for _ in range(20):
        out = GridSearch().suggest(exp, history, 3)
    per_call = (time.perf_counter() - start) / 20
    assert out[0].assignments == {"x": "0.2", "n": "1"}
    assert per_call < 0.02  # generous for CI; ~1-2 ms on a laptop
