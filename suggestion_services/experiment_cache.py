"""A bounded, thread-safe LRU of per-experiment model state.

Model-based algorithms may keep a fitted model (or an optimizer with its told
trials) between calls to avoid re-ingesting a long history. The state is only an
accelerator: every call checks it against the history in the request (see
`IngestedTrials`) and rebuilds it when they disagree, so a restarted service, or
one that never saw the experiment, answers exactly as a warm one would.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from .base import ExperimentInfo, TrialRecord

S = TypeVar("S")

# Every cache ever built, so tests can make a warm process behave like a fresh one.
_ALL_CACHES: weakref.WeakSet[ExperimentCache[object]] = weakref.WeakSet()


def clear_all_caches() -> None:
    """Forget every cached model (as a restarted service would)."""
    for cache in list(_ALL_CACHES):
        cache.clear()


def all_caches() -> list[ExperimentCache[object]]:
    """The live caches (for checks that they stay within their bound)."""
    return list(_ALL_CACHES)


def experiment_key(experiment: ExperimentInfo) -> Hashable:
    """Everything that, when changed, invalidates a model: name, algorithm, settings, space."""
    return (
        experiment.name,
        experiment.algorithm_name,
        tuple(sorted(experiment.settings.items())),
        experiment.objective_type,
        experiment.objective_metric_name,
        experiment.search_space.specs,
    )


class ExperimentCache(Generic[S]):
    """At most `max_entries` states, least recently used evicted first."""

    def __init__(self, max_entries: int = 32) -> None:
        self._max = max_entries
        self._items: OrderedDict[Hashable, S] = OrderedDict()
        self._lock = threading.Lock()
        _ALL_CACHES.add(self)  # type: ignore[arg-type]

    @property
    def max_entries(self) -> int:
        return self._max

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get(self, key: Hashable) -> S | None:
        with self._lock:
            state = self._items.get(key)
            if state is not None:
                self._items.move_to_end(key)
            return state

    def put(self, key: Hashable, state: S) -> None:
        with self._lock:
            self._items[key] = state
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def pop(self, key: Hashable) -> S | None:
        with self._lock:
            return self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class IngestedTrials:
    """Which trials a cached model has absorbed, to compare with a request's history.

    `diff` answers: which trials are new since the model was built, and whether the
    model is still valid (no trial it absorbed has disappeared or changed).
    """

    def __init__(self) -> None:
        self._seen: dict[str, TrialRecord] = {}

    def diff(self, trials: Iterable[TrialRecord]) -> tuple[list[TrialRecord], bool]:
        """(trials not yet absorbed, in request order; False if the cache must be rebuilt)."""
        new: list[TrialRecord] = []
        matched = 0
        seen = self._seen
        for t in trials:
            old = seen.get(t.name)
            if old is None:
                new.append(t)
            elif old != t:
                return [], False
            else:
                matched += 1
        return new, matched == len(seen)

    def add(self, trials: Sequence[TrialRecord]) -> None:
        for t in trials:
            self._seen[t.name] = t

    def __len__(self) -> int:
        return len(self._seen)
