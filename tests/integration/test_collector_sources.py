"""File and TensorFlow-event metric sources followed while a real trial process writes them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from metrics_collector.file_follower import FileFollower, FollowStatus
from metrics_collector.json_parser import SKIP_INVALID_JSON, JsonLineParser
from metrics_collector.parsers import ParsedMetric, TextParser, make_line_parser
from metrics_collector.tfevent import TfEventFollower

POLL = 0.05


def start(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args])


def follow_file(
    proc: subprocess.Popen[bytes],
    follower: FileFollower,
    parse: Callable[[bytes], list[ParsedMetric]],
) -> tuple[list[ParsedMetric], int]:
    """All metrics, and how many arrived while the process was still running."""
    found: list[ParsedMetric] = []
    live = 0
    for lines in follower.follow(lambda: proc.poll() is None, POLL):
        batch = [m for line in lines for m in parse(line)]
        if proc.poll() is None:
            live += len(batch)
        found += batch
    assert proc.wait() == 0
    return found, live


def test_text_file_created_late_with_split_writes(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    proc = start(
        """
        import sys, time
        time.sleep(0.3)  # the file appears after the collector started
        with open(sys.argv[1], "a") as f:
            for i in range(10):
                f.write(f"2024-03-04T17:55:0{i}Z INFO epoch={i} loss=0.{i}")
                f.flush()
                time.sleep(0.02)  # the line is half written for a while
                f.write("\\r\\n")
                f.flush()
                time.sleep(0.05)
            f.write("loss=9.5")  # the last line has no newline
        """,
        str(path),
    )
    parser = TextParser(["loss"])
    follower = FileFollower(path, want=parser.wanted)
    found, live = follow_file(proc, follower, parser.parse_bytes)
    assert [m.value for m in found] == [f"0.{i}" for i in range(10)] + ["9.5"]
    assert [m.timestamp for m in found[:10]] == [
        datetime(2024, 3, 4, 17, 55, i, tzinfo=UTC) for i in range(10)
    ]
    assert live >= 5  # most arrived while the trial ran, not only at the end
    assert follower.status == FollowStatus.FINISHED


def test_rotating_log_handler_every_line_once(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    proc = start(
        """
        import logging, logging.handlers, sys, time
        h = logging.handlers.RotatingFileHandler(sys.argv[1], maxBytes=300, backupCount=100)
        log = logging.getLogger("t")
        log.addHandler(h)
        log.setLevel(logging.INFO)
        for i in range(60):
            log.info("step %d accuracy=%d", i, i)
            time.sleep(0.01 if i % 10 else 0.25)  # at most one rollover per poll
        """,
        str(path),
    )
    parser = TextParser(["accuracy"])
    follower = FileFollower(path, want=parser.wanted)
    found, _ = follow_file(proc, follower, parser.parse_bytes)
    assert [m.value for m in found] == [str(i) for i in range(60)]
    assert follower.stats.replacements >= 3
    assert len(list(tmp_path.glob("train.log.*"))) == follower.stats.replacements


def test_json_file_with_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    proc = start(
        """
        import json, sys, time
        with open(sys.argv[1], "w") as f:
            for i in range(5):
                f.write(json.dumps({"epoch": i, "loss": 1 / (i + 1), "acc": str(i / 10),
                                    "timestamp": 1638422847.5 + i}) + "\\n")
                f.flush()
                time.sleep(0.05)
            f.write("Traceback: loss is not json\\n")
        """,
        str(path),
    )
    parser = make_line_parser("JSON", ["loss", "acc"])
    assert isinstance(parser, JsonLineParser)
    found, _ = follow_file(proc, FileFollower(path, want=parser.wanted), parser.parse_bytes)
    assert [(m.name, float(m.value)) for m in found if m.name == "loss"] == [
        ("loss", 1 / (i + 1)) for i in range(5)
    ]
    assert [m.value for m in found if m.name == "acc"] == [str(i / 10) for i in range(5)]
    assert found[-1].timestamp == datetime(2021, 12, 2, 5, 27, 31, 500000, tzinfo=UTC)
    assert parser.skipped == {SKIP_INVALID_JSON: 1}


def test_metrics_file_never_written(tmp_path: Path) -> None:
    proc = start("print('training without writing the metrics file')")
    follower = FileFollower(tmp_path / "metrics.log")
    found, _ = follow_file(proc, follower, TextParser(["loss"]).parse_bytes)
    assert found == []
    assert follower.status == FollowStatus.MISSING
    assert "was never created" in follower.reason


def follow_events(
    proc: subprocess.Popen[bytes], follower: TfEventFollower
) -> tuple[list[ParsedMetric], int]:
    found: list[ParsedMetric] = []
    live = 0
    while proc.poll() is None:
        batch = follower.poll()
        live += len(batch)
        found += batch
        time.sleep(POLL)
    found += follower.finish()
    assert proc.wait() == 0
    return found, live


def test_tensorboardx_trial_followed_live(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    proc = start(
        """
        import sys, time
        from tensorboardX import SummaryWriter
        w = SummaryWriter(sys.argv[1])
        for step in range(8):
            w.add_scalar("train/loss", 1 / (step + 1), step)
            w.add_scalar("accuracy", step / 10, step)
            w.flush()
            time.sleep(0.08)
        w.add_hparams({"lr": 0.1}, {"hparam/accuracy": 0.7})  # a new subdirectory
        w.close()
        """,
        str(tmp_path / "logs"),
    )
    follower = TfEventFollower(
        tmp_path / "logs", ["accuracy", "train/loss", "hparam/accuracy"], rescan_interval=0.2
    )
    found, live = follow_events(proc, follower)
    by_name: dict[str, list[str]] = {}
    for m in found:
        by_name.setdefault(m.name, []).append(m.value)
    assert by_name["train/loss"] == [
        "1.0",
        "0.5",
        "0.33333334",
        "0.25",
        "0.2",
        "0.16666667",
        "0.14285715",
        "0.125",
    ]
    assert by_name["accuracy"] == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    assert by_name["hparam/accuracy"] == ["0.7"]
    assert live >= 4
    assert not follower.skipped
    assert len(follower.files) == 2


def test_event_records_written_a_few_bytes_at_a_time(tmp_path: Path) -> None:
    """A slow writer leaves partial records at the tail: retried, never called corrupt."""
    pytest.importorskip("tensorboardX")
    proc = start(
        """
        import sys, time
        from tensorboardX.proto import event_pb2, summary_pb2
        from tensorboardX.record_writer import RecordWriter
        w = RecordWriter(sys.argv[1] + "/events.out.tfevents.1.host")
        class Slow:
            def __init__(self, f): self.f = f
            def write(self, data):
                for i in range(0, len(data), 7):
                    self.f.write(data[i:i + 7]); self.f.flush(); time.sleep(0.002)
            def flush(self): self.f.flush()
            def close(self): self.f.close()
        w._writer = Slow(w._writer)
        for step in range(20):
            v = summary_pb2.Summary.Value(tag="loss", simple_value=step)
            ev = event_pb2.Event(wall_time=time.time(), step=step,
                                 summary=summary_pb2.Summary(value=[v]))
            w.write(ev.SerializeToString())
        w.close()
        """,
        str(tmp_path),
    )
    follower = TfEventFollower(tmp_path, ["loss"], rescan_interval=0.1)
    found, live = follow_events(proc, follower)
    assert [m.value for m in found] == [f"{s}.0" for s in range(20)]
    assert live > 0
    assert not follower.skipped
