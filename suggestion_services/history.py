"""Helpers that read the trial history: used points (cached per experiment), seeded generators."""

from __future__ import annotations

import operator
import threading
import zlib
from collections.abc import Callable, Hashable, Iterator, KeysView, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .base import ExperimentInfo, TrialRecord
from .experiment_cache import ExperimentCache
from .search_space import OFF_SPACE, Key, SearchSpace
from .trial_prefix import PrefixLog


def used_keys(space: SearchSpace, trials: Sequence[TrialRecord]) -> tuple[set[Key], int]:
    """Keys of every trial of the history (any condition), and how many are space points.

    Foreign values become OFF_SPACE entries, so such keys never collide with a
    point the space produces and are not counted. A fresh pass; `used_points` is
    the cached equivalent.
    """
    return space.used_keys(t.assignments for t in trials)


def make_rng(
    experiment: ExperimentInfo, trials: Sequence[TrialRecord], random_state: int | None
) -> np.random.Generator:
    """A generator that depends only on (random_state, history length).

    Without random_state the experiment name stands in, so a retried request (same
    history) gets the same answer and distinct experiments get distinct streams.
    """
    return rng_for_count(experiment, len(trials), random_state)


def rng_for_count(
    experiment: ExperimentInfo, count: int, random_state: int | None
) -> np.random.Generator:
    """`make_rng` for a history of `count` trials."""
    seed = random_state if random_state is not None else zlib.crc32(experiment.name.encode())
    return np.random.default_rng([seed, count, 0 if random_state is not None else 1])


class _Memo(dict[str | None, Hashable]):
    """str → key entry of one parameter, parsed on first lookup."""

    __slots__ = ("_compute",)

    def __init__(self, compute: Callable[[str | None], Hashable]) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, text: str | None) -> Hashable:
        entry = self[text] = self._compute(text)
        return entry


def _key_function(space: SearchSpace) -> Callable[[TrialRecord], Key]:
    """trial → key, as `SearchSpace.key_of` gives it, each distinct string parsed once."""
    memos = [_Memo(p.key_of) for p in space.parameters]
    names = space.names
    getitem = operator.getitem

    def key(trial: TrialRecord) -> Key:
        return tuple(map(getitem, memos, map(trial.assignments.get, names)))

    return key


class UsedKeyLog:
    """The used keys of the last history seen for one experiment, kept as a multiset.

    A `PrefixLog` holds one key per trial; only the trials from the first one that
    differs from the previous request (by identity, then equality) are re-read, and
    the keys they had are taken out of the counts first. So the state always equals
    a fresh `used_keys` pass over the current history, whatever was edited.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.lock = threading.Lock()
        self._key = _key_function(space)
        self._log: PrefixLog[Key] = PrefixLog()
        self._counts: dict[Key, int] = {}
        self._covered = 0

    def update(self, trials: Sequence[TrialRecord]) -> None:
        """Bring the counts in line with `trials` (call with `lock` held)."""
        start, dropped = self._log.update(trials, self._key)
        counts = self._counts
        for k in dropped:
            left = counts[k] - 1
            if left:
                counts[k] = left
            else:
                del counts[k]
                if OFF_SPACE not in k:
                    self._covered -= 1
        for k in self._log.results[start:]:
            seen = counts.get(k, 0)
            counts[k] = seen + 1
            if not seen and OFF_SPACE not in k:
                self._covered += 1

    @property
    def keys(self) -> KeysView[Key]:
        """The distinct used keys (a live view: read it while `lock` is held)."""
        return self._counts.keys()

    @property
    def covered(self) -> int:
        """How many distinct used keys are points of the space."""
        return self._covered


@dataclass(frozen=True)
class UsedPoints:
    """What a call reads: the distinct used keys and how many are points of the space."""

    keys: KeysView[Key]
    covered: int


@contextmanager
def used_points(
    cache: ExperimentCache[UsedKeyLog], experiment: ExperimentInfo, trials: Sequence[TrialRecord]
) -> Iterator[UsedPoints]:
    """The history's used keys, from the experiment's cached log brought up to date.

    Equal to `used_keys(space, trials)`; the keys are valid inside the `with` block
    only (the experiment's log is locked meanwhile, so concurrent calls for one
    experiment take turns; other experiments are not blocked).
    """
    space = experiment.search_space
    key = (experiment.name, space.specs)
    log = cache.get(key)
    if log is None:
        log = UsedKeyLog(space)
        cache.put(key, log)
    with log.lock:
        log.update(trials)
        yield UsedPoints(log.keys, log.covered)
