"""The trial history as a model sees it, parsed once per trial and kept between calls.

`History.update` takes the whole history of a request and returns a `Snapshot`:
the observed trials as arrays in request order, the points still being evaluated,
and every point the history already holds. Trials are parsed when first seen
(or when they change); the arrays are extended when the request only appends
observed trials and rebuilt from the parsed rows otherwise. A snapshot depends
only on the request, never on what the cache saw before: a fresh `History`
returns the same arrays, values and order.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from .base import TrialCondition, TrialRecord
from .model_space import ModelSpace
from .search_space import OFF_SPACE, Key

#: Conditions of trials that are being evaluated: the model lies about them.
PENDING_CONDITIONS = frozenset({TrialCondition.CREATED, TrialCondition.RUNNING})
#: The latest trials `History._tail` always re-reads (new and recently finished ones).
_TAIL = 8
#: Pending trials this recent also move the re-read start back (parallel trials end in
#: any order); an older one that ends costs one full pass.
_RECENT = 4096


@dataclass(eq=False, slots=True)
class _Row:
    """One trial, parsed; compared by identity so request order checks stay cheap."""

    record: TrialRecord
    key: Key
    coords: tuple[float, ...]
    loss: float | None  # the value to minimise when the trial feeds the model
    pending: bool
    stamp: int
    position: int = -1  # index in the latest request


#: One pass over a request: observed rows, pending rows, shadowed keys, names unique.
_Pass = tuple[list[_Row], list[_Row], set[Key], bool]


class UsedKeys(AbstractSet[Key]):
    """Keys of the history (any condition) plus keys taken earlier in the same batch."""

    def __init__(self, counts: dict[Key, int], shadowed: set[Key]) -> None:
        self._counts = counts
        self._shadowed = shadowed
        self.batch: set[Key] = set()

    @property
    def shadowed(self) -> AbstractSet[Key]:
        return self._shadowed

    def detached(self) -> UsedKeys:
        """A copy (batch included) that later history updates leave alone."""
        return UsedKeys(dict(self._counts), self._shadowed | self.batch)

    def __contains__(self, key: object) -> bool:
        return key in self._counts or key in self.batch or key in self._shadowed

    def __iter__(self) -> Iterator[Key]:
        return iter(set(self._counts) | self._shadowed | self.batch)

    def __len__(self) -> int:
        return len(set(self._counts) | self._shadowed | self.batch)


@dataclass(frozen=True)
class Snapshot:
    """What one call needs from the history (valid while the History lock is held)."""

    coords: np.ndarray  # (observed, width): model coordinates, NaN where unusable
    losses: np.ndarray  # (observed,): smaller is better
    pending: np.ndarray  # (pending, width): Created/Running trials with usable values
    used: UsedKeys
    covered: int  # distinct history keys that are points of the space


class History:
    """Parsed rows by trial name, brought in line with each request by `update`.

    Two passes give the same result: `_full` reads every trial; `_tail`, tried first,
    checks in C that the request starts with the previous request's trials (the same
    objects, or equal ones) and reads only the rest, where a controller appends new
    trials and finishes running ones. Anything unusual (an edited old trial, a
    vanished trial, two trials with one name) sends it to `_full`.
    """

    def __init__(self, model: ModelSpace, maximize: bool) -> None:
        self.model = model
        self.lock = threading.Lock()
        self._sign = -1.0 if maximize else 1.0
        self._rows: dict[str, _Row] = {}
        self._counts: dict[Key, int] = {}
        self._covered = 0
        self._stamp = 0
        self._observed: list[_Row] = []
        self._coords = np.empty((0, model.width))
        self._losses = np.empty(0)
        # What `_tail` may reuse: the previous request, a position k before which the
        # next one is expected to repeat it, and the observed/pending rows before k.
        self._records: list[TrialRecord] = []
        self._pending: list[_Row] = []
        self._mark: tuple[int, int, int] | None = None
        # Counts every change to the used keys; with the last key added, it tells a
        # caller that the keys are those it saw plus exactly that one.
        self.revision = 0
        self.last_key: Key | None = None

    def update(self, trials: Iterable[TrialRecord]) -> Snapshot:
        """Absorb the request's history (new, changed and vanished trials) and snapshot it."""
        records = list(trials)  # a copy: the caller may edit its list before the next call
        found = self._tail(records)
        reuse = found[1] if found is not None else 0
        observed, pending, shadowed, clean = found[0] if found is not None else self._full(records)
        self._records = records
        self._pending = pending
        self._mark = self._next_mark(records, observed, pending) if clean else None
        self._sync_arrays(observed, reuse)
        width = self.model.width
        pending_coords = np.array([r.coords for r in pending], dtype=float).reshape(-1, width)
        covered = self._covered + sum(
            1 for k in shadowed if k not in self._counts and OFF_SPACE not in k
        )
        return Snapshot(
            self._coords, self._losses, pending_coords, UsedKeys(self._counts, shadowed), covered
        )

    def _full(self, records: list[TrialRecord]) -> _Pass:
        """Every trial: (observed rows, pending rows, keys of trials shadowed by a later
        trial with the same name, whether every name was unique), in request order;
        drops vanished trials."""
        self._stamp += 1
        stamp = self._stamp
        rows = self._rows
        observed: list[_Row] = []
        pending: list[_Row] = []
        shadowed: set[Key] = set()
        touched = 0
        clean = True
        for i, t in enumerate(records):
            row = rows.get(t.name)
            if row is None or (row.record is not t and row.record != t):
                seen_now = row is not None and row.stamp == stamp
                if row is not None:
                    if seen_now:  # two trials share a name: keep the first one's point too
                        shadowed.add(row.key)
                    self._forget(row.key)
                row = rows[t.name] = self._parse(t, stamp)
                self._remember(row.key)
                if not seen_now:
                    touched += 1
                clean = clean and not seen_now
            elif row.stamp != stamp:
                row.stamp = stamp
                touched += 1
            else:
                clean = False  # the same trial twice
            row.position = i
            if row.loss is not None:
                observed.append(row)
            elif row.pending:
                pending.append(row)
        if touched != len(rows):
            for name in [name for name, row in rows.items() if row.stamp != stamp]:
                self._forget(rows.pop(name).key)
        return observed, pending, shadowed, clean

    def _tail(self, records: list[TrialRecord]) -> tuple[_Pass, int] | None:
        """Like `_full` (plus how many leading observed rows are the previous ones)
        when the request repeats the previous one up to the mark; None, leaving a
        state `_full` can start from, otherwise."""
        if self._mark is None:
            return None
        k, n_observed, n_pending = self._mark
        if len(records) < k or records[:k] != self._records[:k]:
            return None
        self._stamp += 1
        stamp = self._stamp
        rows = self._rows
        observed = self._observed[:n_observed]
        pending = self._pending[:n_pending]
        for i in range(k, len(records)):
            t = records[i]
            row = rows.get(t.name)
            if row is None:
                row = rows[t.name] = self._parse(t, stamp)
                self._remember(row.key)
            elif row.position < k or row.stamp == stamp:
                return None  # a name used twice
            elif row.record is not t and row.record != t:
                self._forget(row.key)
                row = rows[t.name] = self._parse(t, stamp)
                self._remember(row.key)
            else:
                row.stamp = stamp
            row.position = i
            if row.loss is not None:
                observed.append(row)
            elif row.pending:
                pending.append(row)
        if len(rows) != len(records):
            return None  # trials of the previous request have vanished
        return (observed, pending, set(), True), n_observed

    @staticmethod
    def _next_mark(
        records: list[TrialRecord], observed: list[_Row], pending: list[_Row]
    ) -> tuple[int, int, int]:
        """Where the next request is expected to start differing: before the last
        _TAIL trials, and before the oldest of the recent pending trials."""
        k = max(0, len(records) - _TAIL)
        recent = len(records) - _RECENT
        for row in pending:
            if row.position >= recent:
                k = min(k, row.position)
                break
        position = attrgetter("position")
        return (
            k,
            bisect.bisect_left(observed, k, key=position),
            bisect.bisect_left(pending, k, key=position),
        )

    def _parse(self, t: TrialRecord, stamp: int) -> _Row:
        loss: float | None = None
        if t.observed and t.objective_value is not None and not math.isnan(t.objective_value):
            loss = self._sign * t.objective_value
        return _Row(
            record=t,
            key=self.model.space.key_of(t.assignments),
            coords=self.model.coords(t.assignments),
            loss=loss,
            pending=t.condition in PENDING_CONDITIONS,
            stamp=stamp,
        )

    def _remember(self, key: Key) -> None:
        self.revision += 1
        self.last_key = key
        count = self._counts.get(key, 0)
        self._counts[key] = count + 1
        if count == 0 and OFF_SPACE not in key:
            self._covered += 1

    def _forget(self, key: Key) -> None:
        self.revision += 1
        self.last_key = None
        count = self._counts[key]
        if count > 1:
            self._counts[key] = count - 1
            return
        del self._counts[key]
        if OFF_SPACE not in key:
            self._covered -= 1

    def _sync_arrays(self, observed: list[_Row], reuse: int) -> None:
        """Arrays for `observed`, reusing the rows it shares with the previous call
        (its first `reuse` rows, or all previous rows when it only appends)."""
        known = len(self._observed)
        if len(observed) >= known and observed[:known] == self._observed:
            reuse = known
        width = self.model.width
        tail = observed[reuse:]
        coords = np.array([r.coords for r in tail], dtype=float).reshape(-1, width)
        losses = np.array([r.loss for r in tail], dtype=float)
        if reuse:
            coords = np.concatenate([self._coords[:reuse], coords])
            losses = np.concatenate([self._losses[:reuse], losses])
        self._coords, self._losses = coords, losses
        self._observed = observed
