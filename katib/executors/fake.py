"""An in-memory executor for tests of controllers and of users' own code.

Each launched trial "runs" for a number of polls and then finishes with the
exit code and metrics that `behaviour` chose for its assignments. Metrics come
back through `TrialOutcome.unreported`, the same path a collector's spool takes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from katib.api.models import Trial
from katib.executors.base import BaseExecutor, LaunchContext, TrialOutcome, TrialPhase
from katib.storage.base import MetricLogEntry


@dataclass
class FakeRun:
    """What a fake trial does: how long it runs, how it ends, what it reports."""

    metrics: Sequence[tuple[str, str]] = ()
    exit_code: int = 0
    polls: int = 1
    lost: bool = False


@dataclass
class _State:
    run: FakeRun
    polls_left: int
    stopped: bool = False
    launched_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _default_behaviour(assignments: Mapping[str, str]) -> FakeRun:
    return FakeRun(metrics=[])


class FakeExecutor(BaseExecutor):
    name = "fake"

    def __init__(self, behaviour: Callable[[Mapping[str, str]], FakeRun] | None = None) -> None:
        self.behaviour = behaviour or _default_behaviour
        self.trials: dict[str, _State] = {}
        self.launches: list[str] = []
        self.max_running = 0

    def running(self) -> int:
        return sum(1 for s in self.trials.values() if s.polls_left > 0 and not s.stopped)

    def launch(self, trial: Trial, context: LaunchContext) -> None:
        if trial.name in self.trials:
            return
        run = self.behaviour(trial.assignments)
        self.trials[trial.name] = _State(run=run, polls_left=max(run.polls, 0))
        self.launches.append(trial.name)
        self.max_running = max(self.max_running, self.running())

    def poll(self, trial: Trial) -> TrialOutcome:
        state = self.trials.get(trial.name)
        if state is None:
            return TrialOutcome(TrialPhase.NOT_STARTED)
        if state.stopped:
            return TrialOutcome(TrialPhase.FINISHED, exit_code=None, signal=15, message="stopped")
        if state.polls_left > 0:
            state.polls_left -= 1
            return TrialOutcome(TrialPhase.RUNNING)
        if state.run.lost:
            return TrialOutcome(TrialPhase.LOST, message="fake trial lost")
        entries = [
            MetricLogEntry(metric_name=name, value=value, timestamp=state.launched_at)
            for name, value in state.run.metrics
        ]
        outcome = TrialOutcome(
            TrialPhase.FINISHED,
            exit_code=state.run.exit_code,
            message="" if state.run.exit_code == 0 else f"exit code {state.run.exit_code}",
            unreported=entries,
        )
        return outcome

    def acknowledge(self, trial: Trial) -> None:
        """The spool is stored: later polls return no metrics (as a real executor's)."""
        state = self.trials.get(trial.name)
        if state is not None:
            state.run = FakeRun(exit_code=state.run.exit_code)

    def stop(self, trial: Trial) -> None:
        state = self.trials.get(trial.name)
        if state is not None and state.polls_left > 0:
            state.stopped = True
