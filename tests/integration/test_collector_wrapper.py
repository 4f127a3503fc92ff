"""The metrics collector wrapper end to end: real subprocesses, a real gRPC DBManager."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from metrics_collector.parsers import ParsedMetric, parse_rfc3339
from metrics_collector.reporter import Reporter
from metrics_collector.result import TrialResult, read_unreported

TRIAL = "trial-1"
Entry = tuple[str, str, str]  # (metric name, value, time stamp)


class RecordingDBManager(api_pb2_grpc.DBManagerServicer):
    """Records every ReportObservationLog call, like a DBManager backed by a list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[api_pb2.ReportObservationLogRequest] = []

    def ReportObservationLog(
        self, request: api_pb2.ReportObservationLogRequest, context: grpc.ServicerContext
    ) -> api_pb2.ReportObservationLogReply:
        with self._lock:
            self.requests.append(request)
        return api_pb2.ReportObservationLogReply()

    def entries(self) -> list[Entry]:
        with self._lock:
            return [
                (log.metric.name, log.metric.value, log.time_stamp)
                for req in self.requests
                for log in req.observation_log.metric_logs
            ]


@contextmanager
def dbmanager() -> Iterator[tuple[RecordingDBManager, str]]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    servicer = RecordingDBManager()
    api_pb2_grpc.add_DBManagerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


@pytest.fixture
def db() -> Iterator[tuple[RecordingDBManager, str]]:
    with dbmanager() as pair:
        yield pair


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def collector_argv(trial_dir: Path, address: str, cmd: list[str], *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "metrics_collector",
        "--trial-name",
        TRIAL,
        "--metric-names",
        "loss;accuracy",
        "--trial-dir",
        str(trial_dir),
        "--db-manager-address",
        address,
        "--flush-interval",
        "0.2",
        "--final-flush-timeout",
        "2",
        *extra,
        "--",
        *cmd,
    ]


def run_collector(
    trial_dir: Path, address: str, cmd: list[str], *extra: str
) -> tuple[subprocess.CompletedProcess[bytes], TrialResult]:
    """Run like the controller does: the wrapper leads a new session/process group."""
    proc = subprocess.run(
        collector_argv(trial_dir, address, cmd, *extra),
        capture_output=True,
        timeout=30,
        start_new_session=True,
    )
    result = TrialResult.read(trial_dir / "result.json")
    assert result is not None, proc.stderr.decode()
    return proc, result


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def values(entries: list[Entry], name: str = "loss") -> list[str]:
    return [v for n, v, _ in entries if n == name]


def test_normal_run_reports_metrics_and_logs_output(
    tmp_path: Path, db: tuple[RecordingDBManager, str]
) -> None:
    servicer, address = db
    cmd = py(
        """
        import os, sys
        print("trial", os.environ["KATIB_TRIAL_NAME"])
        extra = [f for f in os.listdir("/proc/self/fd") if int(f) > 2]
        print("extra fds", len(extra))  # only the one listdir() itself opened
        print("2024-03-04T17:55:08Z epoch 1 loss=0.5 accuracy=0.7 val_loss=9")
        print("chatter without metrics", file=sys.stderr)
        for i in range(3):
            print(f"epoch {i + 2} loss={0.4 - i / 10:.1f}")
        """
    )
    proc, result = run_collector(tmp_path, address, cmd)
    assert proc.returncode == 0
    assert proc.stdout == b"" and proc.stderr == b""
    log = (tmp_path / "trial.log").read_text()
    assert log.startswith(f"trial {TRIAL}\nextra fds 1\n")
    assert "chatter without metrics\n" in log
    entries = servicer.entries()
    assert values(entries) == ["0.5", "0.4", "0.3", "0.2"]
    assert values(entries, "accuracy") == ["0.7"]
    assert entries[0][2] == "2024-03-04T17:55:08Z"
    assert all(parse_rfc3339(ts) is not None and ts.endswith("Z") for _, _, ts in entries)
    assert {r.trial_name for r in servicer.requests} == {TRIAL}
    assert result.exit_code == 0 and result.signal is None and result.error is None
    assert result.objective_seen and result.metrics_count == 5 and result.unreported is None
    assert result.started_at and result.finished_at and result.started_at <= result.finished_at
    pids = {p: int((tmp_path / p).read_text()) for p in ("collector.pid", "trial.pid")}
    assert pids["collector.pid"] > 0 and pids["trial.pid"] > 0
    assert pids["collector.pid"] != pids["trial.pid"]
    assert not (tmp_path / "unreported.jsonl").exists()


def test_garbage_crlf_nan_inf_and_invalid_utf8(
    tmp_path: Path, db: tuple[RecordingDBManager, str]
) -> None:
    servicer, address = db
    payload = (
        b"\x00\x01\xff\xfe binary garbage \x80\n"
        b"loss=0.1\r\n"
        b"\xffloss=0.2\xfe\n"
        b"loss=nan accuracy=inf\n"
        b"loss = -1.5e-3\r\n"
        b"\r\n\n"
    )
    cmd = py(f"import sys; sys.stdout.buffer.write({payload!r})")
    proc, result = run_collector(tmp_path, address, cmd)
    assert proc.returncode == 0 and proc.stderr == b""
    assert (tmp_path / "trial.log").read_bytes() == payload
    assert values(servicer.entries()) == ["0.1", "0.2", "-1.5e-3"]
    assert values(servicer.entries(), "accuracy") == []
    assert result.metrics_count == 3 and result.objective_seen


def test_custom_filter_reports_nan_as_text(
    tmp_path: Path, db: tuple[RecordingDBManager, str]
) -> None:
    servicer, address = db
    cmd = py(
        """
        print("2024-03-04T17:55:08Z INFO     {metricName: loss, metricValue: 0.3634}")
        print("loss: nan")
        """
    )
    _, result = run_collector(
        tmp_path,
        address,
        cmd,
        "--filter",
        r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}",
        "--filter",
        r"(\w+):\s*(nan|inf)",
    )
    assert servicer.entries()[0] == ("loss", "0.3634", "2024-03-04T17:55:08Z")
    assert values(servicer.entries()) == ["0.3634", "nan"]
    assert result.metrics_count == 2


def test_invalid_filter_is_reported_in_result(tmp_path: Path) -> None:
    proc, result = run_collector(tmp_path, dead_address(), ["true"], "--filter", r"(\w+)=\d+")
    assert proc.returncode != 0 and proc.stderr == b""
    assert result.error and "2 groups" in result.error


def test_huge_line_without_newline_is_logged_but_bounded(
    tmp_path: Path, db: tuple[RecordingDBManager, str]
) -> None:
    servicer, address = db
    cmd = py(
        """
        import sys
        out = sys.stdout.buffer
        out.write(b"loss=0.5 " + b"x" * 100)
        for _ in range(160):  # 10 MiB, in pieces, never a newline
            out.write(b"y" * 65536)
        out.write(b" loss=0.9\\nloss=0.7 ")
        for _ in range(160):
            out.write(b"z" * 65536)
        """
    )
    proc, result = run_collector(tmp_path, address, cmd)
    assert proc.returncode == 0
    assert (tmp_path / "trial.log").stat().st_size == 9 + 100 + 2 * 160 * 65536 + 19
    # Only the head of each huge line is parsed: the tail "loss=0.9" is never seen.
    assert values(servicer.entries()) == ["0.5", "0.7"]
    assert result.metrics_count == 2


def test_no_output_at_all(tmp_path: Path, db: tuple[RecordingDBManager, str]) -> None:
    servicer, address = db
    proc, result = run_collector(tmp_path, address, ["true"])
    assert proc.returncode == 0
    assert (tmp_path / "trial.log").read_bytes() == b""
    assert servicer.requests == []
    assert result.exit_code == 0 and not result.objective_seen and result.metrics_count == 0


def test_last_line_without_newline_is_parsed(
    tmp_path: Path, db: tuple[RecordingDBManager, str]
) -> None:
    servicer, address = db
    proc, _ = run_collector(tmp_path, address, ["printf", "loss=0.1\\nloss=0.3"])
    assert proc.returncode == 0
    assert values(servicer.entries()) == ["0.1", "0.3"]


def test_nonzero_exit_code_is_mirrored(tmp_path: Path, db: tuple[RecordingDBManager, str]) -> None:
    _, address = db
    cmd = ["sh", "-c", "echo accuracy=0.5; echo oops >&2; exit 3"]
    proc, result = run_collector(tmp_path, address, cmd, "--echo")
    assert proc.returncode == 3
    assert proc.stdout == b"accuracy=0.5\noops\n"  # --echo copies the output
    assert result.exit_code == 3 and result.signal is None
    assert not result.objective_seen and result.metrics_count == 1


@pytest.mark.parametrize(
    ("make_cmd", "code", "error"),
    [
        (lambda d: ["no-such-command-xyz", "arg"], 127, "command not found: no-such-command-xyz"),
        (lambda d: [str(d)], 126, "command not executable: "),
    ],
)
def test_command_cannot_start(
    tmp_path: Path, make_cmd: Callable[[Path], list[str]], code: int, error: str
) -> None:
    trial_dir = tmp_path / "trial"
    proc, result = run_collector(trial_dir, dead_address(), make_cmd(tmp_path))
    assert proc.returncode == code
    assert proc.stderr == b"" and proc.stdout == b""
    assert result.exit_code == code and result.error and result.error.startswith(error)
    assert not (trial_dir / "unreported.jsonl").exists()


def test_dbmanager_down_the_whole_time_spools_everything(tmp_path: Path) -> None:
    cmd = py(
        """
        for i in range(250):
            print(f"step {i} loss={i}")
        print("accuracy=1")
        """
    )
    proc, result = run_collector(tmp_path, dead_address(), cmd, "--final-flush-timeout", "0.5")
    assert proc.returncode == 0 and proc.stderr == b""
    assert result.unreported == "unreported.jsonl" and result.metrics_count == 251
    records = list(read_unreported(tmp_path / "unreported.jsonl"))
    assert sorted(int(r["value"]) for r in records if r["metric_name"] == "loss") == list(
        range(250)
    )
    assert [r["value"] for r in records if r["metric_name"] == "accuracy"] == ["1"]
    assert all(parse_rfc3339(r["time_stamp"]) for r in records)


def test_dbmanager_down_then_up_elsewhere_delivers_everything_once(tmp_path: Path) -> None:
    trial_dir, go = tmp_path / "trial", tmp_path / "go"
    address_file = tmp_path / "dbmanager.address"
    address_file.write_text(dead_address() + "\n")
    cmd = py(
        f"""
        import os, sys, time
        for i in range(150):
            print(f"loss={{i}}")
        sys.stdout.flush()
        deadline = time.time() + 20
        while not os.path.exists({str(go)!r}) and time.time() < deadline:
            time.sleep(0.02)
        for i in range(150, 200):
            print(f"loss={{i}}")
        """
    )
    argv = collector_argv(
        trial_dir,
        dead_address(),
        cmd,
        "--db-manager-address-file",
        str(address_file),
        "--batch-size",
        "40",
        "--final-flush-timeout",
        "10",
    )
    with dbmanager() as (servicer, address):
        proc = subprocess.Popen(argv, start_new_session=True)
        try:
            wait_for(lambda: "failed (attempt 2" in _read(trial_dir / "collector.log"))
            tmp = address_file.with_suffix(".tmp")
            tmp.write_text(address + "\n")
            os.replace(tmp, address_file)
            go.touch()
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        counts = collections.Counter(values(servicer.entries()))
    assert counts == collections.Counter(str(i) for i in range(200))
    assert all(len(r.observation_log.metric_logs) <= 40 for r in servicer.requests)
    result = TrialResult.read(trial_dir / "result.json")
    assert result is not None and result.unreported is None and result.metrics_count == 200
    assert not (trial_dir / "unreported.jsonl").exists()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _gone(pid: int) -> bool:
    """True if the process is dead (a zombie awaiting its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


@pytest.mark.parametrize("own_session", [True, False], ids=["group-leader", "child-group"])
def test_sigterm_kills_the_whole_process_group(tmp_path: Path, own_session: bool) -> None:
    cmd = py(
        """
        import subprocess, time
        sleeper = subprocess.Popen(["sleep", "60"])
        print("loss=0.5", flush=True)
        print("GRANDCHILD", sleeper.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        collector_argv(tmp_path, dead_address(), cmd, "--final-flush-timeout", "0.3"),
        start_new_session=own_session,
    )
    try:
        wait_for(lambda: "GRANDCHILD" in _read(tmp_path / "trial.log"))
        grandchild = int(_read(tmp_path / "trial.log").split("GRANDCHILD")[1].split()[0])
        child = int((tmp_path / "trial.pid").read_text())
        assert int((tmp_path / "collector.pid").read_text()) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: _gone(grandchild) and _gone(child), timeout=5)
    result = TrialResult.read(tmp_path / "result.json")
    assert result is not None
    assert result.signal == signal.SIGTERM and result.exit_code is None
    assert result.objective_seen and result.unreported == "unreported.jsonl"


def test_sigkill_after_grace_when_the_command_ignores_sigterm(tmp_path: Path) -> None:
    cmd = py(
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        collector_argv(tmp_path, dead_address(), cmd, "--grace-period", "0.5"),
        start_new_session=True,
    )
    try:
        wait_for(lambda: "ready" in _read(tmp_path / "trial.log"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = TrialResult.read(tmp_path / "result.json")
    assert result is not None and result.signal == signal.SIGKILL
    assert not result.objective_seen


# -- the reporter in-process ----------------------------------------------------------


def _metrics(n: int) -> list[ParsedMetric]:
    now = datetime.now(UTC)
    return [ParsedMetric("loss", str(i), now) for i in range(n)]


def test_reporter_spills_overflow_instead_of_dropping(tmp_path: Path) -> None:
    spool = tmp_path / "unreported.jsonl"
    reporter = Reporter(
        TRIAL, dead_address(), batch_size=10, flush_interval=0.05, max_buffer=100, spool_path=spool
    )
    for chunk in range(5):
        reporter.add(_metrics(100)[chunk * 20 : chunk * 20 + 20] * 5)
    assert reporter.close(timeout=0.2) > 0
    records = list(read_unreported(spool))
    assert len(records) == 500 == reporter.unreported_count
    assert reporter.unreported_path == spool and reporter.delivered == 0


class RejectingDBManager(RecordingDBManager):
    def ReportObservationLog(
        self, request: api_pb2.ReportObservationLogRequest, context: grpc.ServicerContext
    ) -> api_pb2.ReportObservationLogReply:
        super().ReportObservationLog(request, context)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad batch")
        raise AssertionError("unreachable")


def test_reporter_spools_a_rejected_batch_without_retrying(tmp_path: Path) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = RejectingDBManager()
    api_pb2_grpc.add_DBManagerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        spool = tmp_path / "unreported.jsonl"
        reporter = Reporter(TRIAL, f"127.0.0.1:{port}", batch_size=5, spool_path=spool)
        reporter.add(_metrics(12))
        assert reporter.close(timeout=5) == 0  # nothing left over: rejected batches spooled
    finally:
        server.stop(None).wait()
    assert len(servicer.requests) == 3  # 5 + 5 + 2, each tried once
    assert [r["value"] for r in read_unreported(spool)] == [str(i) for i in range(12)]
