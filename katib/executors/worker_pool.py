"""Trials as calls of a Python function in a pool of warm worker processes.

`tune()` runs a plain function per trial. Starting an interpreter and importing the
user's libraries for every trial would cost more than many trials do, so each worker
process is started once (`python -u -m katib.executors.worker_pool`), loads the
cloudpickled function once, and then runs one trial at a time. Isolation is per
process, not per trial, so a worker is replaced when its trial:

- raises (the trial fails with the exception's type and message; the worker lives on,
  a Python exception leaves the process usable),
- kills the process (os.abort, a segfault: the signal is named),
- runs past its per-trial timeout ("killed after N s"),
- makes the worker's resident memory exceed the limit, while running or at its end
  ("RSS exceeded"; a leak would otherwise pile up across trials).

The trial's stdout and stderr (file descriptors 1 and 2, so C extensions and child
processes are captured too) go to `<root>/<namespace>/<trial>/trial.log`. Metrics come
from three places, all stored as observations by the controller (TrialOutcome.unreported):
`name=value` lines in that output, parsed by metrics_collector.parsers with the
experiment's filters (StdOut collector); `katib.report_metrics({...})`, which in a worker
records in-process instead of calling DBManager; and the function's return value (a
number is the objective metric, a dict maps metric names to numbers).

Restarts: what a trial left on disk (katib.executors.trial_files: its directory, with
result.json empty from before the call and the outcome once it is final) lets a new
executor answer FINISHED or LOST (its pool died with the process that owned it, or its
observations died with the controller before they were stored). Per trial the
controller touches no disk, and a worker only appends to its journal unless the trial
printed or ran long; the pool turns what only a worker's files hold into trial
directories when it retires the worker (for trials not stored yet) or, after a crash,
when the next pool starts on the same root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from katib.api.models import CollectorKind, Experiment, Trial
from katib.errors import ExecutorError
from katib.executors import process_tree
from katib.executors.base import (
    BaseExecutor,
    LaunchContext,
    LaunchDeferredError,
    TrialOutcome,
    TrialPhase,
)
from katib.executors.trial_files import (
    LOG,
    MARKER,
    OUT,
    RESULT,
    keep_output,
    last_launched,
    mark_launched,
    recover,
    write_result,
)
from katib.executors.worker_process import missing_objective_reason
from katib.executors.worker_process import rss_bytes as _rss_bytes
from katib.storage.base import MetricLogEntry

#: Collector kinds a function trial supports: parsed output, or report_metrics only.
SUPPORTED_COLLECTORS = ("StdOut", "Push", "None")


@dataclass(frozen=True)
class FunctionSpec:
    """What a worker needs to run an experiment's trials."""

    function: bytes  # cloudpickle of the objective
    trial_timeout: float | None = None  # seconds per trial; None: no limit
    memory_limit_mb: float | None = None  # worker RSS limit; None: no limit

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.function).hexdigest()[:16]


def pickle_function(function: Callable[..., Any]) -> bytes:
    """cloudpickle the objective (closures and notebook functions go by value)."""
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(function))
    except Exception as exc:
        raise ExecutorError(
            f"the objective {getattr(function, '__qualname__', function)!r} cannot be sent to a "
            f"worker process: {type(exc).__name__}: {exc}"
        ) from None


def metric_plan(experiment: Experiment) -> tuple[list[str], list[str], bool]:
    """(metric names, filters, parse stdout?) for the experiment's collector spec."""
    spec = experiment.spec.metrics_collector_spec
    kind = str(spec.collector.kind) if spec and spec.collector and spec.collector.kind else ""
    kind = kind or str(CollectorKind.STDOUT)
    if kind not in SUPPORTED_COLLECTORS:
        raise ExecutorError(
            f"spec.metricsCollectorSpec.collector.kind: {kind!r} is not supported for a "
            f"function objective (use one of {', '.join(SUPPORTED_COLLECTORS)})"
        )
    objective = experiment.spec.objective
    names = [objective.objective_metric_name or ""] if objective else []
    names += list(objective.additional_metric_names or []) if objective else []
    filters = list(spec.source.filter.metrics_format or []) if spec and spec.source and (
        spec.source.filter
    ) else []
    return [n for n in names if n], filters, kind == "StdOut"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- the parent side -------------------------------------------------------------------


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection
    loaded: set[str] = field(default_factory=set)
    trial: str | None = None
    #: monotonic time the current trial's call began (None until the worker says so)
    started: float | None = None
    sent: float = 0.0
    dead: bool = False


@dataclass
class _Run:
    trial: Trial
    directory: Path
    spec: FunctionSpec
    names: list[str]
    filters: list[str]
    parse: bool
    worker: _Worker | None
    outcome: TrialOutcome | None = None
    #: the outcome is final without a store (nothing to store): the worker journaled it,
    #: or result.json holds it
    on_disk: bool = False
    #: the controller has stored the outcome (acknowledged): no file needs to say it
    stored: bool = False
    #: what the worker was sent (the function left out), to send it again elsewhere
    message: dict[str, Any] = field(default_factory=dict)
    #: sent again already, after a worker died before it began the trial
    resent: bool = False


class WorkerPoolExecutor(BaseExecutor):
    """Runs each trial as a call of its experiment's registered function in a warm worker."""

    name = "worker-pool"

    def __init__(
        self,
        root: Path,
        size: int = 1,
        *,
        preload: Sequence[str] = (),
        python: str | None = None,
    ) -> None:
        """``size``: most workers (so most trials running at once); ``preload``: modules
        each worker imports when it starts, before its first trial."""
        self.root = Path(root)
        self.size = max(1, size)
        self.preload = tuple(preload)
        self.python = python or sys.executable
        self._spares = self.root / ".spares"  # each worker's own files (trial_files)
        self._functions: dict[tuple[str, str], FunctionSpec] = {}
        self._workers: list[_Worker] = []
        self._runs: dict[str, _Run] = {}
        self._recover()

    # --- registration --------------------------------------------------------------------
    def register(
        self,
        namespace: str,
        experiment: str,
        function: Callable[..., Any] | bytes,
        *,
        trial_timeout: float | None = None,
        memory_limit_mb: float | None = None,
    ) -> None:
        """The function whose calls are the experiment's trials (pickled now, errors early)."""
        data = function if isinstance(function, bytes) else pickle_function(function)
        self._functions[(namespace, experiment)] = FunctionSpec(
            data, trial_timeout=trial_timeout, memory_limit_mb=memory_limit_mb
        )

    def resize(self, size: int) -> None:
        self.size = max(1, size)

    def prestart(self, count: int | None = None) -> None:
        """Start workers now so their imports overlap with the controller's start-up."""
        while len(self._live_workers()) < min(self.size, count or self.size):
            self._spawn()

    # --- paths ---------------------------------------------------------------------------
    def trial_dir(self, trial: Trial) -> Path:
        return self.root / trial.namespace / trial.name

    def log_path(self, trial: Trial) -> Path:
        return self.trial_dir(trial) / LOG

    def max_parallel(self, experiment: Experiment) -> int | None:
        return self.size

    # --- workers -------------------------------------------------------------------------
    def _live_workers(self) -> list[_Worker]:
        return [w for w in self._workers if not w.dead]

    def _spawn(self) -> _Worker:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        paths = [p or os.getcwd() for p in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        argv = [self.python, "-u", "-m", "katib.executors.worker_process", str(child_end.fileno())]
        argv += [f"--parent={os.getpid()}", f"--spares={self._spares}"]
        argv += [f"--preload={m}" for m in self.preload]
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                pass_fds=(child_end.fileno(),),
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            parent_end.close()
            raise ExecutorError(f"cannot start a worker process: {exc}") from None
        finally:
            child_end.close()
        worker = _Worker(process=process, conn=Connection(parent_end.detach()))
        self._workers.append(worker)
        return worker

    def _idle_worker(self) -> _Worker | None:
        for worker in self._live_workers():
            if worker.trial is not None:
                continue
            if worker.process.poll() is None:
                return worker
            # An idle worker that died (killed from outside, or its parent thread ended:
            # PR_SET_PDEATHSIG follows threads) is replaced, never waited for.
            self._retire(worker, replace=False)
        if len(self._live_workers()) < self.size:
            return self._spawn()
        return None

    def _retire(self, worker: _Worker, replace: bool = True) -> int | None:
        """Kill the worker's process group and forget it; its return code.

        A replacement starts at once (its imports overlap the next suggestion), so the
        next trial finds a warm worker.
        """
        if not worker.dead:
            worker.dead = True
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=10)
            worker.conn.close()
            self._workers = [w for w in self._workers if w is not worker]
            with contextlib.suppress(OSError):
                self._keep_unstored(worker)
            shutil.rmtree(self._spares / str(worker.process.pid), ignore_errors=True)
            if replace and len(self._live_workers()) < self.size:
                with contextlib.suppress(ExecutorError):  # the next launch says why
                    self._spawn()
        return worker.process.returncode

    # --- launch --------------------------------------------------------------------------
    def launch(self, trial: Trial, context: LaunchContext) -> None:
        if trial.name in self._runs:
            return
        directory = self.trial_dir(trial)
        if os.path.isdir(directory) and (
            (directory / MARKER).exists() or (directory / RESULT).exists()
        ):
            return
        key = (trial.namespace, context.experiment.name)
        spec = self._functions.get(key)
        if spec is None:
            raise ExecutorError(
                f"no function is registered for experiment {key[0]}/{key[1]}: its trials run "
                "only inside tune() (run the same tune() call again to resume it)"
            )
        names, filters, parse = metric_plan(context.experiment)
        worker = self._idle_worker()
        if worker is None:
            raise LaunchDeferredError(f"all {self.size} workers are busy")
        from katib.sdk.trial_rows import typed_value

        specs = {p.name: p for p in context.experiment.spec.parameters or []}
        params = {
            a.name: typed_value(a.value, specs.get(a.name))
            for a in trial.spec.parameter_assignments
        }
        message = {
            "trial": trial.name,
            "digest": spec.digest,
            "function": None,  # _send adds it for a worker that has not loaded it
            "params": params,
            "dir": str(directory),  # made only if the trial prints or runs long (trial_files)
            "names": names,
            "filters": filters,
            "parse": parse,
            "limit": spec.memory_limit_mb,
            "timed": spec.trial_timeout is not None,  # say when the call starts
        }
        run = _Run(trial, directory, spec, names, filters, parse, worker, message=message)
        self._runs[trial.name] = run
        self._send(run, worker)

    def _send(self, run: _Run, worker: _Worker) -> None:
        """Hand the run's trial to `worker` (with the function, unless it has it)."""
        message = dict(run.message)
        message["function"] = None if run.spec.digest in worker.loaded else run.spec.function
        run.worker = worker
        worker.trial, worker.started, worker.sent = run.trial.name, None, time.monotonic()
        try:
            worker.conn.send(message)
        except (OSError, ValueError):
            self._on_death(run)  # died before it could take the trial
            return
        worker.loaded.add(run.spec.digest)

    # --- poll ----------------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Block until a trial has ended (or its worker died), or timeout.

        A trial merely starting is read here and waited past: it needs no reconcile pass.
        """
        deadline = time.monotonic() + timeout
        while True:
            busy = {w.conn: w for w in self._live_workers() if w.trial is not None}
            remaining = deadline - time.monotonic()
            if not busy or remaining <= 0:
                if busy or remaining <= 0:
                    return
                time.sleep(remaining)
                return
            ready = wait(list(busy), remaining)
            if not ready:
                return
            for conn in ready:
                worker = busy[conn]  # type: ignore[index]
                trial = worker.trial
                self._pump(worker)
                run = self._runs.get(trial or "")
                if worker.dead or worker.trial != trial or (run and run.outcome is not None):
                    return

    def _pump(self, worker: _Worker) -> None:
        while not worker.dead:
            try:
                if not worker.conn.poll(0):
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                run = self._runs.get(worker.trial or "")
                if run is not None and run.outcome is None:
                    self._on_death(run)
                else:
                    self._retire(worker)
                return
            run = self._runs.get(message.get("trial", ""))
            if run is None or run.worker is not worker:
                continue
            if message["event"] == "started":
                worker.started = time.monotonic()
            elif message["event"] == "done":
                self._on_done(run, message)

    def poll(self, trial: Trial) -> TrialOutcome:
        run = self._runs.get(trial.name)
        if run is None:
            return self._from_files(trial)
        if run.outcome is None and run.worker is not None:
            self._pump(run.worker)
        if run.outcome is None and run.worker is not None:
            self._check_limits(run, run.worker)
        if run.outcome is not None:
            return run.outcome
        return TrialOutcome(TrialPhase.RUNNING)

    def _check_limits(self, run: _Run, worker: _Worker) -> None:
        if worker.process.poll() is not None:
            self._pump(worker)  # read a "done" it sent before exiting
            if run.outcome is None:
                self._on_death(run)
            return
        timeout = run.spec.trial_timeout
        if timeout is not None and worker.started is not None:
            elapsed = time.monotonic() - worker.started
            if elapsed > timeout:
                self._retire(worker)
                self._end(
                    run,
                    TrialOutcome(
                        TrialPhase.FINISHED,
                        signal=int(signal.SIGKILL),
                        message=f"killed after {elapsed:.1f} s: the trial timeout is "
                        f"{timeout:g} s",
                    ),
                    self._parse_log(run),
                )
                return
        limit = run.spec.memory_limit_mb
        if limit is not None:
            rss = _rss_bytes(worker.process.pid)
            if rss is not None and rss > limit * 2**20:
                self._retire(worker)
                self._end(
                    run,
                    TrialOutcome(
                        TrialPhase.FINISHED,
                        signal=int(signal.SIGKILL),
                        message=f"RSS exceeded: the worker used {rss / 2**20:.0f} MB, more than "
                        f"the limit of {limit:g} MB; it was killed and replaced",
                    ),
                    self._parse_log(run),
                )

    def _on_death(self, run: _Run) -> None:
        worker = run.worker
        # Its journal says whether it began the trial: one it never began (it died, or was
        # dying, when the trial was sent) goes to another worker, once.
        began = worker is None or last_launched(
            self._spares / str(worker.process.pid)
        ) == str(run.directory)
        code = self._retire(worker) if worker is not None else None
        if not began and not run.resent:
            run.resent = True
            other = self._idle_worker()
            if other is not None:
                self._send(run, other)
                return
        if code is not None and code < 0:
            outcome = TrialOutcome(
                TrialPhase.FINISHED,
                signal=-code,
                message=f"the worker process died from {_signal_name(-code)} while running "
                "the trial; it was replaced",
            )
        else:
            outcome = TrialOutcome(
                TrialPhase.FINISHED,
                exit_code=code if code else 1,
                message=f"the worker process exited with code {code} while running the "
                "trial; it was replaced",
            )
        self._end(run, outcome, self._parse_log(run))

    def _on_done(self, run: _Run, message: Mapping[str, Any]) -> None:
        """The worker's outcome record (worker_process.outcome_record) becomes the outcome."""
        worker = run.worker
        assert worker is not None
        worker.trial, worker.started = None, None
        outcome = _outcome(message["record"])
        self._end(run, outcome, outcome.unreported, written=message["written"])
        if message["exit"] or message["leaked"]:
            # SystemExit: the worker leaves after replying, like a process would; a worker
            # over its memory limit after the trial is replaced
            self._retire(worker)

    def _parse_log(self, run: _Run) -> list[MetricLogEntry]:
        """Metrics printed by a trial whose worker died or was killed before it replied."""
        if not run.parse or not run.names:
            return []
        from metrics_collector.parsers import TextParser

        parser = TextParser(run.names, run.filters or None)
        now = datetime.now(UTC)
        entries: list[MetricLogEntry] = []
        try:
            with open(run.directory / LOG, "rb") as log:
                for line in log:
                    for parsed in parser.parse_bytes(line.rstrip(b"\n"), now):
                        entries.append(
                            MetricLogEntry(parsed.name, parsed.value, parsed.timestamp)
                        )
        except OSError:
            return []
        return entries

    def _end(
        self,
        run: _Run,
        outcome: TrialOutcome,
        metrics: list[MetricLogEntry],
        written: bool = False,
    ) -> None:
        """``written``: the worker wrote result.json already."""
        outcome.unreported = metrics
        outcome.unreported_is_whole = True  # a function trial reports nothing to DBManager
        if outcome.exit_code == 0 and not outcome.signal and run.names:
            seen = {m.metric_name for m in metrics}
            if run.names[0] not in seen:
                outcome.metrics_reason = missing_objective_reason(run.parse)
        run.outcome = outcome
        if run.worker is not None and run.worker.trial == run.trial.name:
            run.worker.trial = None
        if not written and not metrics:
            self._write_result(run.directory, outcome)
            run.stored = True  # final on disk
        # else: final once the controller has stored the metrics (a crash in between
        # leaves the trial LOST, like one that was still running)
        run.on_disk = written or not metrics

    # --- state on disk -------------------------------------------------------------------
    @classmethod
    def _write_result(cls, directory: Path, outcome: TrialOutcome) -> None:
        cls._write_text(directory, json.dumps(_record(outcome)))

    @staticmethod
    def _write_text(directory: Path, text: str) -> None:
        write_result(str(directory), text, f"{RESULT}.{threading.get_ident()}.tmp")

    def _from_files(self, trial: Trial) -> TrialOutcome:
        directory = self.trial_dir(trial)
        if not os.path.isdir(directory):
            return TrialOutcome(TrialPhase.NOT_STARTED)
        try:
            record = json.loads((directory / RESULT).read_text())
        except (OSError, ValueError):
            # An empty (or cut-short) result.json: made before the call, no outcome yet.
            if (directory / RESULT).exists() or (directory / MARKER).exists():
                return TrialOutcome(
                    TrialPhase.LOST,
                    message="its worker pool ended with the process that ran it",
                )
            return TrialOutcome(TrialPhase.NOT_STARTED)
        return _outcome(record)

    def acknowledge(self, trial: Trial) -> None:
        run = self._runs.get(trial.name)
        if run is not None and run.outcome is not None:
            run.outcome.unreported = []
            run.outcome.unreported_is_whole = False  # what it reported is stored now
            run.stored = True
            if not run.on_disk and run.directory.is_dir():
                # It has a directory (it printed, or ran long): say there how it ended.
                # A quick silent trial has none; storage alone holds its outcome.
                run.on_disk = True
                self._write_result(run.directory, run.outcome)
            return
        outcome = self._from_files(trial)
        if outcome.phase == TrialPhase.FINISHED and (outcome.unreported or run is not None):
            outcome.unreported = []
            self._write_result(self.trial_dir(trial), outcome)

    def _keep_unstored(self, worker: _Worker) -> None:
        """Before a worker's files go: write, as trial directories, what only they hold
        and storage may not (see trial_files). A trial it was running gets its output
        and an empty result.json (LOST to a restart), like one whose observations are
        not stored yet; an outcome with nothing to store, its result.json."""
        files = self._spares / str(worker.process.pid)
        began = last_launched(files)
        for run in self._runs.values():
            if run.worker is not worker or run.stored:
                continue
            if run.outcome is None:
                if began != str(run.directory):
                    continue  # it never took the trial: not started, launched again
                mark_launched(str(run.directory))
                out = files / OUT
                if out.exists() and out.stat().st_size > 0:
                    keep_output(str(out), str(run.directory))
            elif run.outcome.unreported:
                mark_launched(str(run.directory))
            elif run.on_disk:
                self._write_result(run.directory, run.outcome)
                run.stored = True  # as good as stored: final, on disk

    def _recover(self) -> None:
        """Turn the files of workers that died with their pool into trial directories."""
        try:
            names = os.listdir(self._spares)
        except OSError:
            return
        for name in names:
            if not name.isdigit() or process_tree.is_alive(int(name), None):
                continue
            claimed = self._spares / f".{name}.{os.getpid()}"
            try:
                os.rename(self._spares / name, claimed)  # one recovering pool per worker
            except OSError:
                continue
            with contextlib.suppress(OSError):
                recover(claimed, f"{RESULT}.{os.getpid()}.tmp")
            shutil.rmtree(claimed, ignore_errors=True)

    # --- stop ----------------------------------------------------------------------------
    def stop(self, trial: Trial) -> None:
        run = self._runs.get(trial.name)
        if run is None or run.outcome is not None or run.worker is None:
            return
        self._pump(run.worker)
        if run.outcome is not None:
            return
        self._retire(run.worker)
        self._end(
            run,
            TrialOutcome(TrialPhase.FINISHED, signal=int(signal.SIGKILL), message="stopped"),
            self._parse_log(run),
        )

    def close(self) -> None:
        for worker in list(self._workers):
            self._retire(worker, replace=False)
        with contextlib.suppress(OSError):
            self._spares.rmdir()  # unless another pool's workers keep spares there


def _record(outcome: TrialOutcome) -> dict[str, Any]:
    """A finished trial's outcome as result.json holds it."""
    return {
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "message": outcome.message,
        "metrics_reason": outcome.metrics_reason,
        "unreported": [
            [m.metric_name, m.value, m.timestamp.isoformat()] for m in outcome.unreported
        ],
    }


def _outcome(record: Mapping[str, Any]) -> TrialOutcome:
    return TrialOutcome(
        TrialPhase.FINISHED,
        exit_code=record.get("exit_code"),
        signal=record.get("signal"),
        message=record.get("message", ""),
        metrics_reason=record.get("metrics_reason", ""),
        unreported=[
            MetricLogEntry(n, v, datetime.fromisoformat(t))
            for n, v, t in record.get("unreported", [])
        ],
    )
