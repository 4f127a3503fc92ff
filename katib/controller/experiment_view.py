"""The controller's copy of one experiment and its trials, kept from pass to pass.

Reading and parsing every trial on every pass made a pass cost grow with the
history (tune() with 500 trials spent most of its time there). A view stays valid
while the experiment's stored revision is the revision of the controller's own last
write: storage bumps it on every write to the experiment or its trials
(katib.storage.base), so then the view holds exactly what is stored, plus the
changes this pass has not written yet, and a pass reads one integer instead of the
history (none at all when the view was confirmed less than the controller's
view_ttl_seconds ago). Any other writer (a budget edit, another controller) moves
the revision and the next pass that reads it reloads.

Completed trials never change, so what is derived from them (the status bucket,
the objective value, their record in a GetSuggestions request) is computed
once; each pass looks only at the open trials.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Hashable
from typing import Any

from katib.api.models import (
    Experiment,
    ExperimentStatus,
    ObjectiveType,
    OptimalTrial,
    Trial,
)
from katib.controller import observation, time_budget
from katib.controller.conversion import trial_record
from katib.controller.status import BUCKETS, fill_lists
from katib.storage.base import MetricLogEntry, WriteBatch

_OPTIMAL_CANDIDATES = ("succeeded", "early_stopped")


def essentials(status: ExperimentStatus | None) -> Hashable:
    """What of a status is not derived from the trials: conditions, settings and times."""
    if status is None:
        return None
    return (
        tuple((c.type, c.status, c.reason, c.message) for c in status.conditions),
        tuple((s.name, s.value) for s in status.algorithm_settings or ()),
        status.start_time,
        status.completion_time,
    )


class ExperimentView:
    """One experiment as the controller last wrote or read it, with unwritten changes.

    `history` is every stored trial in creation order (warm-start ones included:
    the algorithm's history); `trials` are the experiment's own, which are polled,
    counted and ranked.
    """

    def __init__(self, revision: int, experiment: Experiment, history: list[Trial]) -> None:
        self.revision = revision
        #: When `revision` was last confirmed to be the stored one (time.monotonic()).
        self.checked_at = time.monotonic()
        self.experiment = experiment
        self.history: list[Trial] = []
        self.trials: list[Trial] = []
        self._names: list[str] = []  # of `trials` (Trial.name is a property chain)
        self._buckets: list[str] = []
        # Per bucket, the positions in `trials` (ascending) and their names, kept in step
        # with `_buckets` so counts and trial lists cost nothing that grows per pass.
        self._members: dict[str, list[int]] = {b: [] for b in BUCKETS.values()}
        self._member_names: dict[str, list[str]] = {b: [] for b in BUCKETS.values()}
        self._open: list[int] = []  # positions in `trials` of trials not completed
        self._positions: dict[str, int] = {}  # trial name -> position in `trials`
        self._records: list[bytes | None] = []  # request record per history trial, once final
        self._unsettled: list[int] = []  # history positions whose record is not final
        self._best: tuple[float, int] | None = None
        self._optimal: tuple[int, OptimalTrial] | None = None
        self._metric = self._objective_metric(experiment)
        #: The status as last stored (its document), so an unchanged status is not rewritten.
        self.saved_status: dict[str, Any] | None = (
            experiment.status.to_dict() if experiment.status is not None else None
        )
        self._saved_essentials = essentials(experiment.status)
        # Since when the stored counts, trial lists or optimum lag the trials (None: they don't).
        self._derived_since: float | None = None
        self._updates: dict[str, Trial] = {}
        self._observations: dict[str, list[MetricLogEntry]] = {}
        self._acknowledge: list[Trial] = []
        self._urgent = False  # a pending change that is not merely a trial start
        self._lazy_since: float | None = None
        self.add(history)

    @staticmethod
    def _objective_metric(experiment: Experiment) -> tuple[str, str, bool] | None:
        objective = experiment.spec.objective
        if objective is None or not objective.objective_metric_name:
            return None
        name = objective.objective_metric_name
        strategy = observation.strategies_of(experiment).get(name, "latest")
        maximize = ObjectiveType(objective.type or "") == ObjectiveType.MAXIMIZE
        return name, strategy, maximize

    # --- trials -----------------------------------------------------------------------
    def add(self, trials: list[Trial]) -> None:
        """Append newly stored trials (creation order)."""
        for trial in trials:
            self.history.append(trial)
            self._records.append(None)
            self._unsettled.append(len(self.history) - 1)
            if time_budget.is_warm_start(trial):
                continue
            self._positions[trial.name] = len(self.trials)
            self.trials.append(trial)
            self._names.append(trial.name)
            self._buckets.append("pending")
            self._members["pending"].append(len(self.trials) - 1)
            self._member_names["pending"].append(trial.name)
            self._open.append(len(self.trials) - 1)
            self._derived_changed()
        self.refresh()

    def is_completed(self, trial_name: str) -> bool:
        """True for a completed trial of this experiment (False for any other name)."""
        position = self._positions.get(trial_name)
        return position is not None and self.trials[position].is_completed

    def open_trials(self) -> list[Trial]:
        """Trials not completed, in creation order (what a pass polls)."""
        self.refresh()
        return [self.trials[i] for i in self._open]

    def refresh(self) -> None:
        """Re-read the condition of every open trial; settle those that completed."""
        still_open: list[int] = []
        for i in self._open:
            trial = self.trials[i]
            bucket = BUCKETS[trial.condition]
            if bucket != self._buckets[i]:
                self._move(i, self._buckets[i], bucket)
                self._buckets[i] = bucket
                self._derived_changed()
            if not trial.is_completed:
                still_open.append(i)
                continue
            if bucket in _OPTIMAL_CANDIDATES:
                self._rank(i, trial)
        if len(still_open) != len(self._open) or len(self._unsettled) > len(still_open):
            self._open = still_open
            self._settle_records()

    def _settle_records(self) -> None:
        open_names = {self.trials[i].name for i in self._open}
        unsettled: list[int] = []
        for j in self._unsettled:
            trial = self.history[j]
            if trial.name in open_names:
                unsettled.append(j)
            else:
                self._records[j] = trial_record(self.experiment, trial)
        self._unsettled = unsettled

    def _rank(self, index: int, trial: Trial) -> None:
        if self._metric is None:
            return
        name, strategy, maximize = self._metric
        raw = observation.metric_value(trial.status.observation, name, strategy)
        value = None if raw is None else observation.finite(raw)
        if value is None:
            return
        best = self._best
        # Ties go to the earlier trial, as a scan in creation order would decide.
        if (
            best is None
            or (value > best[0] if maximize else value < best[0])
            or (value == best[0] and index < best[1])
        ):
            self._best = (value, index)

    def _derived_changed(self) -> None:
        if self._derived_since is None:
            self._derived_since = time.monotonic()

    def status_due(self, status: ExperimentStatus, lazy_seconds: float) -> bool:
        """Must the status be written now? Yes when its conditions, settings or times
        changed; changed counts, trial lists and optimum may wait `lazy_seconds` (they
        follow from the stored trials, and the status's JSON grows with the history)."""
        if essentials(status) != self._saved_essentials:
            return True
        since = self._derived_since
        return since is not None and time.monotonic() - since >= lazy_seconds

    def status_saved(self, status: ExperimentStatus, document: dict[str, Any]) -> None:
        self.saved_status = document
        self._saved_essentials = essentials(status)
        self._derived_since = None

    def records(self) -> list[bytes]:
        """Every history trial as a framed GetSuggestions record (conversion.frame_trial);
        a completed trial's is built once."""
        self.refresh()
        return [
            record if record is not None else trial_record(self.experiment, trial)
            for record, trial in zip(self._records, self.history, strict=True)
        ]

    # --- derived status ------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        self.refresh()
        return {bucket: len(members) for bucket, members in self._members.items()}

    def aggregate(self, status: ExperimentStatus) -> dict[str, int]:
        """status.aggregate over `trials`, from the cached buckets."""
        self.refresh()
        return fill_lists(status, {b: list(names) for b, names in self._member_names.items()})

    def _move(self, position: int, old: str, new: str) -> None:
        """Trial `position` leaves bucket `old` for `new` (lists stay in creation order)."""
        members, names = self._members[old], self._member_names[old]
        at = bisect.bisect_left(members, position)
        del members[at], names[at]
        members, names = self._members[new], self._member_names[new]
        at = bisect.bisect_left(members, position)
        members.insert(at, position)
        names.insert(at, self._names[position])

    def optimal(self) -> OptimalTrial | None:
        """observation.optimal_trial over `trials`, from the ranked completed trials."""
        self.refresh()
        if self._best is None:
            return None
        index = self._best[1]
        if self._optimal is None or self._optimal[0] != index:
            trial = self.trials[index]
            self._optimal = (
                index,
                OptimalTrial(
                    best_trial_name=trial.name,
                    parameter_assignments=[
                        a.model_copy() for a in trial.spec.parameter_assignments
                    ],
                    observation=trial.status.observation.model_copy(deep=True)
                    if trial.status.observation
                    else None,
                ),
            )
        return self._optimal[1]

    # --- unwritten changes ---------------------------------------------------------------
    def changed(self, trial: Trial, lazy: bool = False) -> None:
        """The trial's status changed in memory; it goes with the next write.

        `lazy`: the change only says the trial has started, which may wait (`due`).
        """
        self._updates[trial.name] = trial
        if not lazy:
            self._urgent = True
        elif self._lazy_since is None:
            self._lazy_since = time.monotonic()

    def due(self, lazy_seconds: float) -> bool:
        """Should this pass write? Yes, unless only trial starts younger than
        `lazy_seconds` are pending (or nothing is, and the status would not change)."""
        if self._urgent or self._observations:
            return True
        if self._lazy_since is None:
            return True  # _write compares the status and writes only a change
        return time.monotonic() - self._lazy_since >= lazy_seconds

    def ingest(self, trial: Trial, entries: list[MetricLogEntry]) -> None:
        """Observations the executor spooled: stored with the next write, then acknowledged."""
        self._urgent = True
        self._observations.setdefault(trial.name, []).extend(entries)
        self._acknowledge.append(trial)

    def take(self) -> tuple[WriteBatch, list[Trial]]:
        """The pending changes as a batch (and the trials to acknowledge once it is stored)."""
        batch = WriteBatch(
            observations=self._observations, trial_updates=list(self._updates.values())
        )
        acknowledge = self._acknowledge
        self._updates, self._observations, self._acknowledge = {}, {}, []
        self._urgent, self._lazy_since = False, None
        return batch, acknowledge

