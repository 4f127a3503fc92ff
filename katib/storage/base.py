"""The storage contract every backend honours (see katib.testing.storage for its test suite).

A storage keeps three things: experiments (the spec as the user gave it after
defaulting, plus status), trials (the Katib Trial document, plus indexed columns
for what the controller queries), and observation logs (one row per reported
metric value, Katib's `observation_logs` table with an index and a step).

Rules every implementation follows:
- Every method is one transaction: it either happens completely or not at all.
- `create_trials` inserts a whole batch atomically; a name that exists raises
  AlreadyExistsError and inserts none of the batch.
- Names are scoped by namespace; observation logs are keyed by trial name only
  (as Katib's DBManager is), so trial names are unique across namespaces.
- Reads return fresh pydantic models; mutating them changes nothing stored.
- Every write to an experiment or its trials bumps the experiment's revision by one
  and returns the new value; leases and observation logs do not. A controller that
  sees the revision of its own last write still knows the whole state (no reads).
- Errors are from katib.errors: NotFoundError, AlreadyExistsError, ConflictError,
  UnavailableError (the database cannot be reached; retryable), StorageError.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from katib.api.models import Experiment, ExperimentStatus, Trial


@dataclass(frozen=True)
class MetricLogEntry:
    """One observation: a metric value at a time. `step` counts reports of that metric per trial."""

    metric_name: str
    value: str
    timestamp: datetime  # timezone-aware UTC; datetime.min-like values allowed (Katib's zero time)
    step: int | None = None


@dataclass(frozen=True)
class Ownership:
    """Who currently runs an experiment's controller loop."""

    owner: str | None
    heartbeat: datetime | None


@dataclass(frozen=True)
class ExperimentLease:
    """An experiment that is not completed, with who owns it and how old that claim is.

    `age_seconds` is measured by the database's clock (heartbeat to now), so servers on
    hosts whose clocks disagree still agree on when a lease has gone stale.
    """

    name: str
    namespace: str
    owner: str | None
    heartbeat: datetime | None
    age_seconds: float | None


@dataclass
class WriteBatch:
    """What one reconcile pass writes, stored in a single transaction by `write_batch`.

    Observations are appended first, then trial statuses replaced, then new trials
    inserted, then the experiment's status replaced: a pass that is cut off leaves
    either all of it or none.
    """

    observations: dict[str, list[MetricLogEntry]] = field(default_factory=dict)
    trial_updates: list[Trial] = field(default_factory=list)
    new_trials: list[Trial] = field(default_factory=list)
    status: ExperimentStatus | None = None

    def __bool__(self) -> bool:
        return bool(
            self.observations or self.trial_updates or self.new_trials
            or self.status is not None
        )


class BaseStorage(abc.ABC):
    """Contract for experiment, trial and observation-log storage."""

    # --- experiments -----------------------------------------------------------
    @abc.abstractmethod
    def create_experiment(self, experiment: Experiment) -> None:
        """Store a new experiment (spec, metadata and status). AlreadyExistsError if present."""

    @abc.abstractmethod
    def get_experiment(self, name: str, namespace: str = "default") -> Experiment:
        """The experiment with its current status. NotFoundError if absent."""

    @abc.abstractmethod
    def list_experiments(self, namespace: str | None = None) -> list[Experiment]:
        """All experiments (of one namespace if given), oldest first."""

    @abc.abstractmethod
    def experiment_revision(self, name: str, namespace: str = "default") -> int:
        """The experiment's revision (see the module's rules). NotFoundError if absent."""

    @abc.abstractmethod
    def update_experiment_spec(self, experiment: Experiment) -> int:
        """Replace the stored spec (budget edits); returns the new revision.
        NotFoundError if absent."""

    @abc.abstractmethod
    def update_experiment_status(
        self, name: str, namespace: str, status: ExperimentStatus, *, owner: str | None = None
    ) -> int:
        """Replace the stored status; returns the new revision. NotFoundError if absent.

        With `owner`, a fenced write: ConflictError (nothing written) unless `owner`
        holds the experiment at the moment of the write.
        """

    @abc.abstractmethod
    def delete_experiment(self, name: str, namespace: str = "default") -> None:
        """Delete the experiment, its trials and their observation logs. NotFoundError if absent."""

    @abc.abstractmethod
    def acquire_experiment(
        self, name: str, namespace: str, owner: str, *, steal_from: Sequence[str] = (),
        stale_after_seconds: float = 30.0,
    ) -> bool:
        """Take ownership if free, already ours, listed in `steal_from` (known dead), or stale.

        Returns True when `owner` now owns the experiment. Refreshes the heartbeat.
        Atomic (one conditional update): of several concurrent callers at most one
        wins. Heartbeats are written and staleness (heartbeat older than
        `stale_after_seconds`) is judged by the database's clock where it has one.
        """

    @abc.abstractmethod
    def release_experiment(self, name: str, namespace: str, owner: str) -> None:
        """Give up ownership if `owner` holds it."""

    @abc.abstractmethod
    def get_ownership(self, name: str, namespace: str) -> Ownership:
        """Current owner and its last heartbeat."""

    @abc.abstractmethod
    def renew_leases(self, owner: str) -> list[tuple[str, str]]:
        """Refresh the heartbeat of every experiment `owner` holds, in one transaction.

        Returns the (namespace, name) keys it holds: one it believed it held and that
        is missing was taken over (its lease went stale) or deleted.
        """

    @abc.abstractmethod
    def list_unfinished_experiments(self) -> list[ExperimentLease]:
        """Experiments whose latest condition is neither Succeeded nor Failed, oldest first."""

    # --- trials ------------------------------------------------------------------
    @abc.abstractmethod
    def create_trials(
        self,
        experiment_name: str,
        namespace: str,
        trials: Sequence[Trial],
        *,
        owner: str | None = None,
        expected_count: int | None = None,
    ) -> int:
        """Insert a batch of new trials atomically (all or none); returns the new revision.

        Fencing, checked in the same transaction as the insert, with the experiment
        locked against concurrent fenced inserts and ownership changes: with `owner`,
        ConflictError unless `owner` holds the experiment; with `expected_count`,
        ConflictError unless the experiment has exactly that many trials (the count
        the caller's decision was based on). Either way nothing is inserted.
        """

    @abc.abstractmethod
    def get_trial(self, name: str, namespace: str = "default") -> Trial:
        """One trial. NotFoundError if absent."""

    @abc.abstractmethod
    def list_trials(self, experiment_name: str, namespace: str = "default") -> list[Trial]:
        """The trials of an experiment in creation order."""

    @abc.abstractmethod
    def update_trial_status(self, trial: Trial) -> int:
        """Store `trial.status` (conditions, times, observation); returns the revision of
        the trial's experiment. NotFoundError if absent."""

    @abc.abstractmethod
    def write_batch(
        self,
        experiment_name: str,
        namespace: str,
        batch: WriteBatch,
        *,
        owner: str | None = None,
        expected_count: int | None = None,
    ) -> int:
        """Store a WriteBatch in one transaction; returns the new revision.

        Fencing as `create_trials` (`expected_count` is checked before the new trials
        are inserted). A trial to update that is not the experiment's raises
        NotFoundError; a new trial name that exists raises AlreadyExistsError; either
        way nothing is written.
        """

    def list_experiment_documents(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """list_experiments as raw camelCase documents (status included), not validated.

        For listings of many experiments, where building every model would dominate.
        """
        return [e.to_dict() for e in self.list_experiments(namespace)]

    def count_trials_by_condition(
        self, namespace: str | None = None, *, unfinished_only: bool = False
    ) -> dict[tuple[str, str], dict[str, int]]:
        """{(namespace, experiment name): {latest condition type: trial count}} in one query.

        A trial with no condition counts as "Created". Experiments without trials are
        absent; with `unfinished_only`, so are Succeeded and Failed experiments (their
        status holds final counts). Backends override this with an aggregate query;
        this default reads every trial.
        """
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for exp in self.list_experiments(namespace):
            if unfinished_only and exp.status and exp.status.conditions and (
                exp.status.conditions[-1].type in ("Succeeded", "Failed")
            ):
                continue
            for trial in self.list_trials(exp.name, exp.namespace):
                per = counts.setdefault((exp.namespace, exp.name), {})
                key = trial.condition.value
                per[key] = per.get(key, 0) + 1
        return counts

    # --- observation logs (Katib's DBManager semantics) --------------------------
    @abc.abstractmethod
    def report_observation_log(self, trial_name: str, entries: Sequence[MetricLogEntry]) -> None:
        """Append observations. Steps left as None are numbered per (trial, metric) in order."""

    @abc.abstractmethod
    def get_observation_log(
        self,
        trial_name: str,
        metric_name: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> list[MetricLogEntry]:
        """Observations ordered by time, then by insertion order; the time range is inclusive."""

    @abc.abstractmethod
    def delete_observation_log(self, trial_name: str) -> None:
        """Delete every observation of a trial."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
