"""Sobol quasi-random search: point i of one scrambled Sobol sequence per experiment.

Stateless by construction: the batch for a request starts at sequence index
``len(trials)`` (every trial in the request, of any condition), so a restarted
service, or one that never saw the experiment, continues the same sequence.
Over a space with a continuous double the history is not read at all (only its
length), so a call costs the same at 10 or 10,000 trials. Over a finite space
each candidate is checked against the history, points already used are skipped
and the sequence moves on.

Mapping from the unit cube, one coordinate per parameter (in spec order):

* continuous double: uniform → linear, logUniform → log scale, normal/logNormal
  → inverse CDF of the declared normal (mean (min+max)/2, sigma (max-min)/6, on
  the log scale for logNormal) *truncated* to [min, max], so no mass piles up at
  the bounds;
* int / double with a step, uniform: index floor(u * size), every grid point
  equally likely; with another distribution the coordinate is mapped as for a
  continuous double and snapped to the nearest grid point;
* categorical / discrete: index floor(u * size).

Katib's goptuna sobol has no settings. This one accepts an optional
``random_state`` (int >= 0) as the scrambling seed (an extension); without it the
seed comes from the experiment name, so each experiment gets its own
scrambling. Every other setting is rejected with Katib's message.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Hashable, Sequence
from typing import ClassVar

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import qmc

from katib.errors import SearchSpaceExhaustedError

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    SettingParser,
    Suggestion,
    TrialRecord,
    non_negative_int,
)
from .experiment_cache import ExperimentCache
from .history import UsedKeyLog, make_rng, used_points
from .search_space import (
    Distribution,
    Key,
    ListParameter,
    NumericParameter,
    Parameter,
    SearchSpace,
    format_double,
)

# A truncated normal spans this many sigmas either side of the mean (Katib's sigma
# is (max-min)/6, so [min, max] is exactly +-3 sigma).
_SIGMAS = 3.0
# Sequence points tried per missing suggestion before a finite space falls back to
# enumerating its free points.
_TRIES_PER_POINT = 64


def _continuous_from_unit(p: NumericParameter, u: np.ndarray) -> np.ndarray:
    """Values in [min, max] for unit coordinates, following the declared distribution."""
    lo, hi = p.min, p.max
    dist = p.distribution
    if dist in (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL):
        lo, hi = math.log(lo), math.log(hi)
    if dist in (Distribution.NORMAL, Distribution.LOG_NORMAL):
        a, b = ndtr(-_SIGMAS), ndtr(_SIGMAS)
        z = ndtri(a + u * (b - a))
        x = (lo + hi) / 2 + z * (hi - lo) / (2 * _SIGMAS)
    else:
        x = lo + u * (hi - lo)
    if dist in (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL):
        x = np.exp(x)
    return np.clip(x, p.min, p.max)


def _floor_index(u: np.ndarray, size: int) -> list[Hashable]:
    return np.minimum(np.floor(u * size), size - 1).astype(np.int64).tolist()


def unit_to_entries(p: Parameter, u: np.ndarray) -> list[Hashable]:
    """Key entries of parameter `p` for unit-cube coordinates `u` (see the module doc)."""
    if isinstance(p, ListParameter):
        return _floor_index(u, p.size)
    if not isinstance(p, NumericParameter):
        raise TypeError(f"unsupported parameter type {type(p).__name__}")
    if p.size is None:
        lo, hi = p.min, p.max
        return [
            min(max(float(format_double(x)), lo), hi)
            for x in _continuous_from_unit(p, u).tolist()
        ]
    if p.distribution is Distribution.UNIFORM:
        return _floor_index(u, p.size)
    k = np.rint((_continuous_from_unit(p, u) - p.min) / (p.step or 1))
    return np.clip(k, 0, p.size - 1).astype(np.int64).tolist()


def unit_to_keys(space: SearchSpace, points: np.ndarray) -> list[Key]:
    """Keys for rows of a (m, d) array of unit-cube points, d = number of parameters."""
    columns = [unit_to_entries(p, points[:, j]) for j, p in enumerate(space.parameters)]
    return list(zip(*columns, strict=True))


class _Engine:
    """A scrambled Sobol engine plus a lock; it remembers its position.

    Scrambling costs about half a millisecond, so engines are kept per (dimension,
    seed). Reading point i moves forward from where the engine stands (or resets it
    first), which gives exactly the points a fresh engine would give.
    """

    def __init__(self, d: int, seed: int) -> None:
        self._engine = qmc.Sobol(d, scramble=True, rng=seed)
        self._lock = threading.Lock()

    def points(self, start: int, count: int) -> np.ndarray:
        """Rows start .. start+count-1 of the sequence, shape (count, d)."""
        with self._lock:
            engine = self._engine
            if engine.num_generated > start:
                engine.reset()
            skip = start - engine.num_generated
            if skip:  # scipy cannot fast-forward a fresh engine by zero points
                engine.fast_forward(skip)
            if start == 0:
                # Sobol warns unless a draw from the first point is a power of two.
                draw = 1 << max(0, count - 1).bit_length()
                return engine.random(draw)[:count]
            return engine.random(count)


_ENGINES: ExperimentCache[_Engine] = ExperimentCache(max_entries=16)
# Used keys per experiment (finite spaces only), brought up to date with each request.
_USED: ExperimentCache[UsedKeyLog] = ExperimentCache(max_entries=32)


def sobol_points(d: int, seed: int, start: int, count: int) -> np.ndarray:
    """Points start .. start+count-1 of scipy's scrambled Sobol sequence for (d, seed)."""
    key = (d, seed)
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _Engine(d, seed)
        _ENGINES.put(key, engine)
    return engine.points(start, count)


def scramble_seed(experiment: ExperimentInfo, random_state: int | None) -> int:
    """random_state when given, else a seed derived from the experiment name."""
    if random_state is not None:
        return random_state
    return zlib.crc32(experiment.name.encode())


class Sobol(BaseAlgorithm):
    """Katib's `sobol` (goptuna's quasi-random sampler), honouring distributions."""

    name: ClassVar[str] = "sobol"
    settings_schema: ClassVar[dict[str, SettingParser]] = {
        "random_state": non_negative_int("random_state"),
    }

    def suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Suggestion]:
        """The next n points of the sequence, skipping used points of a finite space."""
        random_state = self.parse_settings(experiment).get("random_state")
        seed = scramble_seed(experiment, random_state if isinstance(random_state, int) else None)
        space = experiment.search_space
        d = len(space.parameters)
        start = len(trials)  # never iterates the history
        size = space.size
        if size is None:
            keys = unit_to_keys(space, sobol_points(d, seed, start, n))
            return [Suggestion(space.format(k)) for k in keys]

        with used_points(_USED, experiment, trials) as used:
            if used.covered >= size:
                raise SearchSpaceExhaustedError(
                    f"sobol search space exhausted: all {size} points have been suggested"
                )
            want = min(n, size - used.covered)
            chosen: list[Key] = []
            taken: set[Key] = set()  # this batch's points
            history = used.keys
            position, budget = start, _TRIES_PER_POINT * want
            while len(chosen) < want and position - start < budget:
                count = min(max(2 * (want - len(chosen)), 8), start + budget - position)
                for key in unit_to_keys(space, sobol_points(d, seed, position, count)):
                    if key not in history and key not in taken:
                        taken.add(key)
                        chosen.append(key)
                        if len(chosen) == want:
                            break
                position += count
            if len(chosen) < want:
                # Free points are rare: take them from an enumeration (seeded, stateless).
                rng = make_rng(experiment, trials, random_state if isinstance(random_state, int)
                               else None)
                chosen += space.sample_unique(rng, want - len(chosen), taken | history)
        return [Suggestion(space.format(k)) for k in chosen]
