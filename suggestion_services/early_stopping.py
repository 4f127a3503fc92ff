"""The contract every early-stopping algorithm implements, its plain data, and the name table.

Like suggestion algorithms, early-stopping algorithms never see protobuf or gRPC:
server.py turns a GetEarlyStoppingRules request into an `EarlyStoppingExperiment`
and `TrialRecord`s, and hands over an `ObservationSource` that reads observation
logs (over DBManager gRPC in the server, from memory in unit tests).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol

from katib.errors import InvalidArgumentError

from .base import ObjectiveType, SettingParser, TrialRecord
from .lazy_table import LazyTable


class Comparison(StrEnum):
    """How a rule compares a metric with its value; spelled as in the Trial CRD."""

    EQUAL = "equal"
    LESS = "less"
    GREATER = "greater"


@dataclass(frozen=True)
class EarlyStoppingRule:
    """Stop a trial once `name` compares to `value` as `comparison` says, from `start_step` on.

    `value` stays text, as it travels in the proto and the Trial CRD.
    """

    name: str
    value: str
    comparison: Comparison
    start_step: int


@dataclass(frozen=True)
class EarlyStoppingExperiment:
    """What an early-stopping algorithm knows about the experiment (rebuilt per request)."""

    name: str
    algorithm_name: str
    objective_type: ObjectiveType = ObjectiveType.MAXIMIZE
    objective_metric_name: str = ""
    additional_metric_names: tuple[str, ...] = ()
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoggedValue:
    """One row of an observation log, as DBManager returns it (time is RFC3339 text)."""

    time_stamp: str
    value: str


class ObservationSource(Protocol):
    """Reads a trial's observation log for one metric, in DBManager's order.

    `key` names the store (the request's db_manager_address) so caches never mix
    two stores' trials. Errors are katib.errors (UnavailableError when the store
    cannot be reached).
    """

    @property
    def key(self) -> str: ...

    def observation_log(self, trial_name: str, metric_name: str) -> Sequence[LoggedValue]: ...


class BaseEarlyStopping(abc.ABC):
    """An early-stopping algorithm (Katib's EarlyStopping service, one class per name).

    Contract (checked for every entry of EARLY_STOPPING by katib.testing.early_stopping):

    * Stateless: every call gets the whole experiment and every trial; an instance may
      be shared between threads and experiments, and a fresh instance (a restarted
      service) answers exactly as a warm one. A cache may make calls cheaper, never
      different.
    * ``validate_settings`` raises ``InvalidArgumentError`` with Katib's message for an
      unknown or bad setting (naming it); defaults apply to settings left out.
    * ``get_rules`` returns the rules every *new* trial must obey, possibly none (e.g.
      too little history yet). Rules name only the experiment's metrics, have
      ``start_step >= 1`` and a numeric ``value``; the same request gives the same rules.
    * ``get_rules`` reads observation logs only through `source`, and only for trials in
      the request; trials of any condition (running, failed, never reported) are allowed.
    """

    #: Name as in Experiment.spec.earlyStopping.algorithmName.
    name: ClassVar[str]
    #: Setting name -> parser; a parser raises InvalidArgumentError with Katib's message.
    settings_schema: ClassVar[Mapping[str, SettingParser]] = {}

    def parse_settings(self, settings: Mapping[str, str]) -> dict[str, object]:
        """Check every setting against `settings_schema`; unknown names are rejected."""
        parsed: dict[str, object] = {}
        for key, value in settings.items():
            parser = self.settings_schema.get(key)
            if parser is None:
                raise InvalidArgumentError(f"unknown setting {key} for algorithm {self.name}")
            parsed[key] = parser(value)
        return parsed

    def validate_settings(self, settings: Mapping[str, str]) -> None:
        """Reject bad settings before the experiment starts."""
        self.parse_settings(settings)

    @abc.abstractmethod
    def get_rules(
        self,
        experiment: EarlyStoppingExperiment,
        trials: Sequence[TrialRecord],
        source: ObservationSource,
    ) -> list[EarlyStoppingRule]:
        """The rules for the next trials (see the class docstring for the contract)."""


def int_setting(setting: str, minimum: int, message: str) -> SettingParser:
    """Parser for an int setting >= `minimum`; `message` is Katib's text for a small value."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError as exc:
            raise InvalidArgumentError(f"failed to validate {setting}({value}): {exc}") from None
        if number < minimum:
            raise InvalidArgumentError(message)
        return number

    return parse


#: earlyStopping.algorithmName (as in Experiment YAML) -> "module:Class", imported on use.
_TABLE: dict[str, str] = {
    "medianstop": "suggestion_services.medianstop:MedianStop",
}


EARLY_STOPPING: Mapping[str, type[BaseEarlyStopping]] = LazyTable[BaseEarlyStopping](_TABLE)


def get_early_stopping(name: str) -> type[BaseEarlyStopping]:
    """The class registered under `name` (Katib's message when there is none)."""
    if name not in _TABLE:
        raise InvalidArgumentError(f"unknown algorithm name {name}")
    return EARLY_STOPPING[name]
