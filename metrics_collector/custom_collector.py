"""Katib's Custom collector kind, locally: the user's collector runs beside the trial.

In Katib the ``collector.customCollector`` container becomes the trial pod's sidecar,
shares its process namespace and its metrics volume, and reports observations itself
(usually through DBManager). Here its command runs as a process next to the trial
command, started just before it, with the trial's context in its environment:

=================================  ==================================================
``KATIB_TRIAL_NAME``               the trial
``KATIB_DB_MANAGER_ADDRESS``       DBManager ``HOST:PORT`` (``katib.report_metrics``
``KATIB_DB_MANAGER_ADDRESS_FILE``  reads both; the file wins, it follows restarts)
``KATIB_METRIC_NAMES``             comma separated, the objective first
``KATIB_METRICS_PATH``             ``source.fileSystemPath.path`` as seen locally
``KATIB_TRIAL_DIR``                the trial directory
``KATIB_TRIAL_LOG``                the trial's merged stdout/stderr
``KATIB_TRIAL_PID_FILE``           holds the trial command's pid once it started
=================================  ==================================================

Its standard input is a pipe that is closed when the trial command has ended (and its
output has been drained), so "read stdin to EOF" is how a local collector learns that
the trial is over. The wrapper then waits for it, up to a timeout; a collector that is
still running is stopped (SIGTERM, SIGKILL after the grace period). A non-zero exit, a
timeout or a failure to start is the trial's failure, as a failed sidecar fails the pod.
Its own output goes to ``custom-collector.log`` in the trial directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger("metrics_collector.custom")

CUSTOM_LOG = "custom-collector.log"
DEFAULT_TIMEOUT = 60.0
#: How much of the end of the collector's log goes into an error message.
TAIL_BYTES = 400


class CustomCollector:
    """One run of the user's collector command."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        own_group: bool,
        grace_period: float = 5.0,
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.own_group = own_group
        self.grace_period = grace_period
        self.proc: subprocess.Popen[bytes] | None = None
        self.timed_out = False
        self.stopped = False

    def start(self) -> None:
        """Start it; OSError (not found, not executable) propagates to the caller."""
        with open(self.log_path, "ab", buffering=0) as out:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                close_fds=True,
                process_group=0 if self.own_group else None,
            )
        log.info("custom collector %s started as pid %d", self.command, self.proc.pid)

    def trial_ended(self) -> None:
        """Tell it the trial is over: EOF on its stdin."""
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def wait(self, timeout: float, interrupted: Callable[[], bool]) -> None:
        """Wait up to ``timeout`` s for it to exit; stop it when late or ``interrupted()``."""
        proc = self.proc
        if proc is None:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        while proc.poll() is None:
            if interrupted():
                self.stop()
                return
            if time.monotonic() >= deadline:
                self.timed_out = True
                log.warning("custom collector still running %.0fs after the trial", timeout)
                self.stop()
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)
        log.info("custom collector exited with code %s", proc.returncode)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period; waits for it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.stopped = True
        self._signal(signal.SIGTERM)
        try:
            proc.wait(self.grace_period)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            proc.wait()

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.own_group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def error(self, timeout: float) -> str | None:
        """Why it counts as failed, or None when it exited 0 (or was stopped with the trial)."""
        if self.proc is None:
            return None
        if self.timed_out:
            return (
                f"custom metrics collector did not exit within {timeout:g}s after the trial "
                f"ended and was stopped{self._tail()}"
            )
        rc = self.proc.returncode
        if rc is None or rc == 0 or self.stopped:
            return None
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        return f"custom metrics collector {how}{self._tail()}"

    def _tail(self) -> str:
        try:
            size = self.log_path.stat().st_size
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, size - TAIL_BYTES))
                data = fh.read()
        except OSError:
            return ""
        lines = [ln for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
        return f" (last output: {lines[-1].strip()[:200]!r})" if lines else ""
