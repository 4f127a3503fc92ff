"""Per-trial results for the history last seen, recomputed only from the first trial that changed.

A controller's requests differ from one call to the next only at the end of the
history (new trials, running trials that finished), and the server hands out the
same TrialRecord objects for unchanged trials. Finding the first difference is a
C-speed identity scan, so an algorithm that keeps a `PrefixLog` per experiment
touches only the changed tail of a 10,000-trial history in Python. Any edit
(a changed value, a removed or reordered trial) is a difference like any other:
the results from there on are recomputed, so the log always equals a fresh pass.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .base import TrialRecord

T = TypeVar("T")


def first_difference(new: Sequence[TrialRecord], old: Sequence[TrialRecord]) -> int:
    """Length of the longest common prefix (identity first, equality for the rest)."""
    end = min(len(new), len(old))
    i = 0
    while i < end:
        unlike = map(operator.is_not, itertools.islice(new, i, end), itertools.islice(old, i, end))
        j = next(itertools.compress(itertools.count(i), unlike), end)
        if j >= end or new[j] != old[j]:
            return j
        i = j + 1
    return end


class PrefixLog(Generic[T]):
    """`results[k]` is `compute(trials[k])` for the history of the last `update`."""

    def __init__(self) -> None:
        self.records: list[TrialRecord] = []
        self.results: list[T] = []

    def update(
        self, trials: Sequence[TrialRecord], compute: Callable[[TrialRecord], T]
    ) -> tuple[int, list[T]]:
        """Sync with `trials`; returns (first changed index, the results that were dropped)."""
        new = list(trials)
        start = first_difference(new, self.records)
        dropped = self.results[start:]
        del self.results[start:]
        self.results.extend(map(compute, new[start:]))
        self.records = new
        return start, dropped
