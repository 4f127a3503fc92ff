"""Random search: settings, determinism, seeding from history, dedup, exhaustion."""

from __future__ import annotations

import time

import pytest

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError
from katib.testing.algorithms import as_history, make_experiment, realistic_specs
from suggestion_services.base import TrialCondition, TrialRecord
from suggestion_services.random_search import RandomSearch
from suggestion_services.search_space import ParameterSpec

SPECS = realistic_specs(finite=False)


def run(settings: dict[str, str], history: list[TrialRecord], n: int, name: str = "exp"
        ) -> list[dict[str, str]]:
    exp = make_experiment("random", SPECS, settings, name=name)
    return [s.assignments for s in RandomSearch().suggest(exp, history, n)]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seed": "1"}, "unknown setting seed for algorithm random"),
        ({"random_state": "-1"}, "random_state should be great or equal than zero"),
        ({"random_state": "x"}, "failed to validate random_state(x)"),
    ],
)
def test_settings_messages(settings: dict[str, str], message: str) -> None:
    exp = make_experiment("random", SPECS, settings)
    with pytest.raises(InvalidArgumentError) as info:
        RandomSearch().validate_settings(exp)
    assert message in str(info.value)


def test_same_seed_same_history_same_answer() -> None:
    assert run({"random_state": "1"}, [], 3) == run({"random_state": "1"}, [], 3)
    assert run({"random_state": "1"}, [], 3) != run({"random_state": "2"}, [], 3)


def test_history_length_moves_the_stream() -> None:
    first = run({"random_state": "1"}, [], 3)
    history = as_history(first)
    second = run({"random_state": "1"}, history, 3)
    assert not set(map(str, first)) & set(map(str, second))


def test_without_seed_deterministic_per_experiment() -> None:
    assert run({}, [], 2, name="a") == run({}, [], 2, name="a")
    assert run({}, [], 2, name="a") != run({}, [], 2, name="b")


def test_discrete_space_avoids_history_and_exhausts() -> None:
    specs = [ParameterSpec("n", "int", "1", "10"), ParameterSpec("c", "discrete", list=("1", "2"))]
    exp = make_experiment("random", specs, {"random_state": "0"})
    history: list[TrialRecord] = []
    while len(history) < 20:
        batch = [s.assignments for s in RandomSearch().suggest(exp, history, 3)]
        assert len(batch) == min(3, 20 - len(history))
        history += as_history(batch, TrialCondition.FAILED, start=len(history))
    assert len({tuple(t.assignments.values()) for t in history}) == 20
    with pytest.raises(SearchSpaceExhaustedError, match="all 20 points have been suggested"):
        RandomSearch().suggest(exp, history, 1)


def test_within_batch_no_duplicates_when_n_equals_size() -> None:
    specs = [ParameterSpec("n", "int", "1", "50")]
    exp = make_experiment("random", specs, {"random_state": "4"})
    batch = [s.assignments["n"] for s in RandomSearch().suggest(exp, [], 50)]
    assert sorted(batch, key=int) == [str(i) for i in range(1, 51)]


def test_fast_with_long_history() -> None:
    exp = make_experiment("random", SPECS, {"random_state": "1"})
    history = as_history(run({"random_state": "9"}, [], 200) * 50)  # 10,000 trials
    RandomSearch().suggest(exp, history, 3)
    start = time.perf_counter()
    for _ in range(20):
        RandomSearch().suggest(exp, history, 3)
    assert (time.perf_counter() - start) / 20 < 0.01  # continuous: history is not read
