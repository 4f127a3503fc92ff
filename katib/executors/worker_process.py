"""The worker side of katib.executors.worker_pool: one warm process running trial calls.

Started as `python -u -m katib.executors.worker_process FD --parent=PID [--preload=M]`,
it imports only what running a call needs (cloudpickle, the metric parsers), so it is
ready quickly and its resident memory starts small. It reads one message per trial
from the socket FD, runs the call with fds 1 and 2 on the trial's log, and answers with
the metrics (printed, reported, returned), the error if any and its RSS. It dies with
the pool's process (PR_SET_PDEATHSIG on Linux) and leaves when the socket closes.
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (Linux /proc), None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * _PAGE if len(fields) > 1 else None


_REPORTED: list[tuple[str, str, datetime]] | None = None


def _report_in_process(
    metrics: Mapping[str, Any], db_manager_address: str | None = None, timeout: float = 120
) -> None:
    """katib.report_metrics inside a worker: record for the running trial, no RPC."""
    from katib.errors import InvalidArgumentError

    if _REPORTED is None:
        raise InvalidArgumentError("report_metrics: no trial is running in this worker")
    if not metrics:
        raise InvalidArgumentError("report_metrics: no metrics given")
    stamp = datetime.now(UTC)
    entries = []
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"report_metrics: metric name {name!r} is not a string")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"report_metrics: value of {name} ({value!r}) is not a number"
            ) from None
        entries.append((name, repr(number) if math.isfinite(number) else str(number), stamp))
    _REPORTED.extend(entries)


def _returned_metrics(value: Any, objective: str) -> list[tuple[str, str]]:
    """A number -> the objective metric; a dict -> one metric per key; None -> nothing."""
    if value is None:
        return []
    items: list[tuple[Any, Any]]
    items = list(value.items()) if isinstance(value, Mapping) else [(objective, value)]
    result = []
    for name, raw in items:
        if isinstance(raw, (bool, str)):
            raise TypeError(f"the objective returned {name}={raw!r}, which is not a number")
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise TypeError(
                f"the objective returned {type(value).__name__} {value!r}: return a number, "
                "a dict of metric name to number, or None"
            ) from None
        result.append((str(name), repr(number) if math.isfinite(number) else str(number)))
    return result


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _run_one(
    message: Mapping[str, Any], functions: dict[str, Callable[..., Any]]
) -> dict[str, Any]:
    global _REPORTED
    trial = message["trial"]
    reply: dict[str, Any] = {"event": "done", "trial": trial, "metrics": [], "error": ""}
    log_fd = os.open(message["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.environ["KATIB_TRIAL_NAME"] = trial
    _REPORTED = []
    names: list[str] = message["names"]
    returned: Any = None
    try:
        function = functions.get(message["digest"])
        if function is None:
            import cloudpickle

            try:
                function = cloudpickle.loads(message["function"])
            except Exception as exc:
                raise RuntimeError(
                    f"cannot load the objective in the worker: {type(exc).__name__}: {exc}"
                ) from exc
            functions[message["digest"]] = function
        returned = function(message["params"])
        reply["metrics"] = [
            (n, v, datetime.now(UTC)) for n, v in _returned_metrics(returned, names[0] if names
                                                                     else "objective")
        ]
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        reply["exit_code"] = code
        if code:
            reply["error"] = f"SystemExit: the objective exited with code {code}"
    except BaseException as exc:
        traceback.print_exc()
        text = str(exc).strip().splitlines()
        reply["error"] = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    sys.stdout.flush()
    sys.stderr.flush()
    _quiet()  # output between trials (background threads) goes nowhere, not to this log
    reported, _REPORTED = _REPORTED, None
    metrics = list(reported or []) + list(reply["metrics"])
    if message["parse"] and names:
        from metrics_collector.parsers import TextParser

        parser = TextParser(names, message["filters"] or None)
        now = datetime.now(UTC)
        printed = []
        with open(message["log"], "rb") as log:
            for line in log:
                for parsed in parser.parse_bytes(line.rstrip(b"\n"), now):
                    printed.append((parsed.name, parsed.value, parsed.timestamp))
        metrics = printed + metrics
    reply["metrics"] = metrics
    reply["rss"] = rss_bytes(os.getpid())
    return reply


def _quiet() -> None:
    """Point fds 1 and 2 at /dev/null (each trial points them at its log meanwhile)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def main(argv: Sequence[str]) -> int:
    fd = int(argv[0])
    parent = next((int(a.split("=", 1)[1]) for a in argv[1:] if a.startswith("--parent=")), 0)
    _die_with_parent()
    if parent and os.getppid() != parent:
        return 0  # the pool's process died before we could ask to follow it
    for arg in argv[1:]:
        if arg.startswith("--preload="):
            __import__(arg.split("=", 1)[1])
    conn = Connection(fd)
    _quiet()
    import katib.sdk.report_metrics as reporting

    reporting.report_metrics = _report_in_process  # type: ignore[assignment]
    import cloudpickle  # noqa: F401 - imported once here, not in the first trial

    import metrics_collector.parsers  # noqa: F401

    functions: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            return 0
        conn.send({"event": "started", "trial": message["trial"]})
        reply = _run_one(message, functions)
        conn.send(reply)
        if "exit_code" in reply:
            return int(reply["exit_code"] or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
