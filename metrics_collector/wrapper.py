"""Run a trial's command, log its output, collect its metrics and report them.

This is the local stand-in for Katib's metrics-collector sidecar, but as a wrapper:
the command's merged stdout/stderr flows through this process and is appended to
``trial.log`` unchanged, whatever the collector kind. Metrics come from the source the
kind names (metrics_collector.sources): the output itself (StdOut), a file (File) or
an event directory (TensorFlowEvent), parsed as they arrive rather than once at the
end, so metrics reach the DBManager, and the early-stopping rules, while the trial
runs. With Push/None the trial reports its own metrics; with Custom the user's
collector runs beside the trial (metrics_collector.custom_collector). The controller
learns how the command ended from ``result.json``, written atomically once everything
has been flushed; when the objective never showed up, its ``reason`` says why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, BinaryIO

from katib.errors import KatibError
from metrics_collector.custom_collector import CUSTOM_LOG, DEFAULT_TIMEOUT, CustomCollector
from metrics_collector.early_stopping import RuleChecker, StopRule, notify_stopped
from metrics_collector.heartbeat import HeartbeatWriter, interval_from_env
from metrics_collector.parsers import (
    FILE_FORMATS,
    PARSE_HEAD_BYTES,
    ParsedMetric,
    make_line_parser,
    split_metric_names,
)
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
from metrics_collector.sources import (
    COLLECTING_KINDS,
    FileSource,
    LineConsumer,
    MetricSource,
    SourceKind,
    TfEventSource,
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
#: After a read shorter than this, wait COALESCE_DELAY before the next one, so a trial
#: that flushes every line is read in blocks (one select/read/write per ~100 lines at
#: 10k lines/s, not per line). Adds at most COALESCE_DELAY of latency; a read that
#: fills this much means output is arriving fast and is never delayed.
COALESCE_BYTES = 4096
COALESCE_DELAY = 0.01
#: While output flows, how often to check whether the command has exited (waitpid).
EXIT_CHECK_INTERVAL = 0.05
#: At most this many non-finite objective values are quoted in a reason.
MAX_QUOTED_VALUES = 3


def lines_containing(block: bytes, names: Sequence[bytes]) -> list[bytes]:
    """The lines of ``block`` (newline-separated, no trailing newline) holding any name.

    A block of a hundred log lines usually holds one metric line; finding the names
    with ``bytes.find`` costs far less than splitting and looking at every line.
    """
    spans: dict[int, int] = {}
    for name in names:
        if not name:
            continue
        pos = block.find(name)
        while pos >= 0:
            start = block.rfind(b"\n", 0, pos) + 1
            end = block.find(b"\n", pos)
            if end < 0:
                end = len(block)
            spans[start] = end
            pos = block.find(name, end + 1)
    return [block[start:end] for start, end in sorted(spans.items())]


class LineAssembler:
    """Splits a byte stream into lines with a bounded buffer.

    Lines come out without their newline and trailing CR, cut to ``parse_head`` bytes
    (only the head of a long line is parsed). A partial line that grows past
    ``max_pending`` is emitted (head only) and the rest is skipped up to the next newline,
    so a 10 MB line without a newline costs at most ``max_pending`` bytes of memory.
    With ``pick``, complete lines that contain none of those byte strings are dropped
    early (a parser can find nothing in them); the line a chunk completes is always kept.
    """

    def __init__(
        self,
        max_pending: int = MAX_PENDING_BYTES,
        parse_head: int = PARSE_HEAD_BYTES,
        pick: Sequence[bytes] | None = None,
    ) -> None:
        self.max_pending = max(parse_head, max_pending)
        self.parse_head = parse_head
        self._pick = tuple(pick) if pick else None
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
                if self._pick is not None:
                    out.extend(lines_containing(block, self._pick))
                elif want is None or want(block):
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
    source_kind: SourceKind = SourceKind.STDOUT
    file_path: Path | None = None
    file_format: str = "TEXT"
    tfevent_dir: Path | None = None
    poll_interval: float | None = None
    custom_command: list[str] = field(default_factory=list)
    custom_env: dict[str, str] = field(default_factory=dict)
    custom_timeout: float = DEFAULT_TIMEOUT
    metrics_path: str | None = None  # Custom: source.fileSystemPath.path, as seen locally


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
        #: Reports per metric, in order: the step each report gets in the DB (its
        #: DBManager numbers a trial's reports per metric as they arrive).
        self.metric_counts: dict[str, int] = {}
        self.objective_finite = False
        self._nonfinite: list[str] = []
        self._lines_read = 0
        self._consumer: LineConsumer | None = None
        self._source: MetricSource | None = None
        self._custom: CustomCollector | None = None
        self._reporter: Reporter | None = None
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
            self._setup_source()
        except (KatibError, OSError) as exc:
            result.error = str(exc)
            return self._finish(result, None)
        with open(self.dir / TRIAL_LOG, "ab", buffering=0) as trial_log:
            if self.cfg.source_kind == SourceKind.CUSTOM:
                try:
                    self._start_custom()
                except OSError as exc:
                    result.error = f"custom metrics collector cannot start: {exc}"
                    log.error("%s", result.error)
                    trial_log.write(f"katib-metrics-collector: {result.error}\n".encode())
                    return self._finish(result, None)
            try:
                self._start(trial_log)
            except OSError as exc:
                result.exit_code, result.error = self._start_error(exc)
                log.error("%s", result.error)
                trial_log.write(f"katib-metrics-collector: {result.error}\n".encode())
                if self._custom is not None:
                    self._custom.stop()
                return self._finish(result, None)
            reporter: Reporter | None = None
            if self.cfg.source_kind in COLLECTING_KINDS:
                # gRPC is imported once the trial runs, so the import overlaps its start-up
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
            self._reporter = reporter
            try:
                self._pump(trial_log)
                self._finish_stop()
                if self._source is not None:
                    self._take(self._source.finish())
                    log.info("%s", self._source.describe())
            except Exception as exc:  # keep going: the child must still be reaped and reported
                log.exception("collector failure")
                result.error = f"collector failure: {exc}"
                self._stop_child(force=True)
            finally:
                self._finish_stop()
                self._finish_custom(result)
                if reporter is not None:
                    reporter.close(self.cfg.final_flush_timeout)
                    log.info(
                        "delivered %d metric(s), %d unreported",
                        reporter.delivered,
                        reporter.unreported_count,
                    )
            if reporter is not None and reporter.unreported_path is not None:
                result.unreported = UNREPORTED_FILE
        for s, handler in old.items():
            signal.signal(s, handler)
        code = self._finish(result, self._proc)
        if result.early_stopped and self.cfg.early_stopping_address:
            notify_stopped(self.cfg.early_stopping_address, self.cfg.trial_name)
        return code

    # -- sources -------------------------------------------------------------------

    def _setup_source(self) -> None:
        """Build the parser/source the kind needs; Katib's validation errors propagate."""
        cfg = self.cfg
        kind = cfg.source_kind
        if kind == SourceKind.STDOUT:
            parser = make_line_parser("TEXT", cfg.metric_names, cfg.filters or None)
            self._consumer = LineConsumer(parser, self.objective)
        elif kind == SourceKind.FILE:
            if cfg.file_path is None:
                raise KatibError("collector kind File needs --file-path")
            parser = make_line_parser(cfg.file_format, cfg.metric_names, cfg.filters or None)
            self._source = FileSource(
                cfg.file_path, LineConsumer(parser, self.objective), cfg.poll_interval
            )
        elif kind == SourceKind.TFEVENT:
            if cfg.tfevent_dir is None:
                raise KatibError("collector kind TensorFlowEvent needs --tfevent-dir")
            self._source = TfEventSource(cfg.tfevent_dir, cfg.metric_names, cfg.poll_interval)
        elif kind == SourceKind.CUSTOM and not cfg.custom_command:
            raise KatibError("collector kind Custom needs --custom-command")
        if cfg.stop_rules and kind not in COLLECTING_KINDS:
            # as in Katib: without a collector that sees the metrics, nothing applies them
            log.warning("collector kind %s sees no metrics: early-stopping rules not applied", kind)

    def _start_custom(self) -> None:
        """Start the user's collector with the trial's context in its environment."""
        cfg = self.cfg
        env = {**os.environ, **cfg.custom_env}
        env.update(
            KATIB_TRIAL_NAME=cfg.trial_name,
            KATIB_METRIC_NAMES=",".join(cfg.metric_names),
            KATIB_TRIAL_DIR=str(self.dir),
            KATIB_TRIAL_LOG=str(self.dir / TRIAL_LOG),
            KATIB_TRIAL_PID_FILE=str(self.dir / TRIAL_PID),
        )
        if cfg.db_manager_address:
            env["KATIB_DB_MANAGER_ADDRESS"] = cfg.db_manager_address
        if cfg.db_manager_address_file is not None:
            env["KATIB_DB_MANAGER_ADDRESS_FILE"] = str(cfg.db_manager_address_file)
        if cfg.metrics_path:
            env["KATIB_METRICS_PATH"] = cfg.metrics_path
        self._custom = CustomCollector(
            cfg.custom_command,
            env,
            self.dir / CUSTOM_LOG,
            own_group=os.getpgrp() != os.getpid(),
            grace_period=cfg.grace_period,
        )
        self._custom.start()

    def _finish_custom(self, result: TrialResult) -> None:
        """The trial is over: close the collector's stdin, wait for it, record a failure."""
        custom = self._custom
        if custom is None:
            return
        custom.trial_ended()
        custom.wait(self.cfg.custom_timeout, lambda: self._stopper.signum is not None)
        error = custom.error(self.cfg.custom_timeout)
        if error is not None:
            log.error("%s", error)
            if result.error is None:
                result.error = error

    def _take(self, found: list[ParsedMetric]) -> None:
        """Count, report and apply the early-stopping rules to new observations."""
        if not found:
            return
        self.metrics_count += len(found)
        counts = self.metric_counts
        for m in found:
            counts[m.name] = counts.get(m.name, 0) + 1
            if m.name == self.objective and not self.objective_finite:
                self.objective_seen = True
                with contextlib.suppress(ValueError):
                    self.objective_finite = math.isfinite(float(m.value))
                if not self.objective_finite and len(self._nonfinite) < MAX_QUOTED_VALUES:
                    self._nonfinite.append(m.value[:40])
        if self._reporter is not None:
            self._reporter.add(found)
        proc = self._proc
        if self._rules.observe((m.name, m.value) for m in found) and proc is not None:
            self._early_stop(proc)

    def _missing_reason(self) -> str | None:
        """Why the objective has no finite value (None when it has one), for the trial."""
        if self.objective_finite:
            return None
        obj = self.objective
        if self.objective_seen:
            return (
                f"{obj} was reported {self.metric_counts.get(obj, 0)} time(s), never as a "
                f"finite number (values: {', '.join(self._nonfinite)})"
            )
        kind = self.cfg.source_kind
        if kind == SourceKind.STDOUT:
            text = f"the trial's output ({self._lines_read} line(s)) has no value for {obj}"
            mentions = self._consumer.mentions() if self._consumer is not None else ""
            reason = f"{text}; {mentions}" if mentions else text
        elif self._source is not None:
            reason = self._source.missing_reason()
        elif kind == SourceKind.CUSTOM:
            custom = self._custom
            code = custom.exit_code if custom is not None else None
            reason = (
                "collector kind Custom: metrics come only from the custom collector "
                f"({shlex.join(self.cfg.custom_command)[:100]}, exit code {code})"
            )
        else:
            reason = (
                f"collector kind {'None' if kind == SourceKind.NONE else 'Push'}: metrics "
                "come only from the trial's own katib.report_metrics calls"
            )
        others = [f"{n} x{c}" for n, c in self.metric_counts.items() if n != obj]
        if others:
            reason += f"; other metrics seen: {', '.join(others)}"
        return reason

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

    def _pump(self, trial_log: BinaryIO) -> None:
        """Log the output until the command has exited and its output is drained.

        StdOut parses the output as it arrives; File and TensorFlowEvent poll their
        source every ``interval`` meanwhile (their last read is the caller's finish()).
        """
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        consumer = self._consumer
        source = self._source
        names = consumer.parser.metric_names if consumer is not None else ()
        assembler = LineAssembler(pick=[n.encode("utf-8") for n in names] or None)
        want = consumer.parser.wanted if consumer is not None else None
        echo = sys.stdout.buffer if self.cfg.echo else None
        fd = proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        exited_at: float | None = None
        eof = False
        now = time.monotonic()
        next_poll = now + source.interval if source is not None else math.inf
        next_check = now
        try:
            while True:
                if self._stopping and (not self._killed and proc.poll() is None):
                    self._stop_child()
                now = time.monotonic()
                if source is not None and now >= next_poll:
                    self._take(source.poll())
                    now = time.monotonic()
                    next_poll = now + source.interval
                wait = min(0.1, max(0.0, next_poll - now))
                if not eof:
                    if sel.select(wait):
                        data = os.read(fd, READ_CHUNK)
                        if data:
                            trial_log.write(data)
                            if echo is not None:
                                try:
                                    echo.write(data)
                                    echo.flush()
                                except OSError:
                                    echo = None
                            if consumer is not None:
                                self._lines_read += data.count(b"\n")
                                self._take(consumer.parse(assembler.feed(data, want)))
                            if len(data) < COALESCE_BYTES:
                                time.sleep(COALESCE_DELAY)
                        else:
                            eof = True
                    else:
                        next_check = 0.0  # idle: look at the command now
                else:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(wait)
                now = time.monotonic()
                if not eof and now < next_check:
                    continue
                next_check = now + EXIT_CHECK_INTERVAL
                if proc.poll() is not None:
                    if eof:
                        break
                    if exited_at is None:
                        exited_at = now
                    elif now - exited_at > DRAIN_TIMEOUT:
                        log.warning(
                            "output still open %.0fs after the command exited "
                            "(a child process holds it); stop reading",
                            DRAIN_TIMEOUT,
                        )
                        break
            if consumer is not None:
                last = assembler.finish()
                self._lines_read += len(last)  # a last line without a newline
                self._take(consumer.parse(last))
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
        result.metric_counts = dict(self.metric_counts)
        result.collector_kind = self.cfg.source_kind.value
        if proc is not None:
            result.reason = self._missing_reason()
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
        description="Run a trial command, log its output, collect its metrics, report them.",
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
    src = p.add_argument_group("metrics source (Katib's metricsCollectorSpec)")
    src.add_argument(
        "--source-kind",
        choices=[k.value for k in SourceKind],
        default=SourceKind.STDOUT.value,
        help="stdout|file|tfevent (parsed here), push|none (the trial reports itself), "
        "custom (--custom-command reports)",
    )
    src.add_argument("--file-path", type=Path, default=None, help="file kind: the metrics file")
    src.add_argument(
        "--file-format",
        default="TEXT",
        type=str.upper,
        help=f"file kind: {' or '.join(FILE_FORMATS)} (JSON takes no --filter)",
    )
    src.add_argument(
        "--tfevent-dir", type=Path, default=None, help="tfevent kind: the event file directory"
    )
    src.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="seconds between reads of the file (default 0.1) or event directory (0.5)",
    )
    src.add_argument(
        "--custom-command",
        default=None,
        metavar="JSON",
        help='custom kind: the collector\'s argv as a JSON list, e.g. \'["python3", "c.py"]\'',
    )
    src.add_argument(
        "--custom-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="custom kind: environment of the collector (repeatable)",
    )
    src.add_argument(
        "--custom-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="custom kind: seconds to wait for the collector after the trial ended",
    )
    src.add_argument(
        "--metrics-path",
        default=None,
        help="custom kind: source.fileSystemPath.path as seen here (KATIB_METRICS_PATH)",
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
    kind = SourceKind(ns.source_kind)
    custom_command: list[str] = []
    if ns.custom_command is not None:
        try:
            custom_command = json.loads(ns.custom_command)
        except ValueError as exc:
            parser.error(f"--custom-command is not JSON: {exc}")
        if (
            not isinstance(custom_command, list)
            or not custom_command
            or not all(isinstance(a, str) for a in custom_command)
        ):
            parser.error("--custom-command must be a non-empty JSON list of strings")
    custom_env: dict[str, str] = {}
    for item in ns.custom_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--custom-env {item!r} is not NAME=VALUE")
        custom_env[name] = value
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
        source_kind=kind,
        file_path=ns.file_path,
        file_format=ns.file_format,
        tfevent_dir=ns.tfevent_dir,
        poll_interval=ns.poll_interval,
        custom_command=custom_command,
        custom_env=custom_env,
        custom_timeout=ns.custom_timeout,
        metrics_path=ns.metrics_path,
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
    # Liveness for the controller (metrics_collector.heartbeat): beats until we exit.
    heartbeat = HeartbeatWriter(cfg.trial_dir, interval_from_env()).start()
    try:
        return Wrapper(cfg).run()
    except Exception as exc:  # last resort: always leave a result for the controller
        log.exception("collector crashed")
        TrialResult(error=f"collector crashed: {exc}", finished_at=utc_now_iso()).write(
            cfg.trial_dir / RESULT_FILE
        )
        return 1
    finally:
        heartbeat.stop()
