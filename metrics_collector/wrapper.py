"""Run a trial's command, log its output, parse metrics from it and report them.

This is the local stand-in for Katib's StdOut metrics-collector sidecar, but as a
wrapper: the command's merged stdout/stderr flows through this process, is appended to
``trial.log`` unchanged, and is parsed as it arrives (not once at the end), so metrics
reach the DBManager while the trial runs. The controller learns how the command ended
from ``result.json``, written atomically once everything has been flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, BinaryIO

from katib.errors import KatibError
from metrics_collector.early_stopping import RuleChecker, StopRule, notify_stopped
from metrics_collector.parsers import PARSE_HEAD_BYTES, TextParser, split_metric_names
from metrics_collector.result import (
    COLLECTOR_LOG,
    COLLECTOR_PID,
    RESULT_FILE,
    TRIAL_LOG,
    TRIAL_PID,
    UNREPORTED_FILE,
    TrialResult,
    utc_now_iso,
)

if TYPE_CHECKING:
    from metrics_collector.reporter import Reporter

log = logging.getLogger("metrics_collector")

READ_CHUNK = 64 * 1024
#: A partial line longer than this is parsed (head only) and the rest skipped to its newline.
MAX_PENDING_BYTES = 1024 * 1024
#: After the command exits, how long to keep reading output held open by its children.
DRAIN_TIMEOUT = 2.0
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


class LineAssembler:
    """Splits a byte stream into lines with a bounded buffer.

    Lines come out without their newline and trailing CR, cut to ``parse_head`` bytes
    (only the head of a long line is parsed). A partial line that grows past
    ``max_pending`` is emitted (head only) and the rest is skipped up to the next newline,
    so a 10 MB line without a newline costs at most ``max_pending`` bytes of memory.
    """

    def __init__(
        self, max_pending: int = MAX_PENDING_BYTES, parse_head: int = PARSE_HEAD_BYTES
    ) -> None:
        self.max_pending = max(parse_head, max_pending)
        self.parse_head = parse_head
        self._pending = bytearray()
        self._discarding = False

    def feed(self, data: bytes, want: Callable[[bytes], bool] | None = None) -> list[bytes]:
        """Return the lines completed by ``data``; ``want`` may veto a whole block cheaply."""
        out: list[bytes] = []
        start = 0
        if self._discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return out
            self._discarding = False
            start = nl + 1
        last = data.rfind(b"\n")
        if last >= start:
            if self._pending:
                first = data.find(b"\n", start)
                self._pending += data[start:first]
                out.append(bytes(self._pending[: self.parse_head + 1]))
                self._pending.clear()
                start = first + 1
            if last >= start:
                block = data[start:last]
                if want is None or want(block):
                    out.extend(block.split(b"\n"))
            start = last + 1
        if start < len(data):
            self._pending += data[start:]
            if len(self._pending) > self.max_pending:
                out.append(bytes(self._pending[: self.parse_head + 1]))
                self._pending.clear()
                self._discarding = True
        return [self._clean(line) for line in out]

    def finish(self) -> list[bytes]:
        """The last line when the stream ended without a newline."""
        if self._discarding or not self._pending:
            self._pending.clear()
            return []
        line = bytes(self._pending)
        self._pending.clear()
        return [self._clean(line)]

    def _clean(self, line: bytes) -> bytes:
        if len(line) > self.parse_head:
            return line[: self.parse_head]
        return line[:-1] if line.endswith(b"\r") else line


@dataclass
class CollectorConfig:
    """Everything the wrapper needs; built from the command line."""

    trial_name: str
    metric_names: list[str]
    trial_dir: Path
    command: list[str]
    db_manager_address: str | None = None
    db_manager_address_file: Path | None = None
    filters: list[str] = field(default_factory=list)
    batch_size: int = 100
    flush_interval: float = 1.0
    max_buffer: int = 100_000
    final_flush_timeout: float = 10.0
    grace_period: float = 5.0
    echo: bool = False
    stop_rules: list[StopRule] = field(default_factory=list)
    objective_type: str = "maximize"
    early_stopping_address: str | None = None


class _Stopper:
    """Records the first SIGTERM/SIGINT; the main loop does the actual work."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum


def _group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` other than ours (Linux /proc)."""
    me = os.getpid()
    pids: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields_ = stat[stat.rfind(b")") + 2 :].split()
        if len(fields_) > 2 and int(fields_[2]) == pgid and fields_[0] != b"Z":
            pids.append(int(entry))
    return pids


class Wrapper:
    """One run of one trial command."""

    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.trial_dir
        self.objective = cfg.metric_names[0]
        self.metrics_count = 0
        self.objective_seen = False
        self._stopper = _Stopper()
        self._proc: subprocess.Popen[bytes] | None = None
        self._shared_group = False
        self._term_sent_at: float | None = None
        self._killed = False
        self._rules = RuleChecker(
            cfg.stop_rules, self.objective, maximize=cfg.objective_type != "minimize"
        )
        #: Set when every early-stopping rule held; the trial is then stopped like on SIGTERM.
        self.early_stop_reason: str | None = None

    @property
    def _stopping(self) -> bool:
        """A stop was asked for: by a signal to us, or by the early-stopping rules."""
        return self._stopper.signum is not None or self.early_stop_reason is not None

    def run(self) -> int:
        """Run the command to the end; return the wrapper's exit code."""
        self.dir.mkdir(parents=True, exist_ok=True)
        result = TrialResult(started_at=utc_now_iso())
        old = {s: signal.signal(s, self._stopper) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            parser = TextParser(self.cfg.metric_names, self.cfg.filters or None)
        except KatibError as exc:
            result.error = str(exc)
            return self._finish(result, None)
        with open(self.dir / TRIAL_LOG, "ab", buffering=0) as trial_log:
            try:
                self._start(trial_log)
            except OSError as exc:
                result.exit_code, result.error = self._start_error(exc)
                log.error("%s", result.error)
                trial_log.write(f"katib-metrics-collector: {result.error}\n".encode())
                return self._finish(result, None)
            # gRPC is imported once the trial runs, so the import overlaps the trial's start-up
            from metrics_collector.reporter import Reporter

            reporter = Reporter(
                self.cfg.trial_name,
                self.cfg.db_manager_address,
                self.cfg.db_manager_address_file,
                batch_size=self.cfg.batch_size,
                flush_interval=self.cfg.flush_interval,
                max_buffer=self.cfg.max_buffer,
                spool_path=self.dir / UNREPORTED_FILE,
            )
            try:
                self._pump(parser, reporter, trial_log)
            except Exception as exc:  # keep going: the child must still be reaped and reported
                log.exception("collector failure")
                result.error = f"collector failure: {exc}"
                self._stop_child(force=True)
            finally:
                self._finish_stop()
                reporter.close(self.cfg.final_flush_timeout)
                log.info(
                    "delivered %d metric(s), %d unreported",
                    reporter.delivered,
                    reporter.unreported_count,
                )
            if reporter.unreported_path is not None:
                result.unreported = UNREPORTED_FILE
        for s, handler in old.items():
            signal.signal(s, handler)
        code = self._finish(result, self._proc)
        if result.early_stopped and self.cfg.early_stopping_address:
            notify_stopped(self.cfg.early_stopping_address, self.cfg.trial_name)
        return code

    # -- process control ---------------------------------------------------------

    def _start(self, trial_log: BinaryIO) -> None:
        env = dict(os.environ)
        env["KATIB_TRIAL_NAME"] = self.cfg.trial_name
        # Normally the controller made us a group leader and the command joins our group,
        # so killing the group kills everything. Otherwise give the command its own group
        # rather than signalling a group we do not own (e.g. a shell or a test runner).
        self._shared_group = os.getpgrp() == os.getpid()
        self._proc = subprocess.Popen(
            self.cfg.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            process_group=None if self._shared_group else 0,
        )
        (self.dir / TRIAL_PID).write_text(f"{self._proc.pid}\n", encoding="utf-8")
        log.info(
            "started %s as pid %d (shared group: %s)",
            self.cfg.command,
            self._proc.pid,
            self._shared_group,
        )

    def _start_error(self, exc: OSError) -> tuple[int, str]:
        cmd = self.cfg.command[0]
        if isinstance(exc, FileNotFoundError):
            return EXIT_NOT_FOUND, f"command not found: {cmd}"
        if isinstance(exc, PermissionError):
            return EXIT_NOT_EXECUTABLE, f"command not executable: {cmd}"
        return EXIT_NOT_EXECUTABLE, f"cannot start {cmd}: {exc}"

    def _signal_group(self, sig: int) -> None:
        proc = self._proc
        if proc is None:
            return
        if self._shared_group:
            targets = _group_members(os.getpgrp())
            if not targets and proc.poll() is None:
                targets = [proc.pid]
            for pid in targets:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def _stop_child(self, force: bool = False) -> None:
        """Forward a stop: SIGTERM to the group, SIGKILL after the grace period."""
        now = time.monotonic()
        if self._term_sent_at is None:
            if self.early_stop_reason is not None and self._stopper.signum is None:
                log.info("early stopping the trial command: %s", self.early_stop_reason)
            else:
                log.info("stopping trial command (signal %s)", self._stopper.signum)
            self._signal_group(signal.SIGTERM)
            self._term_sent_at = now
        if not self._killed and (force or now - self._term_sent_at >= self.cfg.grace_period):
            log.warning("trial command still running; sending SIGKILL to its group")
            self._signal_group(signal.SIGKILL)
            self._killed = True
        if force and self._proc is not None:
            self._proc.wait()

    def _group_alive(self) -> bool:
        """Does any live (non-zombie) process of the trial's group remain?"""
        if self._proc is None:
            return False
        pgid = os.getpgrp() if self._shared_group else self._proc.pid
        if os.path.isdir("/proc"):
            return bool(_group_members(pgid))
        try:
            os.killpg(pgid, 0)  # counts zombies too; only a fallback
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _finish_stop(self) -> None:
        """After a stop request, make sure nothing of the trial outlives the grace period."""
        if not self._stopping or self._killed:
            return
        if self._proc is not None and self._proc.poll() is None:
            self._stop_child()
        while self._group_alive() and not self._killed:
            self._stop_child()
            time.sleep(0.05)

    # -- output ------------------------------------------------------------------

    def _pump(self, parser: TextParser, reporter: Reporter, trial_log: BinaryIO) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        assembler = LineAssembler()
        echo = sys.stdout.buffer if self.cfg.echo else None
        fd = proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        exited_at: float | None = None
        eof = False

        def consume(lines: list[bytes]) -> None:
            if not lines:
                return
            now = datetime.now(UTC)
            found = []
            for line in lines:
                found.extend(parser.parse_bytes(line, now))
            if found:
                self.metrics_count += len(found)
                if not self.objective_seen:
                    self.objective_seen = any(m.name == self.objective for m in found)
                reporter.add(found)
                if self._rules.observe((m.name, m.value) for m in found):
                    self._early_stop(proc)

        try:
            while True:
                if self._stopping and (not self._killed and proc.poll() is None):
                    self._stop_child()
                if not eof:
                    if sel.select(0.1):
                        data = os.read(fd, READ_CHUNK)
                        if data:
                            trial_log.write(data)
                            if echo is not None:
                                try:
                                    echo.write(data)
                                    echo.flush()
                                except OSError:
                                    echo = None
                            consume(assembler.feed(data, parser.wanted))
                        else:
                            eof = True
                else:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(0.1)
                if proc.poll() is not None:
                    if eof:
                        break
                    if exited_at is None:
                        exited_at = time.monotonic()
                    elif time.monotonic() - exited_at > DRAIN_TIMEOUT:
                        log.warning(
                            "output still open %.0fs after the command exited "
                            "(a child process holds it); stop reading",
                            DRAIN_TIMEOUT,
                        )
                        break
            consume(assembler.finish())
        finally:
            sel.close()
            proc.stdout.close()

    def _early_stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Every rule held: stop the trial's group now (SIGTERM, SIGKILL after the grace).

        A command that has already exited finished on its own and is not early stopped;
        output still buffered is read and reported either way.
        """
        if proc.poll() is not None or self._stopper.signum is not None:
            log.info("early-stopping rules held after the command ended: %s", self._rules.reason)
            return
        self.early_stop_reason = self._rules.reason
        self._stop_child()

    # -- result ------------------------------------------------------------------

    def _finish(self, result: TrialResult, proc: subprocess.Popen[bytes] | None) -> int:
        if proc is not None:
            rc = proc.wait()
            if rc < 0:
                result.signal = -rc
            else:
                result.exit_code = rc
                if self._stopper.signum is not None:
                    result.signal = self._stopper.signum
            if self.early_stop_reason is not None and self._stopper.signum is None:
                result.early_stopped = True
                result.early_stopped_reason = self.early_stop_reason
        result.objective_seen = self.objective_seen
        result.metrics_count = self.metrics_count
        result.finished_at = utc_now_iso()
        result.write(self.dir / RESULT_FILE)
        log.info("result: %s", result.to_dict())
        if result.early_stopped:
            return 0  # stopped on purpose, like Katib's "Training Container was Early Stopped"
        if result.signal is not None:
            return 128 + result.signal
        if result.exit_code is not None:
            return result.exit_code
        return 1


def build_arg_parser() -> argparse.ArgumentParser:
    """The command line the controller's local executor uses."""
    p = argparse.ArgumentParser(
        prog="python -m metrics_collector",
        description="Run a trial command, collect TEXT metrics from its output, report them.",
    )
    p.add_argument("--trial-name", required=True)
    p.add_argument(
        "--metric-names", required=True, help="comma (or ';') separated; the first is the objective"
    )
    p.add_argument("--trial-dir", required=True, type=Path)
    p.add_argument("--db-manager-address", default=None, help="HOST:PORT")
    p.add_argument(
        "--db-manager-address-file",
        default=None,
        type=Path,
        help="file holding HOST:PORT, re-read before each retry",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        dest="filters",
        help="regex with name=group 1, value=group 2 (repeatable)",
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--flush-interval", type=float, default=1.0)
    p.add_argument("--max-buffer", type=int, default=100_000)
    p.add_argument("--final-flush-timeout", type=float, default=10.0)
    p.add_argument("--grace-period", type=float, default=5.0)
    p.add_argument("--echo", action="store_true", help="also copy the output to stdout")
    p.add_argument(
        "--stop-rule",
        action="append",
        default=[],
        dest="stop_rules",
        metavar="NAME;VALUE;COMPARISON;START_STEP",
        help="early-stopping rule (Katib's -stop-rule; repeatable); the trial is stopped "
        "once every rule has held",
    )
    p.add_argument(
        "--objective-type",
        choices=("minimize", "maximize"),
        default="maximize",
        help="direction of the objective (the first metric): rules compare its best value",
    )
    p.add_argument(
        "--early-stopping-address",
        default=None,
        metavar="HOST:PORT",
        help="EarlyStopping service told (SetTrialStatus) when a rule stopped the trial",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARG...")
    return p


def parse_args(argv: Sequence[str] | None = None) -> CollectorConfig:
    """Parse argv into a config (argparse exits 2 on errors)."""
    parser = build_arg_parser()
    ns = parser.parse_args(argv)
    command = list(ns.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("missing command after --")
    names = split_metric_names(ns.metric_names)
    if not names:
        parser.error("--metric-names is empty")
    if not ns.db_manager_address and not ns.db_manager_address_file:
        parser.error("one of --db-manager-address / --db-manager-address-file is required")
    try:
        stop_rules = [StopRule.parse(text) for text in ns.stop_rules]
    except ValueError as exc:
        parser.error(str(exc))
    return CollectorConfig(
        trial_name=ns.trial_name,
        metric_names=names,
        trial_dir=ns.trial_dir,
        command=command,
        db_manager_address=ns.db_manager_address,
        db_manager_address_file=ns.db_manager_address_file,
        filters=list(ns.filters),
        batch_size=ns.batch_size,
        flush_interval=ns.flush_interval,
        max_buffer=ns.max_buffer,
        final_flush_timeout=ns.final_flush_timeout,
        grace_period=ns.grace_period,
        echo=ns.echo,
        stop_rules=stop_rules,
        objective_type=ns.objective_type,
        early_stopping_address=ns.early_stopping_address,
    )


def _setup_logging(trial_dir: Path) -> None:
    handler = logging.FileHandler(trial_dir / COLLECTOR_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("metrics_collector")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: diagnostics go to collector.log, never to stdout/stderr."""
    cfg = parse_args(argv)
    cfg.trial_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(cfg.trial_dir)
    (cfg.trial_dir / COLLECTOR_PID).write_text(f"{os.getpid()}\n", encoding="utf-8")
    log.info(
        "collector pid %d for trial %s, metrics %s", os.getpid(), cfg.trial_name, cfg.metric_names
    )
    try:
        return Wrapper(cfg).run()
    except Exception as exc:  # last resort: always leave a result for the controller
        log.exception("collector crashed")
        TrialResult(error=f"collector crashed: {exc}", finished_at=utc_now_iso()).write(
            cfg.trial_dir / RESULT_FILE
        )
        return 1
