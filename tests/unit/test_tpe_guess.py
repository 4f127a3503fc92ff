"""TPE's guessed answers (tpe_model._start_guess) equal the answers computed afresh.

A sequential experiment's next request is guessed while the service is idle. Every
request here is answered twice: by the TPE that may use its guess, then again with
the same history by a call that cannot (a guess is only ever made for a history one
trial longer than the one it was made on). The two must agree in every case: the
expected history, a new trial that joins the good ones, and histories that differ
from the guess in each input it rests on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from katib.testing.algorithms import make_experiment
from suggestion_services import after_reply, tpe_model
from suggestion_services.base import ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.search_space import ParameterSpec
from suggestion_services.tpe import TPE, MultivariateTPE

SPECS = [
    ParameterSpec("x", "double", "0", "1"),
    ParameterSpec("y", "double", "0", "1"),
    ParameterSpec("k", "int", "1", "9"),
]
Points = list[dict[str, str]]


def loss(point: dict[str, str]) -> float:
    return (float(point["x"]) - 0.7) ** 2 + (float(point["y"]) - 0.2) ** 2 + int(point["k"]) / 50


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    clear_all_caches()
    yield
    clear_all_caches()


@pytest.fixture
def used() -> Iterator[list[bool]]:
    """Whether each request found its answer in a guess (True) or computed it."""
    outcomes: list[bool] = []
    original = tpe_model._Guess.answers

    def answers(self: tpe_model._Guess, *args: object) -> bool:
        answered = original(self, *args)  # type: ignore[arg-type]
        outcomes.append(answered)
        return answered

    tpe_model._Guess.answers = answers  # type: ignore[method-assign]
    yield outcomes
    tpe_model._Guess.answers = original  # type: ignore[method-assign]


def settle() -> None:
    """Wait for the guess being computed, if any (the guesser runs one job at a time)."""
    tpe_model._GUESSER.submit(lambda: None).result(timeout=30)


def run(
    algorithm: type[TPE],
    steps: int,
    edit: Callable[[int, list[TrialRecord]], None] = lambda i, history: None,
    n: Callable[[int], int] = lambda i: 1,
    specs: list[ParameterSpec] = SPECS,
) -> None:
    """`steps` requests of a sequential experiment, each answered twice and compared."""
    experiment = replace(
        make_experiment(algorithm.name, specs, {"n_startup_trials": "5"}),
        objective_type=ObjectiveType.MINIMIZE,
    )
    history: list[TrialRecord] = []
    for i in range(steps):
        edit(i, history)
        count = n(i)
        points = [s.assignments for s in algorithm().suggest(experiment, history, count)]
        settle()
        again = [s.assignments for s in algorithm().suggest(experiment, history, count)]
        assert points == again, f"request {i}: guessed {points}, computed {again}"
        settle()
        for j, point in enumerate(points):
            history.append(
                TrialRecord(f"t{i}-{j}", point, TrialCondition.SUCCEEDED, loss(point))
            )


@pytest.mark.parametrize("algorithm", [TPE, MultivariateTPE])
def test_sequential_requests_get_the_answers_computed_afresh(
    algorithm: type[TPE], used: list[bool]
) -> None:
    run(algorithm, 120)
    assert used.count(True) > 40, "the guess was hardly ever the answer"
    assert used.count(False) > 0, "no new trial joined the good ones: the test misses a case"


def _fail_every_seventh(i: int, history: list[TrialRecord]) -> None:
    if history and i % 7 == 0:
        last = history[-1]
        history[-1] = TrialRecord(last.name, last.assignments, TrialCondition.FAILED, None)


def _edit_an_old_value(i: int, history: list[TrialRecord]) -> None:
    """An old trial becomes the best one, or the worst: the good trials change."""
    if i % 5 == 0 and len(history) > 10:
        old = history[3]
        value = -1.0 if i % 10 == 0 else 10.0
        history[3] = TrialRecord(old.name, old.assignments, old.condition, value)


def _add_a_running_trial(i: int, history: list[TrialRecord]) -> None:
    if i % 6 == 0 and history:
        history.append(
            TrialRecord(f"r{i}", dict(history[0].assignments), TrialCondition.RUNNING, None)
        )


def _drop_the_oldest(i: int, history: list[TrialRecord]) -> None:
    if i % 8 == 0 and len(history) > 10:
        del history[0]


def _a_new_trial_elsewhere(i: int, history: list[TrialRecord]) -> None:
    """The last trial ran somewhere else than suggested (a controller may do that)."""
    if i % 4 == 0 and history:
        last = history[-1]
        point = {**last.assignments, "k": "5" if last.assignments["k"] != "5" else "6"}
        history[-1] = TrialRecord(last.name, point, last.condition, loss(point))


@pytest.mark.parametrize(
    "edit",
    [
        _fail_every_seventh,
        _edit_an_old_value,
        _add_a_running_trial,
        _drop_the_oldest,
        _a_new_trial_elsewhere,
    ],
)
def test_histories_unlike_the_guess_get_the_answers_computed_afresh(
    edit: Callable[[int, list[TrialRecord]], None], used: list[bool]
) -> None:
    run(TPE, 60, edit)
    assert False in used


def _move_a_failed_trial(i: int, history: list[TrialRecord]) -> None:
    """A failed trial (no value) moves to another point: only the used points change."""
    if i == 8:
        history.append(TrialRecord("failed", {"x": "0", "y": "0", "k": "1"},
                                   TrialCondition.FAILED, None))
    elif i > 8:
        at = next(j for j, t in enumerate(history) if t.name == "failed")
        k = str(1 + i % 9)
        history[at] = TrialRecord("failed", {"x": "0", "y": "0", "k": k},
                                  TrialCondition.FAILED, None)


def test_used_points_unlike_the_guess_get_the_answers_computed_afresh(
    used: list[bool],
) -> None:
    """On a small grid, where the used points decide which candidate is free."""
    grid = [
        ParameterSpec("x", "double", "0", "0.5", "0.25"),
        ParameterSpec("y", "double", "0", "0.5", "0.25"),
        ParameterSpec("k", "int", "1", "9"),
    ]
    run(TPE, 50, _move_a_failed_trial, specs=grid)
    assert False in used


def test_a_batch_request_after_single_ones_is_computed_afresh(used: list[bool]) -> None:
    run(TPE, 40, n=lambda i: 2 if i % 3 == 0 else 1)


def test_outside_a_server_deferred_work_runs_at_once() -> None:
    ran: list[int] = []
    after_reply.defer(lambda: ran.append(1))
    assert ran == [1]
    with after_reply.collecting() as later:
        after_reply.defer(lambda: ran.append(2))
    assert ran == [1]
    assert len(later) == 1
    later[0]()
    assert ran == [1, 2]
