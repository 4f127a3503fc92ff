"""Suggestion services kept running between runtimes of one process.

A notebook calls tune() again and again; each call would otherwise start its
algorithm's service anew, and that start (a Python process importing numpy, grpc,
optuna and scipy) is about half a second, often more than the trials. A pool keeps
a service a runtime is done with for `idle_seconds`, and the next runtime asking
for the same algorithm takes it over. Services keep no state between requests
(every GetSuggestions carries the whole history), so a kept service answers as a
fresh one would. They still end with this process: a kept one is killed when it
idles too long, when the pool closes, at interpreter exit, and (--exit-with-parent)
when this process dies.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from dataclasses import dataclass

from .suggestion_client import SuggestionServiceProcess

#: How long an unused service is kept (joblib's workers idle for as long).
DEFAULT_IDLE_SECONDS = 300.0


@dataclass
class _Kept:
    service: SuggestionServiceProcess
    since: float


class SuggestionServicePool:
    """At most one idle service per algorithm, handed to the next runtime that asks."""

    def __init__(self, idle_seconds: float = DEFAULT_IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._kept: dict[str, _Kept] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Timer | None = None
        self._pid = os.getpid()
        atexit.register(self.close)

    def take(self, algorithm: str, log_path: str | None) -> SuggestionServiceProcess:
        """A kept live service of `algorithm`, or a new one (not started yet).

        A kept service goes on writing to the log of the runtime that started it.
        """
        with self._lock:
            kept = self._kept.pop(algorithm, None)
        if kept is not None and kept.service.running():
            return kept.service
        if kept is not None:
            kept.service.close()
        return SuggestionServiceProcess(algorithm, log_path)

    def give_back(self, service: SuggestionServiceProcess) -> None:
        """Keep `service` for the next runtime; close it if it is dead or one is kept."""
        if self.idle_seconds <= 0 or not service.running():
            service.close()
            return
        with self._lock:
            if service.algorithm in self._kept:
                surplus: SuggestionServiceProcess | None = service
            else:
                surplus = None
                self._kept[service.algorithm] = _Kept(service, time.monotonic())
                self._schedule_locked()
        if surplus is not None:
            surplus.close()

    def kept(self) -> list[str]:
        """Algorithms with a service kept now."""
        with self._lock:
            return sorted(self._kept)

    def _schedule_locked(self) -> None:
        if self._reaper is not None or not self._kept:
            return
        due = min(k.since for k in self._kept.values()) + self.idle_seconds
        self._reaper = threading.Timer(max(0.0, due - time.monotonic()), self._reap)
        self._reaper.daemon = True  # never keeps the interpreter waiting
        self._reaper.start()

    def _reap(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._reaper = None
            expired = [
                a for a, k in self._kept.items() if now - k.since >= self.idle_seconds
            ]
            gone = [self._kept.pop(a).service for a in expired]
            self._schedule_locked()
        for service in gone:
            service.close()

    def close(self) -> None:
        """Kill every kept service (not from a forked child: they are its parent's)."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            gone = [k.service for k in self._kept.values()]
            self._kept.clear()
            if self._reaper is not None:
                self._reaper.cancel()
                self._reaper = None
        for service in gone:
            service.close()


#: The pool tune() uses: one per process.
SHARED_POOL = SuggestionServicePool()
