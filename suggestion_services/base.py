"""The contract every suggestion algorithm implements, and the plain data it sees.

Algorithms never see protobuf: server.py converts each request into an
`ExperimentInfo` and a sequence of `TrialRecord`s, so an algorithm can be unit
tested (and reused by the local controller) without gRPC.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from katib.errors import InvalidArgumentError

from .search_space import SearchSpace


class ObjectiveType(StrEnum):
    """Direction of the objective (UNKNOWN when the request left it unset)."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"
    UNKNOWN = "unknown"


class TrialCondition(StrEnum):
    """A trial's last condition, spelled as in the Trial CRD."""

    CREATED = "Created"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    KILLED = "Killed"
    FAILED = "Failed"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    EARLY_STOPPED = "EarlyStopped"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class ExperimentInfo:
    """What an algorithm knows about the experiment (rebuilt on every request)."""

    name: str
    algorithm_name: str
    search_space: SearchSpace
    objective_type: ObjectiveType = ObjectiveType.MAXIMIZE
    objective_metric_name: str = ""
    additional_metric_names: tuple[str, ...] = ()
    settings: Mapping[str, str] = field(default_factory=dict)
    parallel_trial_count: int = 0  # 0 when unset
    max_trial_count: int = 0  # 0 when unset


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One trial of the history: any condition, possibly without a metric value."""

    name: str
    assignments: Mapping[str, str]
    condition: TrialCondition = TrialCondition.CREATED
    objective_value: float | None = None

    @property
    def observed(self) -> bool:
        """Whether the trial may feed a model (Katib: Succeeded/EarlyStopped with a value)."""
        return self.objective_value is not None and self.condition in (
            TrialCondition.SUCCEEDED,
            TrialCondition.EARLY_STOPPED,
        )


@dataclass(frozen=True)
class Suggestion:
    """One new trial: its assignments in parameter order, optionally a name and labels."""

    assignments: dict[str, str]
    trial_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SuggestResult:
    """A reply: the suggestions plus the algorithm settings to echo back.

    Stateless algorithms that keep state across calls (hyperband-style) return
    it in `settings`; the controller feeds them back in the next request.
    """

    suggestions: list[Suggestion]
    settings: dict[str, str]


SettingParser = Callable[[str], object]


class BaseAlgorithm(abc.ABC):
    """A suggestion algorithm.

    Contract (checked for every registered algorithm by katib.testing.algorithms):

    * Instances may be built per request or cached and shared between threads and
      experiments; an algorithm keeps no state between calls. Every call receives
      the whole experiment and the whole trial history (trials of any condition,
      including trials it never suggested and trials without metrics).
    * ``validate_settings`` raises ``InvalidArgumentError`` with Katib's message,
      naming the offending setting, and also rejects search spaces the algorithm
      cannot handle.
    * ``suggest`` returns exactly ``n`` suggestions. Over a finite search space it
      returns fewer only when fewer than ``n`` unused points remain, and raises
      ``SearchSpaceExhaustedError`` when none remains (the controller accepts a
      short reply, and ends the experiment on OUT_OF_RANGE).
    * Deterministic: the same settings (random_state) and the same history give
      the same answer.
    * No duplicates within a batch, nor with any trial of the history, where the
      space allows it (continuous spaces make duplicates practically impossible).
    * ``warm_up`` (a classmethod, optional) prepares what later calls need and is slow
      to load, typically heavy imports. The service calls it in a background thread
      once it listens, so it may run concurrently with any call; it must not change
      any answer, and a call that needs what it loads must wait for it (the import
      lock does that for imports) rather than fail.
    """

    #: Registry name, as in Experiment.spec.algorithm.algorithmName.
    name: ClassVar[str]
    #: Setting name → parser; a parser raises InvalidArgumentError with Katib's message.
    settings_schema: ClassVar[Mapping[str, SettingParser]] = {}
    #: True when the algorithm needs every parameter to be finite (e.g. grid).
    requires_finite_space: ClassVar[bool] = False
    #: Contract checks that cannot apply to this algorithm, name → reason (names are
    #: listed in katib.testing.algorithms.CONTRACT_EXEMPTIONS, e.g. "exact_count" for an
    #: algorithm that sizes its own batches). The contract skips them, printing the reason.
    contract_exemptions: ClassVar[Mapping[str, str]] = {}

    def parse_settings(self, experiment: ExperimentInfo) -> dict[str, object]:
        """Check every setting against `settings_schema`; unknown names are rejected."""
        parsed: dict[str, object] = {}
        for key, value in experiment.settings.items():
            parser = self.settings_schema.get(key)
            if parser is None:
                raise InvalidArgumentError(f"unknown setting {key} for algorithm {self.name}")
            parsed[key] = parser(value)
        return parsed

    def validate_settings(self, experiment: ExperimentInfo) -> None:
        """Reject bad settings (and unsupported search spaces) before the first trial."""
        self.parse_settings(experiment)

    @abc.abstractmethod
    def suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Suggestion]:
        """Return n new assignments (see the class docstring for the exact contract)."""

    @classmethod
    def warm_up(cls) -> None:
        """Load ahead what the first calls would load (see the contract); default: nothing."""
        return None

    def suggest_with_settings(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> SuggestResult:
        """What the server calls: suggestions plus the settings to echo (override to update)."""
        return SuggestResult(self.suggest(experiment, trials, n), dict(experiment.settings))


def non_negative_int(setting: str) -> SettingParser:
    """Parser for an int >= 0 setting such as random_state, with Katib's messages."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError as exc:
            raise InvalidArgumentError(f"failed to validate {setting}({value}): {exc}") from None
        if number < 0:
            raise InvalidArgumentError(f"{setting} should be great or equal than zero")
        return number

    return parse
