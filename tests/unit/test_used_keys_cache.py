"""The per-experiment used-keys cache of random, grid and sobol equals a fresh pass."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from katib.testing.algorithm_histories import edited_histories
from katib.testing.algorithms import make_experiment, realistic_specs
from suggestion_services.base import BaseAlgorithm, TrialCondition, TrialRecord
from suggestion_services.experiment_cache import ExperimentCache, clear_all_caches
from suggestion_services.grid import GridSearch
from suggestion_services.history import UsedKeyLog, used_keys, used_points
from suggestion_services.random_search import RandomSearch
from suggestion_services.sobol import Sobol

SPECS = realistic_specs(finite=True)
ALGORITHMS: dict[str, Callable[[], BaseAlgorithm]] = {
    "random": RandomSearch, "grid": GridSearch, "sobol": Sobol,
}


def trial(i: int, rng: random.Random, condition: TrialCondition = TrialCondition.SUCCEEDED
          ) -> TrialRecord:
    """A trial on a small corner of the space, so keys repeat; 1 in 7 off the space."""
    lr = "0.5" if i % 7 == 3 else f"0.0{rng.randint(1, 3)}"
    point = {"lr": lr, "wd": "0.0001", "layers": str(rng.choice((1, 3))),
             "optimizer": rng.choice(("adam", "sgd")), "batch": "32"}
    value = rng.random() if condition is TrialCondition.SUCCEEDED else None
    return TrialRecord(f"t{i}", point, condition, value)


def history(n: int, seed: int = 0) -> list[TrialRecord]:
    rng = random.Random(seed)
    return [trial(i, rng, TrialCondition.RUNNING if i >= n - 3 else TrialCondition.SUCCEEDED)
            for i in range(n)]


def edits(base: list[TrialRecord]) -> dict[str, list[TrialRecord]]:
    """The contract's edits, plus edits that change keys (not only values)."""
    moved = list(base)
    moved[2] = replace(moved[2], assignments={**moved[2].assignments, "batch": "128"})
    return {
        **edited_histories(base),
        "assignment_changed": moved,
        "truncated": base[:5],
        "emptied": [],
        "grown": base + history(len(base) + 6, seed=9)[len(base):],
        "duplicated": base + base[:4],
    }


def cached(cache: ExperimentCache[UsedKeyLog], trials: list[TrialRecord]
           ) -> tuple[set[object], int]:
    exp = make_experiment("random", SPECS)
    with used_points(cache, exp, trials) as used:
        return set(used.keys), used.covered


def test_follows_every_edit() -> None:
    cache: ExperimentCache[UsedKeyLog] = ExperimentCache(max_entries=2)
    space = make_experiment("random", SPECS).search_space
    base = history(30)
    for name, edited in edits(base).items():
        assert cached(cache, base) == used_keys(space, base), name
        assert cached(cache, edited) == used_keys(space, edited), name
        # Equal but not identical records take the equality path of the prefix scan.
        copies = [replace(t) for t in edited]
        assert cached(cache, copies) == used_keys(space, copies), name


def test_grows_like_a_controller() -> None:
    """One trial added and one Running trial finished per call, as in production."""
    cache: ExperimentCache[UsedKeyLog] = ExperimentCache()
    space = make_experiment("random", SPECS).search_space
    full = history(60)
    trials = full[:10]
    for k in range(10, 60):
        trials = [*trials[: k - 3], replace(trials[k - 3], condition=TrialCondition.SUCCEEDED),
                  *trials[k - 2:], full[k]]
        assert cached(cache, trials) == used_keys(space, trials)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_warm_equals_cold_after_edits(algorithm: str) -> None:
    exp = make_experiment(algorithm, SPECS, {"random_state": "3"})
    base = history(30)
    for name, edited in edits(base).items():
        ALGORITHMS[algorithm]().suggest(exp, base, 2)
        warm = [s.assignments for s in ALGORITHMS[algorithm]().suggest(exp, edited, 3)]
        clear_all_caches()
        cold = [s.assignments for s in ALGORITHMS[algorithm]().suggest(exp, edited, 3)]
        assert warm == cold, name
