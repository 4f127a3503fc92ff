"""Throughput and CPU cost of the metrics collector's parsers and sources.

    python bench/collector_parsers.py [--mb 20] [--events 100000] [--seconds 5]
        [--only parsers|events|wrapper|follow]... [--collector-root DIR]

1. Parsing throughput, single thread, data in memory (MB/s of log text with 1% metric
   lines): TEXT with Katib's default filter, TEXT with a custom filter (Katib's
   logging example format), JSON lines. Each goes through the same steps as the
   collector: LineSplitter with the parser's block pre-filter, then parse_bytes.
2. The same from a file on disk through FileFollower.finish() (TEXT, default filter).
3. Event files: records/s and MB/s of TfEventFollower.finish() over tensorboardX-style
   simple_value events and TF2-style tensor scalars, with the C CRC32C and with the
   pure-Python fallback.
4. CPU of the real stdout wrapper path: `python -m metrics_collector ... -- python -c
   <prints 10,000 lines/s for N s, 1% metric lines>`, against a real gRPC DBManager
   in this process. Collector CPU (its own utime+stime) vs the trial's CPU (the
   wrapper's reaped child), both read from /proc/<pid>/stat while the wrapper is a
   zombie. Buffered stdout and line-flushed (PYTHONUNBUFFERED) trials.
5. CPU of following a file / an event directory in-process while a child writes
   10,000 lines/s (or 1,000 scalars/s), polling every 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from katib.apis.v1beta1 import api_pb2, api_pb2_grpc  # noqa: E402
from metrics_collector import tfevent, tfrecord  # noqa: E402
from metrics_collector.file_follower import FileFollower, LineSplitter  # noqa: E402
from metrics_collector.json_parser import JsonLineParser  # noqa: E402
from metrics_collector.parsers import LineParser, TextParser  # noqa: E402

KATIB_LOG_FILTER = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"
NOISE = (
    "2024-03-04T17:55:08Z INFO     step {i} batch 17/938 throughput 1234.5 img/s "
    "lr schedule warmup phase, grad norm 0.8123, memory 10.2 GiB"
)
METRIC_TEXT = "2024-03-04T17:55:08Z INFO     epoch={i} loss=0.{i} accuracy=0.9{i}"
METRIC_KATIB = "2024-03-04T17:55:08Z INFO     {{metricName: loss, metricValue: 0.{i}}}"
NOISE_JSON = '{{"level": "info", "step": {i}, "msg": "batch 17/938 throughput 1234.5 img/s"}}'
METRIC_JSON = '{{"epoch": {i}, "loss": 0.{i}, "accuracy": "0.9{i}", "timestamp": 1638422847.5}}'


def log_text(mb: float, noise: str, metric: str) -> bytes:
    """About ``mb`` MB of lines, one in 100 a metric line."""
    lines: list[str] = []
    size = 0
    i = 0
    while size < mb * 1e6:
        line = (metric if i % 100 == 99 else noise).format(i=i)
        lines.append(line)
        size += len(line) + 1
        i += 1
    return ("\n".join(lines) + "\n").encode()


def parse_all(data: bytes, parser: LineParser, chunk: int = 256 * 1024) -> int:
    splitter = LineSplitter()
    count = 0
    for start in range(0, len(data), chunk):
        for line in splitter.feed(data[start : start + chunk], parser.wanted):
            count += len(parser.parse_bytes(line))
    return count


def best_of(fn: Callable[[], int], runs: int = 3) -> tuple[float, int]:
    """(best seconds, result)."""
    best = float("inf")
    result = 0
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def _parse_run(data: bytes, make: Callable[[], LineParser]) -> Callable[[], int]:
    return lambda: parse_all(data, make())


def _follow_run(directory: Path, metric: str) -> Callable[[], int]:
    return lambda: len(tfevent.TfEventFollower(directory, [metric]).finish())


def bench_parsers(mb: float) -> list[str]:
    cases: list[tuple[str, bytes, Callable[[], LineParser]]] = [
        (
            "TEXT, default filter",
            log_text(mb, NOISE, METRIC_TEXT),
            lambda: TextParser(["loss", "accuracy"]),
        ),
        (
            "TEXT, custom filter",
            log_text(mb, NOISE, METRIC_KATIB),
            lambda: TextParser(["loss"], [KATIB_LOG_FILTER]),
        ),
        (
            "JSON, 1% metric lines",
            log_text(mb, NOISE_JSON, METRIC_JSON),
            lambda: JsonLineParser(["loss", "accuracy"]),
        ),
        (
            "JSON, every line a metric line",
            log_text(mb / 4, METRIC_JSON, METRIC_JSON),
            lambda: JsonLineParser(["loss", "accuracy"]),
        ),
    ]
    rows = [
        "| format | MB | metrics found | seconds | MB/s | metric lines/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, data, make in cases:
        secs, found = best_of(_parse_run(data, make))
        per_line = 1 if name.startswith("TEXT, custom") else 2
        rows.append(
            f"| {name} | {len(data) / 1e6:.1f} | {found} | {secs:.3f} | "
            f"{len(data) / 1e6 / secs:.0f} | {found / per_line / secs:,.0f} |"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.log"
        data = log_text(mb, NOISE, METRIC_TEXT)
        path.write_bytes(data)

        def from_file() -> int:
            parser = TextParser(["loss", "accuracy"])
            follower = FileFollower(path, want=parser.wanted)
            return sum(len(parser.parse_bytes(line)) for line in follower.finish())

        secs, found = best_of(from_file)
        rows.append(
            f"| TEXT, default filter, FileFollower from disk | {len(data) / 1e6:.1f} | {found} "
            f"| {secs:.3f} | {len(data) / 1e6 / secs:.0f} | {found / 2 / secs:,.0f} |"
        )
    return rows


def simple_event(step: int) -> bytes:
    pb = tfevent.pb
    v = pb.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
    return bytes(
        pb.Event(
            wall_time=1.7e9 + step, step=step, summary=pb.Summary(value=[v])
        ).SerializeToString()
    )


def tensor_event(step: int) -> bytes:
    pb = tfevent.pb
    meta = pb.SummaryMetadata(
        plugin_data=pb.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=pb.DATA_CLASS_SCALAR,
    )
    t = pb.TensorProto(dtype=pb.DT_FLOAT, float_val=[1.0 / (step + 1)])
    v = pb.Summary.Value(tag="epoch_loss", tensor=t, metadata=meta)
    return bytes(
        pb.Event(
            wall_time=1.7e9 + step, step=step, summary=pb.Summary(value=[v])
        ).SerializeToString()
    )


def image_event(step: int) -> bytes:
    """A TF2 image summary (a DT_STRING tensor of 64 KB) plus the loss, as Keras can write."""
    pb = tfevent.pb
    image = pb.TensorProto(dtype=pb.DT_STRING, string_val=[b"\x89PNG" + os.urandom(65_532)])
    values = [
        pb.Summary.Value(tag="images", tensor=image),
        pb.Summary.Value(tag="loss", simple_value=1.0 / (step + 1)),
    ]
    return bytes(
        pb.Event(
            wall_time=1.7e9 + step, step=step, summary=pb.Summary(value=values)
        ).SerializeToString()
    )


def bench_events(n: int) -> list[str]:
    rows = [
        "| events | CRC32C | records | MB | seconds | records/s | MB/s |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, make, metric, total in (
            ("simple_value (tensorboardX, TF1)", simple_event, "loss", n),
            ("tensor scalars (TF2, Keras)", tensor_event, "epoch_loss", n),
            ("64 KB image + scalar per record", image_event, "loss", max(100, n // 200)),
        ):
            path = Path(tmp) / f"events.out.tfevents.{label[:6]}"
            path.write_bytes(b"".join(tfrecord.frame_record(make(i)) for i in range(total)))
            for crc_label, crc in (("C", tfrecord.crc32c), ("pure Python", tfrecord.crc32c_python)):
                count = total if crc_label == "C" else max(min(total, 1000), total // 20)
                sub = Path(tmp) / f"{label[:6]}-{crc_label.replace(' ', '')}"
                sub.mkdir()
                data = path.read_bytes()
                cut = _record_offset(data, count)
                (sub / "events.out.tfevents.x").write_bytes(data[:cut])
                saved = tfrecord.crc32c
                tfrecord.crc32c = crc
                try:
                    secs, found = best_of(_follow_run(sub, metric))
                finally:
                    tfrecord.crc32c = saved
                mb = cut / 1e6
                rows.append(
                    f"| {label} | {crc_label} | {found:,} | {mb:.2f} | {secs:.3f} | "
                    f"{found / secs:,.0f} | {mb / secs:.1f} |"
                )
    return rows


def _record_offset(data: bytes, count: int) -> int:
    pos = 0
    for _ in range(count):
        length = int.from_bytes(data[pos : pos + 8], "little")
        pos += 16 + length
    return pos


# -- CPU of the stdout wrapper -----------------------------------------------------------

PRINTER = """
import sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
t0 = time.monotonic()
i = 0
while True:
    now = time.monotonic() - t0
    if now >= seconds:
        break
    target = int(now * rate)
    while i < target:
        if i % 100 == 99:
            print(f"2024-03-04T17:55:08Z INFO epoch={i} loss=0.{i} accuracy=0.9{i}")
        else:
            print(f"2024-03-04T17:55:08Z INFO step {i} batch 17/938 throughput 1234.5 img/s")
        i += 1
    time.sleep(0.001)
"""


class _DBManager(api_pb2_grpc.DBManagerServicer):
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def ReportObservationLog(
        self, request: api_pb2.ReportObservationLogRequest, context: grpc.ServicerContext
    ) -> api_pb2.ReportObservationLogReply:
        with self.lock:
            self.count += len(request.observation_log.metric_logs)
        return api_pb2.ReportObservationLogReply()


@contextmanager
def dbmanager() -> Iterator[tuple[_DBManager, str]]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = _DBManager()
    api_pb2_grpc.add_DBManagerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


def _stat_times(pid: int) -> tuple[float, float]:
    """(own utime+stime, reaped children's cutime+cstime) in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    children = (int(fields[13]) + int(fields[14])) / tick
    return own, children


def wrapper_cpu(rate: int, seconds: float, unbuffered: bool, root: Path = ROOT) -> dict[str, float]:
    """One wrapper run; ``root`` is the checkout whose metrics_collector runs (A/B runs)."""
    with tempfile.TemporaryDirectory() as tmp, dbmanager() as (db, address):
        env = dict(os.environ)
        if unbuffered:
            env["PYTHONUNBUFFERED"] = "1"
        else:
            env.pop("PYTHONUNBUFFERED", None)
        cmd = [
            sys.executable, "-m", "metrics_collector",
            "--trial-name", "bench", "--metric-names", "loss,accuracy",
            "--trial-dir", tmp, "--db-manager-address", address,
            "--", sys.executable, "-c", PRINTER, str(rate), str(seconds),
        ]  # fmt: skip
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=root, env=env)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie: /proc still there
        wall = time.monotonic() - start
        own, trial = _stat_times(proc.pid)
        proc.wait()
        lines = (Path(tmp) / "trial.log").read_bytes().count(b"\n")
        return {
            "wall": wall,
            "collector": own,
            "trial": trial,
            "lines": lines,
            "reported": db.count,
        }


def bench_wrapper(rate: int, seconds: float, root: Path = ROOT) -> list[str]:
    rows = [
        "| trial stdout | lines | metrics reported | wall s | trial CPU s | collector CPU s "
        "| above idle s | above idle, % of a core | collector / trial CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    idle = wrapper_cpu(0, seconds, False, root)  # start-up, gRPC import, polls, final flush
    runs = [("idle trial (prints nothing)", idle)]
    for unbuffered in (False, True):
        label = "line-flushed (PYTHONUNBUFFERED)" if unbuffered else "block-buffered (default)"
        runs.append((label, wrapper_cpu(rate, seconds, unbuffered, root)))
    for label, r in runs:
        above = r["collector"] - idle["collector"]
        ratio = f"{100 * r['collector'] / r['trial']:.0f}%" if r["trial"] else "-"
        rows.append(
            f"| {label} | {r['lines']:,.0f} | {r['reported']:,.0f} | {r['wall']:.2f} | "
            f"{r['trial']:.2f} | {r['collector']:.2f} | {above:.2f} | "
            f"{100 * above / r['wall']:.1f}% | {ratio} |"
        )
    return rows


# -- CPU of following a file or an event directory in-process ---------------------------

FILE_WRITER = PRINTER.replace("print(", "out.write(").replace('")', '\\n")')
FILE_WRITER = "out = open(sys.argv[3], 'a', buffering=1)\n" + FILE_WRITER

EVENT_WRITER = """
import sys, time
from tensorboardX import SummaryWriter
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
w = SummaryWriter(sys.argv[3], flush_secs=1)
t0 = time.monotonic()
i = 0
while time.monotonic() - t0 < seconds:
    target = int((time.monotonic() - t0) * rate)
    while i < target:
        w.add_scalar("loss", 1.0 / (i + 1), i)
        i += 1
    time.sleep(0.01)
w.close()
"""


def follow_cpu(kind: str, rate: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / ("metrics.log" if kind == "file" else "logs")
        code = FILE_WRITER if kind == "file" else EVENT_WRITER
        proc = subprocess.Popen([sys.executable, "-c", "import sys\n" + code, str(rate),
                                 str(seconds), str(target)])  # fmt: skip
        found = 0
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        if kind == "file":
            parser = TextParser(["loss", "accuracy"])
            follower = FileFollower(target, want=parser.wanted)
            for lines in follower.follow(lambda: proc.poll() is None, 0.1):
                found += sum(len(parser.parse_bytes(line)) for line in lines)
        else:
            events = tfevent.TfEventFollower(target, ["loss"])
            while proc.poll() is None:
                found += len(events.poll())
                time.sleep(0.1)
            found += len(events.finish())
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        proc.wait()
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"wall": wall, "cpu": cpu, "found": found, "writer": child.ru_utime + child.ru_stime}


def bench_follow(seconds: float) -> list[str]:
    rows = [
        "| source | writer rate | metrics found | wall s | follower CPU s | % of a core |",
        "|---|---|---|---|---|---|",
    ]
    for kind, rate, label in (
        ("file", 10_000, "FileFollower + TEXT, 10,000 lines/s"),
        ("events", 1_000, "TfEventFollower, tensorboardX 1,000 scalars/s"),
    ):
        r = follow_cpu(kind, rate, seconds)
        rows.append(
            f"| {label} | {rate:,}/s | {r['found']:,.0f} | {r['wall']:.2f} | {r['cpu']:.3f} | "
            f"{100 * r['cpu'] / r['wall']:.2f}% |"
        )
    return rows


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--mb", type=float, default=20.0, help="MB of log text per parser case")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the CPU runs")
    ap.add_argument("--rate", type=int, default=10_000, help="trial lines per second")
    ap.add_argument(
        "--collector-root",
        type=Path,
        default=ROOT,
        help="directory holding the metrics_collector package the wrapper runs from "
        "(e.g. an exported older version, for A/B runs); default this checkout",
    )
    ap.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable); default all",
    )
    args = ap.parse_args(argv)
    only = set(args.only or SECTIONS)
    out: list[str] = []
    if "parsers" in only:
        out += ["### Parsing throughput (in memory, one thread)", ""]
        out += [*bench_parsers(args.mb), ""]
    if "events" in only:
        out += ["### Event files (TfEventFollower.finish over one file)", ""]
        out += [*bench_events(args.events), ""]
    if "wrapper" in only:
        out += [f"### CPU of the stdout wrapper, trial printing {args.rate:,} lines/s", ""]
        out += [*bench_wrapper(args.rate, args.seconds, args.collector_root), ""]
    if "follow" in only:
        out += ["### CPU of following a file / an event directory (poll every 0.1 s)", ""]
        out += [*bench_follow(args.seconds), ""]
    return out


SECTIONS = ("parsers", "events", "wrapper", "follow")


if __name__ == "__main__":
    print("\n".join(main()))
