"""Where `KatibClient` sends its calls: one small contract, two backends.

`KatibClient` keeps Katib's verbs and their shapes (conditions, waiting, optimal trial,
success details) and asks a backend only for the few things that differ by wiring:
store, read, edit and delete experiments, read trials, observation logs and trial logs.

Contract every backend honours (both are run through the same tests in
tests/integration/test_sdk_client.py):
- `create_experiment` validates the whole spec (InvalidSpecError listing every problem
  with its field path, and its line for YAML text), refuses a name in use
  (AlreadyExistsError), starts the experiment running, and returns the stored,
  defaulted Experiment.
- Reads return fresh models (katib.api.models); an unknown experiment or trial raises
  NotFoundError naming namespace/name.
- `edit_experiment_budget` applies Katib's update rules (only the three counts change;
  maxTrialCount above the trials created; a completed experiment only when it may be
  restarted; InvalidSpecError with the field paths otherwise) and restarts a finished
  experiment whose budget grew.
- `delete_experiment` stops the experiment's controller and its running trials, then
  deletes it, its trials, observations and logs.
- Errors are from katib.errors only.

Backends by name: `BACKENDS` (embedded: this machine, no server; http: a `katib server`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from katib.api.models import Experiment, Trial


@dataclass(frozen=True)
class MetricValue:
    """A metric's name and value, as in Katib's `MetricLog.metric`."""

    name: str
    value: str


@dataclass(frozen=True)
class MetricLog:
    """One observation, shaped like Katib's `MetricLog` (`.time_stamp`, `.metric.name`,
    `.metric.value`), plus the report's `step` (its index among that metric's reports)."""

    time_stamp: str
    metric: MetricValue
    step: int | None = None


@dataclass(frozen=True)
class ExperimentDocument:
    """An experiment as the caller gave it: a parsed dict, or YAML/JSON text.

    `source` names the file (for messages), `directory` is where relative paths in the
    trial command resolve, `namespace` is an explicit override (None: the document's
    own, else the client's default).
    """

    body: dict[str, Any] | str
    source: str | None = None
    directory: Path | None = None
    namespace: str | None = None


class BaseBackend(abc.ABC):
    """The calls `KatibClient` needs; the contract is in the module docstring."""

    def __init__(self, default_namespace: str = "default") -> None:
        self.default_namespace = default_namespace

    @abc.abstractmethod
    def create_experiment(self, document: ExperimentDocument) -> Experiment:
        """Validate, store and start the experiment; return it as stored."""

    @abc.abstractmethod
    def get_experiment(self, name: str, namespace: str) -> Experiment:
        """The experiment with its current status."""

    @abc.abstractmethod
    def list_experiments(self, namespace: str | None) -> list[Experiment]:
        """Every experiment (of one namespace when given), oldest first."""

    @abc.abstractmethod
    def edit_experiment_budget(
        self,
        name: str,
        namespace: str,
        max_trial_count: int | None,
        parallel_trial_count: int | None,
        max_failed_trial_count: int | None,
    ) -> Experiment:
        """Change the counts given (at least one); return the updated experiment."""

    @abc.abstractmethod
    def delete_experiment(self, name: str, namespace: str) -> None:
        """Stop and delete the experiment with its trials."""

    @abc.abstractmethod
    def list_trials(self, experiment_name: str, namespace: str) -> list[Trial]:
        """The experiment's trials in creation order (NotFoundError for no experiment)."""

    @abc.abstractmethod
    def get_trial(self, name: str, namespace: str) -> Trial:
        """One trial."""

    @abc.abstractmethod
    def get_observation_log(
        self, trial_name: str, namespace: str, metric_name: str | None
    ) -> list[MetricLog]:
        """The trial's reported metrics in time order (NotFoundError for no trial)."""

    @abc.abstractmethod
    def get_trial_logs(self, trial_name: str, namespace: str, tail: int | None) -> str:
        """The trial's output (stdout and stderr), the last `tail` lines when given."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (the experiments keep running)."""


def _embedded() -> Callable[..., BaseBackend]:
    from katib.sdk._backend_embedded import EmbeddedBackend

    return EmbeddedBackend


def _http() -> Callable[..., BaseBackend]:
    from katib.sdk._backend_http import HttpBackend

    return HttpBackend


BACKENDS: dict[str, Callable[[], Callable[..., BaseBackend]]] = {
    "embedded": _embedded,
    "http": _http,
}
"""Backend name -> a loader of its class (loaded lazily: the http one needs httpx)."""
