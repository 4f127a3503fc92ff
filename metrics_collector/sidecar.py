"""``python -m metrics_collector --sidecar ...``: the collector as a sidecar container.

On Kubernetes (katib.executors.kubernetes_manifest, ``collector="sidecar"``) the trial's
primary container runs its command under a small shell script, and this process runs in
a second container of the same pod. They share one emptyDir, the *control directory*:

* the script writes the command's output to the metrics log (StdOut kind) or the
  command writes its metrics file / event directory (File, TensorFlowEvent kinds), on a
  shared volume; this process follows it while the trial runs and reports batches to
  the DBManager;
* the script touches ``alive`` every second while the command runs, and writes ``exit``
  (the exit code, or ``early-stopped``) once the command has ended and its output is
  flushed;
* when every early-stopping rule holds, this process writes ``stop``; the script turns
  it into SIGTERM for the command and records ``early-stopped``.

Each run of the script is an *attempt* (``attempt`` holds its number, ``exit`` ends with
it): a primary container restarted in place (``restartPolicy: OnFailure``) starts a new
attempt with a fresh StdOut log, and a restarted sidecar waits for an attempt it has not
collected (``collected``), so nothing is reported twice.

This process ends when the attempt's ``exit`` appears: it reads the source to its end, delivers what
is left, writes ``result.json`` and exits with the command's code (0 when early
stopped). It waits for nothing else, so another long-running container in the pod (a
service-mesh proxy, say) cannot keep the trial alive. If ``alive`` stops changing for
``--alive-timeout`` seconds without an ``exit`` (the primary container was killed, e.g.
out of memory), it reports what it has and exits 137. SIGTERM (the pod is deleted, or
Argo/Tekton stop sidecars once the main container is done) finishes the same way at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from katib.errors import KatibError
from metrics_collector.early_stopping import RuleChecker, StopRule, notify_stopped
from metrics_collector.parsers import ParsedMetric, make_line_parser, split_metric_names
from metrics_collector.result import RESULT_FILE, UNREPORTED_FILE, TrialResult, utc_now_iso
from metrics_collector.sources import FileSource, LineConsumer, MetricSource, TfEventSource

if TYPE_CHECKING:
    from metrics_collector.reporter import Reporter

log = logging.getLogger("metrics_collector.sidecar")

EXIT_MARKER = "exit"
STOP_MARKER = "stop"
ALIVE_FILE = "alive"
ATTEMPT_FILE = "attempt"
#: Attempts this pod's sidecars have collected (one per line), so a restart reads on.
COLLECTED_FILE = "collected"
EARLY_STOPPED = "early-stopped"
#: Exit code when the primary container vanished without an exit marker (as SIGKILL).
EXIT_PRIMARY_LOST = 137
DEFAULT_ALIVE_TIMEOUT = 30.0
#: How long to wait for the primary's (next) attempt to start.
DEFAULT_START_TIMEOUT = 600.0


@dataclass
class SidecarConfig:
    trial_name: str
    metric_names: list[str]
    trial_dir: Path
    control_dir: Path
    db_manager_address: str | None
    source_kind: str  # file | tfevent
    file_path: Path | None = None
    file_format: str = "TEXT"
    tfevent_dir: Path | None = None
    filters: Sequence[str] = ()
    stop_rules: Sequence[StopRule] = ()
    objective_type: str = "maximize"
    early_stopping_address: str | None = None
    poll_interval: float | None = None
    alive_timeout: float = DEFAULT_ALIVE_TIMEOUT
    start_timeout: float = DEFAULT_START_TIMEOUT
    final_flush_timeout: float = 10.0
    batch_size: int = 100
    flush_interval: float = 1.0
    termination_message_path: str | None = None


class Sidecar:
    """Follow the metrics source until the primary's exit marker; report; exit with its code."""

    def __init__(self, cfg: SidecarConfig) -> None:
        self.cfg = cfg
        self.objective = cfg.metric_names[0]
        self.source = self._make_source()
        self.rules = RuleChecker(
            cfg.stop_rules, self.objective, maximize=cfg.objective_type != "minimize"
        )
        self.metric_counts: dict[str, int] = {}
        self.objective_finite = False
        self.early_stop_reason: str | None = None
        self._term: int | None = None

    def _make_source(self) -> MetricSource:
        cfg = self.cfg
        if cfg.source_kind == "tfevent":
            if cfg.tfevent_dir is None:
                raise KatibError("--sidecar with --source-kind tfevent needs --tfevent-dir")
            return TfEventSource(cfg.tfevent_dir, cfg.metric_names, cfg.poll_interval)
        if cfg.source_kind != "file" or cfg.file_path is None:
            raise KatibError("--sidecar reads --source-kind file (with --file-path) or tfevent")
        parser = make_line_parser(cfg.file_format, cfg.metric_names, list(cfg.filters) or None)
        return FileSource(cfg.file_path, LineConsumer(parser, self.objective), cfg.poll_interval)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self._term = signum

    def _take(self, found: list[ParsedMetric], reporter: Reporter | None) -> None:
        if not found:
            return
        for m in found:
            self.metric_counts[m.name] = self.metric_counts.get(m.name, 0) + 1
            if m.name == self.objective and not self.objective_finite:
                with contextlib.suppress(ValueError):
                    self.objective_finite = math.isfinite(float(m.value))
        if reporter is not None:
            reporter.add(found)
        if self.rules.observe((m.name, m.value) for m in found):
            self.early_stop_reason = self.rules.reason
            log.info("early-stopping rules held: %s; asking the trial to stop", self.rules.reason)
            _write_atomic(self.cfg.control_dir / STOP_MARKER, "early-stopped\n")

    def _read(self, name: str) -> str | None:
        try:
            return (self.cfg.control_dir / name).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"unreadable: {exc}"

    def _marker(self, attempt: str) -> str | None:
        """The exit marker's first line, if it is the one of `attempt` (not a stale one)."""
        text = self._read(EXIT_MARKER)
        if text is None:
            return None
        lines = text.splitlines()
        if len(lines) > 1 and lines[1].strip() != attempt:
            return None
        return lines[0].strip() if lines else ""

    def _collected(self) -> set[str]:
        return set((self._read(COLLECTED_FILE) or "").split())

    def _wait_for_attempt(self, started: float, result: TrialResult) -> str | None:
        """The attempt of the primary container to collect: a container restarted in place
        (restartPolicy OnFailure) starts a new one; one already collected is not read again."""
        collected = self._collected()
        while True:
            attempt = self._read(ATTEMPT_FILE)
            if attempt and attempt not in collected:
                return attempt
            if self._term is not None:
                return None
            if time.monotonic() - started > self.cfg.start_timeout:
                result.error = (
                    "the trial container did not start within "
                    f"{self.cfg.start_timeout:.0f}s (no new attempt in {self.cfg.control_dir})"
                )
                return None
            time.sleep(0.1)

    def _alive_age(self) -> float:
        """Seconds since the primary's last sign of life (its heartbeat or attempt start)."""
        newest = 0.0
        for name in (ALIVE_FILE, ATTEMPT_FILE):
            with contextlib.suppress(OSError):
                newest = max(newest, (self.cfg.control_dir / name).stat().st_mtime)
        return max(0.0, time.time() - newest)

    def run(self) -> int:
        cfg = self.cfg
        cfg.trial_dir.mkdir(parents=True, exist_ok=True)
        cfg.control_dir.mkdir(parents=True, exist_ok=True)
        result = TrialResult(started_at=utc_now_iso(), collector_kind=cfg.source_kind)
        old = {s: signal.signal(s, self._on_term) for s in (signal.SIGTERM, signal.SIGINT)}
        from metrics_collector.reporter import Reporter

        reporter = Reporter(
            cfg.trial_name,
            cfg.db_manager_address,
            batch_size=cfg.batch_size,
            flush_interval=cfg.flush_interval,
            spool_path=cfg.trial_dir / UNREPORTED_FILE,
        )
        marker: str | None = None
        attempt: str | None = None
        try:
            attempt = self._wait_for_attempt(time.monotonic(), result)
            log.info("collecting attempt %s of the trial container", attempt)
            while attempt is not None:
                self._take(self.source.poll(), reporter)
                marker = self._marker(attempt)
                if marker is not None:
                    break
                if self._term is not None:
                    log.info("signal %s: finishing now", self._term)
                    marker = self._marker(attempt)
                    break
                if self._alive_age() > cfg.alive_timeout:
                    log.warning(
                        "no heartbeat from the trial container for %.0fs and no exit marker: "
                        "it was killed",
                        cfg.alive_timeout,
                    )
                    result.error = (
                        "the trial container ended without an exit marker "
                        f"(no heartbeat for {cfg.alive_timeout:.0f}s; killed, e.g. out of memory)"
                    )
                    break
                time.sleep(self.source.interval)
            if attempt is not None:
                self._take(self.source.finish(), reporter)
                log.info("%s", self.source.describe())
        except Exception as exc:  # always leave a result and deliver what was parsed
            log.exception("sidecar failure")
            result.error = f"collector failure: {exc}"
        finally:
            reporter.close(cfg.final_flush_timeout)
            for s, handler in old.items():
                signal.signal(s, handler)
        if attempt is not None and marker is not None:
            with open(cfg.control_dir / COLLECTED_FILE, "a", encoding="utf-8") as out:
                out.write(f"{attempt}\n")
        code = self._finish(result, marker, reporter.unreported_path is not None)
        if result.early_stopped and cfg.early_stopping_address:
            notify_stopped(cfg.early_stopping_address, cfg.trial_name)
        return code

    def _finish(self, result: TrialResult, marker: str | None, spooled: bool) -> int:
        code: int
        if marker == EARLY_STOPPED:
            result.early_stopped = True
            result.early_stopped_reason = self.early_stop_reason or "rules held"
            result.exit_code, code = 0, 0
        elif marker is not None and marker.lstrip("-").isdigit():
            result.exit_code = code = int(marker)
        elif marker is not None:
            result.error = result.error or f"unexpected exit marker content: {marker[:80]!r}"
            code = 1
        elif self._term is not None:
            result.signal = self._term
            code = 128 + self._term
        else:
            code = EXIT_PRIMARY_LOST
        result.metric_counts = dict(self.metric_counts)
        result.metrics_count = sum(self.metric_counts.values())
        result.objective_seen = self.objective in self.metric_counts
        if not self.objective_finite:
            result.reason = self.source.missing_reason()
        if spooled:
            result.unreported = UNREPORTED_FILE
        result.finished_at = utc_now_iso()
        result.write(self.cfg.trial_dir / RESULT_FILE)
        log.info("result: %s", result.to_dict())
        target = self.cfg.termination_message_path or os.environ.get(TERMINATION_MESSAGE_ENV)
        if target:
            write_termination_message(self.cfg.trial_dir / RESULT_FILE, target)
        return code


#: Kubernetes keeps at most this much of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096
#: Set on a container so the collector copies its result into the termination message,
#: where the Kubernetes executor reads it from the pod's status.
TERMINATION_MESSAGE_ENV = "KATIB_TERMINATION_MESSAGE_PATH"


def write_termination_message(result_file: Path, target: str | os.PathLike[str]) -> bool:
    """Copy result.json to the container's termination message file (kept under 4 KiB,
    still valid JSON: the longest texts are cut first). False when there is nothing to copy
    or the file cannot be written (a plain process, not a container)."""
    try:
        data = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    text = json.dumps(data, separators=(",", ":"))
    while len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        longest = max(
            (k for k, v in data.items() if isinstance(v, str)),
            key=lambda k: len(data[k]),
            default=None,
        )
        if longest is None or len(data[longest]) < 40:
            data = {
                k: data[k] for k in ("exit_code", "signal", "early_stopped", "error") if k in data
            }
            text = json.dumps(data, separators=(",", ":"))[:TERMINATION_MESSAGE_LIMIT]
            break
        data[longest] = data[longest][: len(data[longest]) // 2] + "..."
        text = json.dumps(data, separators=(",", ":"))
    try:
        with open(target, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError:
        return False
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m metrics_collector --sidecar",
        description="Follow a trial's metrics log/file until its exit marker; report them.",
    )
    p.add_argument("--sidecar", action="store_true", help="run as the sidecar (this mode)")
    p.add_argument("--control-dir", required=True, type=Path, help="the shared control emptyDir")
    p.add_argument("--trial-name", required=True)
    p.add_argument(
        "--metric-names", required=True, help="comma separated; the first is the objective"
    )
    p.add_argument("--trial-dir", required=True, type=Path, help="where result.json is written")
    p.add_argument("--db-manager-address", required=True, help="HOST:PORT")
    p.add_argument("--source-kind", choices=("file", "tfevent"), default="file")
    p.add_argument("--file-path", type=Path, default=None)
    p.add_argument("--file-format", default="TEXT", type=str.upper)
    p.add_argument("--tfevent-dir", type=Path, default=None)
    p.add_argument("--filter", action="append", default=[], dest="filters")
    p.add_argument("--stop-rule", action="append", default=[], dest="stop_rules")
    p.add_argument("--objective-type", choices=("minimize", "maximize"), default="maximize")
    p.add_argument("--early-stopping-address", default=None)
    p.add_argument("--poll-interval", type=float, default=None)
    p.add_argument(
        "--alive-timeout",
        type=float,
        default=DEFAULT_ALIVE_TIMEOUT,
        help="seconds without the trial's heartbeat (and no exit marker) before giving up",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT,
        help="seconds to wait for the trial's first heartbeat",
    )
    p.add_argument("--final-flush-timeout", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--flush-interval", type=float, default=1.0)
    p.add_argument(
        "--termination-message-path",
        default=None,
        help="also write the result there (a container's /dev/termination-log)",
    )
    return p


def parse_args(argv: Sequence[str]) -> SidecarConfig:
    parser = build_arg_parser()
    ns = parser.parse_args(list(argv))
    names = split_metric_names(ns.metric_names)
    if not names:
        parser.error("--metric-names is empty")
    try:
        rules = [StopRule.parse(text) for text in ns.stop_rules]
    except ValueError as exc:
        parser.error(str(exc))
    return SidecarConfig(
        trial_name=ns.trial_name,
        metric_names=names,
        trial_dir=ns.trial_dir,
        control_dir=ns.control_dir,
        db_manager_address=ns.db_manager_address,
        source_kind=ns.source_kind,
        file_path=ns.file_path,
        file_format=ns.file_format,
        tfevent_dir=ns.tfevent_dir,
        filters=list(ns.filters),
        stop_rules=rules,
        objective_type=ns.objective_type,
        early_stopping_address=ns.early_stopping_address,
        poll_interval=ns.poll_interval,
        alive_timeout=ns.alive_timeout,
        start_timeout=ns.start_timeout,
        final_flush_timeout=ns.final_flush_timeout,
        batch_size=ns.batch_size,
        flush_interval=ns.flush_interval,
        termination_message_path=ns.termination_message_path,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; diagnostics go to stderr (the sidecar container's log)."""
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("metrics_collector")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        return Sidecar(cfg).run()
    except KatibError as exc:
        log.error("%s", exc)
        cfg.trial_dir.mkdir(parents=True, exist_ok=True)
        TrialResult(error=str(exc), finished_at=utc_now_iso()).write(cfg.trial_dir / RESULT_FILE)
        return 2
