"""The worker side of katib.executors.worker_pool: one warm process running trial calls.

Started as `python -u -m katib.executors.worker_process FD --parent=PID [--spares=DIR]
[--preload=M]`, it imports only what running a call needs (cloudpickle, the metric
parsers), so it is ready quickly and its resident memory starts small. It reads one
message per trial from the socket FD, runs the call with fds 1 and 2 on its output
file, and answers with the outcome record (metrics printed, reported and returned, the
error if any) and its RSS. It dies with the pool's process (PR_SET_PDEATHSIG on Linux)
and leaves when the socket closes.

The trial's files are the worker's job, so the pool's process (the controller) touches
no disk per trial; katib.executors.trial_files says which files, and why a quick trial
that prints nothing makes none.
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from katib.executors.trial_files import WorkerFiles

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


def missing_objective_reason(parse: bool) -> str:
    """Why a trial that succeeded has no value for its objective metric."""
    return "the function returned no value for it, did not call report_metrics with it" + (
        ", and printed no line with it" if parse else ""
    )


def outcome_record(
    reply: Mapping[str, Any], names: Sequence[str], parse: bool, limit_mb: float | None
) -> tuple[dict[str, Any], bool]:
    """The trial's outcome as result.json holds it, and whether the worker must be replaced.

    Replaced: the memory limit is exceeded after the trial (a leak would pile up).
    """
    metrics: list[tuple[str, str, datetime]] = reply["metrics"]
    error: str = reply.get("error") or ""
    rss: int | None = reply.get("rss")
    code: int | None = reply.get("exit_code")
    record: dict[str, Any] = {"exit_code": 0, "signal": None, "message": "", "metrics_reason": ""}
    leaked = limit_mb is not None and rss is not None and rss > limit_mb * 2**20
    if leaked:
        record["exit_code"] = 1
        record["message"] = (
            f"RSS exceeded: the worker held {(rss or 0) / 2**20:.0f} MB after the trial, "
            f"more than the limit of {limit_mb:g} MB (a leak?); it was replaced"
        )
    elif error:
        record["exit_code"] = code if code else 1
        record["message"] = error
    elif names and names[0] not in {m[0] for m in metrics}:
        record["metrics_reason"] = missing_objective_reason(parse)
    record["unreported"] = [[n, v, t.isoformat()] for n, v, t in metrics]
    return record, leaked


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _run_one(
    message: Mapping[str, Any], functions: dict[str, Callable[..., Any]], files: WorkerFiles
) -> dict[str, Any]:
    global _REPORTED
    trial = message["trial"]
    reply: dict[str, Any] = {"event": "done", "trial": trial, "metrics": [], "error": ""}
    files.begin(message["dir"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(files.out_fd, 1)
    os.dup2(files.out_fd, 2)
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
    log = files.end()  # None: it printed nothing
    reported, _REPORTED = _REPORTED, None
    metrics = list(reported or []) + list(reply["metrics"])
    if message["parse"] and names and log is not None:
        from metrics_collector.parsers import TextParser

        parser = TextParser(names, message["filters"] or None)
        now = datetime.now(UTC)
        printed = []
        with open(log, "rb") as lines:
            for line in lines:
                for parsed in parser.parse_bytes(line.rstrip(b"\n"), now):
                    printed.append((parsed.name, parsed.value, parsed.timestamp))
        metrics = printed + metrics
    reply["metrics"] = metrics
    # Only a memory limit reads it (outcome_record): /proc costs a few syscalls per trial.
    reply["rss"] = rss_bytes(os.getpid()) if message["limit"] is not None else None
    return reply


_NULL: list[int] = []  # one descriptor of /dev/null, opened on first use


def _quiet() -> None:
    """Point fds 1 and 2 at /dev/null (each trial points them at its log meanwhile)."""
    if not _NULL:
        _NULL.append(os.open(os.devnull, os.O_WRONLY))
    os.dup2(_NULL[0], 1)
    os.dup2(_NULL[0], 2)


def main(argv: Sequence[str]) -> int:
    fd = int(argv[0])
    parent = next((int(a.split("=", 1)[1]) for a in argv[1:] if a.startswith("--parent=")), 0)
    spares = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--spares=")), None)
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

    files = WorkerFiles(os.path.join(spares or tempfile.mkdtemp(), str(os.getpid())))
    files.watch()
    functions: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            return 0
        if message["timed"]:
            conn.send({"event": "started", "trial": message["trial"]})
        reply = _run_one(message, functions, files)
        record, leaked = outcome_record(
            reply, message["names"], message["parse"], message["limit"]
        )
        # Nothing for the controller to store: the outcome is final (journaled for a
        # restart). Else the controller's storage is where it lasts.
        written = not record["unreported"]
        if written:
            files.result(message["dir"], record)
        conn.send(
            {
                "event": "done",
                "trial": message["trial"],
                "record": record,
                "written": written,
                "leaked": leaked,
                "exit": "exit_code" in reply,
            }
        )
        if "exit_code" in reply:
            return int(reply["exit_code"] or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
