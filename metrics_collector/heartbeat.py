"""The collector's liveness signal: a file in the trial directory, rewritten every few seconds.

Why a file: the lock the local executor holds through the collector tells "alive or
dead", but not "hung" (a stopped or wedged collector keeps its lock). A heartbeat that
stops changing does, and it needs nothing but the trial directory, so a controller
restarted while trials run reads it like the old one did.

Where the collector is a Kubernetes sidecar and the controller runs elsewhere, the same
writer would renew a Lease (or the pod's own probes would do it); the controller side
only needs "when did this trial last show a sign of life", which an executor reports as
``TrialOutcome.heartbeat`` (katib.executors.base), and decides with its own clock.

This module is stdlib-only and cheap to import: the controller reads heartbeats with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

HEARTBEAT_FILE = "heartbeat"
#: Seconds between beats when nobody says otherwise (the controller's default timeout is 30).
DEFAULT_INTERVAL = 5.0
#: Never beat more often than this, whatever is asked (each beat is a small file write).
MIN_INTERVAL = 0.05

log = logging.getLogger("metrics_collector")


class HeartbeatWriter:
    """Rewrites ``<trial dir>/heartbeat`` every ``interval`` seconds from a daemon thread.

    The first beat is written synchronously by ``start()``. The file holds the beat's time
    and a sequence number (for people); readers use its modification time. Each beat
    replaces the file atomically, so a reader never sees it half written.
    """

    def __init__(self, trial_dir: Path, interval: float = DEFAULT_INTERVAL) -> None:
        self.path = Path(trial_dir) / HEARTBEAT_FILE
        self.interval = max(MIN_INTERVAL, float(interval))
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Write one beat now; an I/O error is logged, never raised (the trial goes on)."""
        self.beats += 1
        record = {
            "time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "pid": os.getpid(),
            "seq": self.beats,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write heartbeat %s: %s", self.path, exc)

    def start(self) -> HeartbeatWriter:
        """Beat once, then keep beating in the background until ``stop()``."""
        if self._thread is not None:
            return self
        self.beat()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        """Stop beating (the last beat stays on disk, for the record)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self.interval))
            self._thread = None

    def __enter__(self) -> HeartbeatWriter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def read_heartbeat(trial_dir: Path) -> datetime | None:
    """When the trial's collector last beat (UTC), or None if it never did."""
    with contextlib.suppress(OSError):
        mtime_ns = os.stat(Path(trial_dir) / HEARTBEAT_FILE).st_mtime_ns
        return datetime.fromtimestamp(mtime_ns / 1e9, UTC)
    return None


#: The collector's beat interval, set by the executor in the collector's environment.
INTERVAL_ENV = "KATIB_HEARTBEAT_INTERVAL"


def interval_for(timeout: float) -> float:
    """A beat interval that lets a timeout of ``timeout`` seconds miss three beats."""
    if timeout <= 0:
        return DEFAULT_INTERVAL
    return max(MIN_INTERVAL, min(DEFAULT_INTERVAL, timeout / 4))


def interval_from_env() -> float:
    """KATIB_HEARTBEAT_INTERVAL, or the default when unset or not a positive number."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL
