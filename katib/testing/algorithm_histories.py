"""Trial histories that look like a real experiment's, for the algorithm contract.

A controller sends every trial it knows of: trials the algorithm suggested, trials
it did not (a user's own runs, another service's), trials still running, failed,
early-stopped or without metrics. The helpers here build such histories
deterministically, score points with a smooth synthetic objective so that
model-based algorithms have something to fit, and derive the edited histories
(a value changed, a trial removed, a trial finished, the order changed) that a
per-experiment cache must notice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from suggestion_services.base import TrialCondition, TrialRecord
from suggestion_services.search_space import ParameterSpec, SearchSpace

Assignments = dict[str, str]

#: How trials end, cycled by trial index: mostly successes, with every other outcome.
OUTCOMES: tuple[TrialCondition, ...] = (
    TrialCondition.SUCCEEDED,
    TrialCondition.SUCCEEDED,
    TrialCondition.FAILED,
    TrialCondition.SUCCEEDED,
    TrialCondition.EARLY_STOPPED,
    TrialCondition.SUCCEEDED,
    TrialCondition.METRICS_UNAVAILABLE,
    TrialCondition.SUCCEEDED,
    TrialCondition.KILLED,
    TrialCondition.SUCCEEDED,
)


def synthetic_objective(specs: Sequence[ParameterSpec], point: Mapping[str, str]) -> float:
    """A smooth objective (maximised near 0.3-0.5 of each range), 6 decimals.

    Numeric values are scaled to [0, 1] (on the log scale for log distributions);
    list values by their index. Unparseable values score as 0.
    """
    total = 0.0
    for i, s in enumerate(specs):
        text = point.get(s.name, "")
        x = 0.0
        if s.list:
            if text in s.list:
                x = s.list.index(text) / max(1, len(s.list) - 1)
        else:
            try:
                v, lo, hi = float(text), float(s.min), float(s.max)
            except ValueError:
                v, lo, hi = 0.0, 0.0, 1.0
            if str(s.distribution).startswith("log") and lo > 0 and v > 0:
                v, lo, hi = math.log(v), math.log(lo), math.log(hi)
            x = (v - lo) / (hi - lo) if hi > lo else 0.0
        total += (x - 0.3 - 0.1 * (i % 3)) ** 2
    return round(1.0 - total, 6)


def finished(
    trial: TrialRecord, index: int, specs: Sequence[ParameterSpec], all_succeed: bool = False
) -> TrialRecord:
    """The trial as it ends: its outcome by index in OUTCOMES, with a value when it has one."""
    condition = TrialCondition.SUCCEEDED if all_succeed else OUTCOMES[index % len(OUTCOMES)]
    value: float | None = None
    if condition is TrialCondition.SUCCEEDED:
        value = synthetic_objective(specs, trial.assignments)
    elif condition is TrialCondition.EARLY_STOPPED:
        value = round(synthetic_objective(specs, trial.assignments) - 0.2, 6)
    return replace(trial, condition=condition, objective_value=value)


def sampled_points(space: SearchSpace, n: int, seed: int) -> list[Assignments]:
    """n points of the space that no algorithm suggested (a user's own runs)."""
    rng = np.random.default_rng(seed)
    return [space.format(k) for k in space.sample(rng, n)]


SuggestFn = Callable[[Sequence[TrialRecord], int], list[Assignments]]


def grow_like_controller(
    suggest: SuggestFn,
    space: SearchSpace,
    size: int,
    batch: int = 3,
    foreign_every: int = 3,
    all_succeed: bool = False,
) -> list[TrialRecord]:
    """A history of at least `size` trials, built the way a controller builds one.

    Each round, `batch` new points are asked for with the whole history and join it
    as Running; they finish (outcomes cycle through OUTCOMES unless `all_succeed`)
    one round later, so every request carries Running trials the algorithm has
    already seen once. Every `foreign_every` rounds a succeeded trial the algorithm
    never suggested joins too (0 turns that off). The last two batches are still
    Running when this returns.
    """
    specs = space.specs
    history: list[TrialRecord] = []
    previous: list[int] = []  # indices of the batch asked for one round ago
    rounds = 0
    while len(history) < size:
        for i in previous:
            history[i] = finished(history[i], i, specs, all_succeed)
        previous = [i for i, t in enumerate(history) if t.condition is TrialCondition.RUNNING]
        rounds += 1
        if foreign_every and rounds % foreign_every == 0:
            (point,) = sampled_points(space, 1, seed=rounds)
            history.append(
                TrialRecord(f"user-run-{rounds}", point, TrialCondition.SUCCEEDED,
                            synthetic_objective(specs, point))
            )
        points = suggest(history, batch)
        if not points:
            raise AssertionError(f"no suggestion for a history of {len(history)} trials")
        start = len(history)
        history += [
            TrialRecord(f"trial-{start + j}", p, TrialCondition.RUNNING)
            for j, p in enumerate(points)
        ]
    return history


def edited_histories(history: Sequence[TrialRecord]) -> dict[str, list[TrialRecord]]:
    """The edits a cache built from `history` must notice, by name.

    value_changed: the first valued trial reports another value; trial_removed: a
    trial from the middle is gone; running_finished: the Running trials succeed;
    reordered: the same trials in reverse order.
    """
    trials = list(history)
    valued = next(i for i, t in enumerate(trials) if t.objective_value is not None)
    changed = list(trials)
    old = trials[valued]
    changed[valued] = replace(old, objective_value=(old.objective_value or 0.0) + 0.25)
    removed = trials[: len(trials) // 2] + trials[len(trials) // 2 + 1:]
    finished_all = [
        replace(t, condition=TrialCondition.SUCCEEDED, objective_value=0.99)
        if t.condition is TrialCondition.RUNNING else t
        for t in trials
    ]
    return {
        "value_changed": changed,
        "trial_removed": removed,
        "running_finished": finished_all,
        "reordered": trials[::-1],
    }


def distribution_specs(finite: bool) -> list[ParameterSpec]:
    """Every distribution: normal and logNormal doubles, logUniform, a normal int."""
    return [
        ParameterSpec("n", "double", "-2", "3", "0.5" if finite else "", distribution="normal"),
        ParameterSpec("ln", "double", "0.001", "10", "0.001" if finite else "",
                      distribution="logNormal"),
        ParameterSpec("lu", "double", "0.0001", "1", "0.0001" if finite else "",
                      distribution="logUniform"),
        ParameterSpec("k", "int", "-5", "20", "", distribution="normal"),
        ParameterSpec("c", "categorical", list=("a", "b")),
    ]


def small_finite_specs() -> list[ParameterSpec]:
    """27 points: small enough to exhaust within a contract's trial budget."""
    return [
        ParameterSpec("units", "int", "16", "48", "16"),
        ParameterSpec("act", "categorical", list=("relu", "tanh", "gelu")),
        ParameterSpec("drop", "discrete", list=("0.1", "0.2", "0.3")),
    ]
