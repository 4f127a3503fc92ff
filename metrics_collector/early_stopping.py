"""Early-stopping rules as the collector applies them while a trial's metrics stream in.

Katib's file-metricscollector semantics (reference 4.3): for the objective metric the
value compared is the best so far (max when maximizing, min when minimizing), other
metrics are compared as reported; a rule is looked at only once its metric has been
reported `start_step` times; a rule that held once stays satisfied (Katib deletes it
from its list); the trial is stopped when every rule has held.

Rules travel on the command line as Katib's sidecar flag does: ``name;value;comparison;
start_step`` with comparison ``equal``, ``less`` or ``greater`` (any case).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("metrics_collector.early_stopping")

COMPARISONS = ("equal", "less", "greater")
#: How long the SetTrialStatus notification may take; the trial is already stopped.
NOTIFY_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class StopRule:
    """One rule: stop when `name` compares to `value` as `comparison` says."""

    name: str
    value: float
    comparison: str
    start_step: int

    @classmethod
    def parse(cls, text: str) -> StopRule:
        """Parse ``name;value;comparison;start_step``; ValueError with the reason if bad."""
        parts = text.rsplit(";", 3)
        if len(parts) != 4 or not parts[0]:
            raise ValueError(f"stop rule {text!r} is not name;value;comparison;start_step")
        name, value_text, comparison, step_text = parts
        try:
            value = float(value_text)
        except ValueError:
            raise ValueError(f"stop rule {text!r}: value {value_text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"stop rule {text!r}: value must be finite")
        comparison = comparison.strip().lower()
        if comparison not in COMPARISONS:
            raise ValueError(
                f"stop rule {text!r}: comparison must be one of {', '.join(COMPARISONS)}"
            )
        try:
            start_step = int(step_text) if step_text.strip() else 1
        except ValueError:
            raise ValueError(
                f"stop rule {text!r}: start_step {step_text!r} is not an int"
            ) from None
        return cls(name, value, comparison, max(start_step, 1))

    def format(self) -> str:
        return f"{self.name};{self.value!r};{self.comparison};{self.start_step}"

    def holds(self, value: float) -> bool:
        if self.comparison == "less":
            return value < self.value
        if self.comparison == "greater":
            return value > self.value
        return value == self.value


class RuleChecker:
    """Feeds on (name, value) reports; says when every rule has held."""

    def __init__(self, rules: Iterable[StopRule], objective: str, maximize: bool) -> None:
        self.pending = list(rules)
        self.objective = objective
        self.maximize = maximize
        self.counts: dict[str, int] = {}
        self.best: float | None = None
        self.reasons: list[str] = []
        self.triggered = False

    @property
    def active(self) -> bool:
        """True while there are rules left to satisfy (no rules: never stops anything)."""
        return bool(self.pending) and not self.triggered

    def observe(self, reports: Iterable[tuple[str, str]]) -> bool:
        """Take reports in order; True exactly once, when the last pending rule holds."""
        if not self.active:
            return False
        for name, text in reports:
            try:
                value = float(text)
            except ValueError:
                continue
            if not math.isfinite(value):
                continue
            self.counts[name] = count = self.counts.get(name, 0) + 1
            if name == self.objective:
                if self.best is None or (value > self.best if self.maximize else value < self.best):
                    self.best = value
                value = self.best
            for rule in [r for r in self.pending if r.name == name]:
                if count >= rule.start_step and rule.holds(value):
                    self.pending.remove(rule)
                    which = "best so far " if name == self.objective else ""
                    self.reasons.append(
                        f"{name} {which}{value:g} is {rule.comparison} than {rule.value:g} "
                        f"after {count} reports"
                        if rule.comparison != "equal"
                        else f"{name} {which}{value:g} equals {rule.value:g} after {count} reports"
                    )
            if not self.pending:
                self.triggered = True
                return True
        return False

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def notify_stopped(address: str, trial_name: str) -> bool:
    """Tell the EarlyStopping service (SetTrialStatus) that the trial was stopped.

    Best effort, as the result file already records it; True when the call succeeded.
    gRPC is imported here, only when a trial was actually stopped.
    """
    import grpc

    from katib.apis.v1beta1 import api_pb2, api_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            api_pb2_grpc.EarlyStoppingStub(channel).SetTrialStatus(
                api_pb2.SetTrialStatusRequest(trial_name=trial_name),
                timeout=NOTIFY_TIMEOUT_SECONDS,
                wait_for_ready=True,
            )
    except grpc.RpcError as exc:
        log.warning("SetTrialStatus(%s) at %s failed: %s", trial_name, address, exc)
        return False
    return True
