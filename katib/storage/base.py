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
- Errors are from katib.errors: NotFoundError, AlreadyExistsError, ConflictError,
  UnavailableError (the database cannot be reached; retryable), StorageError.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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
    def update_experiment_spec(self, experiment: Experiment) -> None:
        """Replace the stored spec (budget edits). NotFoundError if absent."""

    @abc.abstractmethod
    def update_experiment_status(
        self, name: str, namespace: str, status: ExperimentStatus
    ) -> None:
        """Replace the stored status. NotFoundError if absent."""

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
        """

    @abc.abstractmethod
    def release_experiment(self, name: str, namespace: str, owner: str) -> None:
        """Give up ownership if `owner` holds it."""

    @abc.abstractmethod
    def get_ownership(self, name: str, namespace: str) -> Ownership:
        """Current owner and its last heartbeat."""

    # --- trials ------------------------------------------------------------------
    @abc.abstractmethod
    def create_trials(self, experiment_name: str, namespace: str, trials: Sequence[Trial]) -> None:
        """Insert a batch of new trials atomically (all or none)."""

    @abc.abstractmethod
    def get_trial(self, name: str, namespace: str = "default") -> Trial:
        """One trial. NotFoundError if absent."""

    @abc.abstractmethod
    def list_trials(self, experiment_name: str, namespace: str = "default") -> list[Trial]:
        """The trials of an experiment in creation order."""

    @abc.abstractmethod
    def update_trial_status(self, trial: Trial) -> None:
        """Store `trial.status` (conditions, times, observation). NotFoundError if absent."""

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
