"""The executor contract: where and how a trial's run spec becomes a running program.

An executor is told to launch a trial that the controller has already stored,
and is asked about it on every reconcile. The contract every member honours
(katib.testing.executors checks it):

- `launch` is idempotent. Calling it again for a trial that is running or has
  finished does nothing; a controller that died at any instant can call it again
  on restart without running the trial twice.
- `poll` never blocks for long and never raises for a trial it does not know; it
  answers NOT_STARTED, RUNNING, FINISHED (with the outcome) or LOST (it ran and
  vanished without an outcome, e.g. its machine died).
- `poll` works across controller restarts: state lives with the trial (files,
  Kubernetes objects), not in the executor's memory.
- `stop` ends a trial's whole process tree (or its objects) and is idempotent.
- Observations that the trial could not deliver to DBManager come back in
  `TrialOutcome.unreported`, for the controller to store before it decides.
- A trial carrying `spec.earlyStoppingRules` is watched by a collector that applies
  them; when it stopped the trial for them, the outcome says `early_stopped`.
- A RUNNING outcome may carry the collector's last heartbeat (`heartbeat`, with
  `watch_heartbeat` set when the trial's collector is known to send them). The
  controller, not the executor, decides when silence means the trial is lost: it
  compares successive values with its own clock, so clock skew between machines and
  a controller restart (which starts watching afresh) never fail a live trial.
- `launch` may raise `LaunchDeferredError` when the trial cannot start yet (e.g. it
  would share a metrics path with a running trial); the controller tries again on a
  later pass. `max_parallel` says ahead of time how many trials of an experiment can
  run at once, when the executor limits it.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from katib.api.models import Experiment, Trial
from katib.errors import ExecutorError
from katib.storage.base import MetricLogEntry

#: Seconds without a new heartbeat after which a running trial is declared lost.
HEARTBEAT_TIMEOUT_ENV = "KATIB_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_TIMEOUT = 30.0


def heartbeat_timeout(environ: Mapping[str, str] | None = None) -> float:
    """The configured heartbeat timeout (KATIB_HEARTBEAT_TIMEOUT, default 30 s); 0 disables."""
    raw = (os.environ if environ is None else environ).get(HEARTBEAT_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_HEARTBEAT_TIMEOUT
    except ValueError:
        raise ExecutorError(f"{HEARTBEAT_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    return max(0.0, value)


class LaunchDeferredError(ExecutorError):
    """The trial cannot start now but may later: leave it Created and launch it again."""


class TrialPhase(StrEnum):
    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    FINISHED = "Finished"
    LOST = "Lost"


@dataclass
class TrialOutcome:
    phase: TrialPhase
    exit_code: int | None = None
    signal: int | None = None
    message: str = ""
    unreported: list[MetricLogEntry] = field(default_factory=list)
    early_stopped: bool = False  # its collector stopped it because the rules held
    #: Why the collector found no finite objective value ("" if it found one or cannot tell).
    metrics_reason: str = ""
    #: When the trial's collector last showed it was alive (None: never, or unknown).
    heartbeat: datetime | None = None
    #: The collector sends heartbeats, so a heartbeat that stops changing means it is gone.
    watch_heartbeat: bool = False
    #: Every observation the trial made is in `unreported` (none reached storage another
    #: way), so the controller builds the observation without reading the stored log.
    unreported_is_whole: bool = False

    @property
    def succeeded(self) -> bool:
        return self.phase == TrialPhase.FINISHED and self.exit_code == 0


@dataclass
class LaunchContext:
    """What a trial needs besides its own spec."""

    experiment: Experiment
    db_manager_address: str
    db_manager_address_file: Path | None = None
    experiment_dir: Path | None = None  # where the Experiment file lives (relative paths)
    early_stopping_address: str | None = None  # EarlyStopping service (SetTrialStatus)


class BaseExecutor(abc.ABC):
    """Runs trials. See the module docstring for the contract."""

    name: ClassVar[str]

    @abc.abstractmethod
    def launch(self, trial: Trial, context: LaunchContext) -> None:
        """Start the trial unless it is already running or finished."""

    @abc.abstractmethod
    def poll(self, trial: Trial) -> TrialOutcome:
        """Where the trial is now."""

    @abc.abstractmethod
    def stop(self, trial: Trial) -> None:
        """End the trial's processes (or objects); no-op if not running."""

    def kill(self, trial: Trial) -> None:
        """End whatever is left of a trial whose collector is gone or hung, without grace.

        Called when the trial is declared lost; the default is `stop`.
        """
        self.stop(trial)

    def max_parallel(self, experiment: Experiment) -> int | None:
        """How many of the experiment's trials can run at once here (None: no limit)."""
        return None

    def prestart(self) -> None:  # noqa: B027 - optional hook
        """Start now what the first launch would wait for (warm workers, say)."""

    def acknowledge(self, trial: Trial) -> None:  # noqa: B027 - optional hook
        """The controller has stored `TrialOutcome.unreported`; do not return it again."""

    def log_path(self, trial: Trial) -> Path | None:
        """A file with the trial's output, if this executor keeps one."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; running trials keep running where the executor allows."""
