"""When a running trial's heartbeat has stopped for too long: the controller's side.

The executor reports the collector's last heartbeat (katib.executors.base); this
monitor decides with the controller's own monotonic clock, counting from the moment it
first saw the current value. So:

- clocks need not agree (the heartbeat's time is only compared with itself);
- a controller that was down, or a pass that took long, never fails a live trial: a
  fresh monitor starts counting when it first looks, and a value that changed between
  two looks, however far apart, is a sign of life;
- a slow collector that still beats now and then is never failed.

A trial whose collector never beat at all counts from the first look too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LostHeartbeat:
    """A trial declared lost: its last heartbeat (None: never) and the silence we saw."""

    last: datetime | None
    silent_for: float
    timeout: float

    def message(self) -> str:
        if self.last is None:
            since = "it never sent one"
        else:
            since = "last heartbeat at " + self.last.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            )
        return (
            "its metrics collector stopped sending heartbeats "
            f"({since}; unchanged for {self.silent_for:.1f}s, timeout {self.timeout:g}s); "
            "its processes were killed"
        )


class HeartbeatMonitor:
    """Remembers, per trial, the last heartbeat seen and when it was first seen."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._seen: dict[str, tuple[datetime | None, float]] = {}

    def observe(self, trial_name: str, beat: datetime | None) -> LostHeartbeat | None:
        """Record a look at a running trial; a LostHeartbeat once it has been silent too long."""
        if self.timeout <= 0:
            return None
        now = self._clock()
        previous = self._seen.get(trial_name)
        if previous is None or previous[0] != beat:
            self._seen[trial_name] = (beat, now)
            return None
        silent_for = now - previous[1]
        if silent_for < self.timeout:
            return None
        return LostHeartbeat(beat, silent_for, self.timeout)

    def forget(self, trial_name: str) -> None:
        """The trial is no longer running (finished, lost, or not started yet)."""
        self._seen.pop(trial_name, None)
