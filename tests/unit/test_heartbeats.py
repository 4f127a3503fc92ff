"""Heartbeats: the collector's writer, the executor's reader and the controller's monitor."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from katib.controller.heartbeats import HeartbeatMonitor
from katib.errors import ExecutorError
from katib.executors.base import DEFAULT_HEARTBEAT_TIMEOUT, heartbeat_timeout
from metrics_collector.heartbeat import (
    DEFAULT_INTERVAL,
    HEARTBEAT_FILE,
    HeartbeatWriter,
    interval_for,
    read_heartbeat,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_changing_heartbeat_is_never_lost() -> None:
    clock = Clock()
    monitor = HeartbeatMonitor(timeout=30, clock=clock)
    for i in range(20):
        assert monitor.observe("t", T0 + timedelta(seconds=i)) is None
        clock.now += 25  # looks further apart than the timeout: still a new value each time


def test_a_frozen_heartbeat_is_lost_after_the_timeout() -> None:
    clock = Clock()
    monitor = HeartbeatMonitor(timeout=30, clock=clock)
    assert monitor.observe("t", T0) is None
    clock.now += 29.9
    assert monitor.observe("t", T0) is None
    clock.now += 0.2
    lost = monitor.observe("t", T0)
    assert lost is not None and lost.last == T0 and lost.silent_for == pytest.approx(30.1)
    message = lost.message()
    assert "last heartbeat at 2026-01-01T00:00:00.000Z" in message
    assert "timeout 30s" in message


def test_a_restarted_controller_counts_from_its_first_look() -> None:
    """The old beat may be hours old by the wall clock; a fresh monitor does not care."""
    clock = Clock()
    old_beat = T0 - timedelta(hours=3)
    fresh = HeartbeatMonitor(timeout=30, clock=clock)
    assert fresh.observe("t", old_beat) is None
    clock.now += 10
    assert fresh.observe("t", old_beat) is None
    clock.now += 21
    assert fresh.observe("t", old_beat) is not None


def test_no_heartbeat_at_all_counts_from_the_first_look() -> None:
    clock = Clock()
    monitor = HeartbeatMonitor(timeout=2, clock=clock)
    assert monitor.observe("t", None) is None
    clock.now += 1
    assert monitor.observe("t", T0) is None  # the first beat arrives: counting restarts
    clock.now += 1.5
    assert monitor.observe("t", T0) is None
    monitor.forget("t")
    assert monitor.observe("t", None) is None
    clock.now += 2
    lost = monitor.observe("t", None)
    assert lost is not None and lost.last is None and "never sent one" in lost.message()


def test_timeout_zero_disables() -> None:
    clock = Clock()
    monitor = HeartbeatMonitor(timeout=0, clock=clock)
    monitor.observe("t", T0)
    clock.now += 1e6
    assert monitor.observe("t", T0) is None


def test_timeout_from_environment() -> None:
    assert heartbeat_timeout({}) == DEFAULT_HEARTBEAT_TIMEOUT
    assert heartbeat_timeout({"KATIB_HEARTBEAT_TIMEOUT": "1.5"}) == 1.5
    assert heartbeat_timeout({"KATIB_HEARTBEAT_TIMEOUT": "-3"}) == 0.0
    with pytest.raises(ExecutorError, match="not a number"):
        heartbeat_timeout({"KATIB_HEARTBEAT_TIMEOUT": "soon"})
    assert interval_for(30) == DEFAULT_INTERVAL
    assert interval_for(2) == 0.5
    assert interval_for(0) == DEFAULT_INTERVAL


def test_writer_beats_until_stopped(tmp_path: Path) -> None:
    assert read_heartbeat(tmp_path) is None
    with HeartbeatWriter(tmp_path, interval=0.05) as writer:
        first = read_heartbeat(tmp_path)
        assert first is not None
        deadline = time.monotonic() + 10
        while writer.beats < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.beats >= 3
        later = read_heartbeat(tmp_path)
        assert later is not None and later > first
    beats = writer.beats
    time.sleep(0.2)
    assert writer.beats == beats, "no beat after stop()"
    assert (tmp_path / HEARTBEAT_FILE).read_text().startswith('{"time": ')
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_writer_survives_a_missing_directory(tmp_path: Path) -> None:
    writer = HeartbeatWriter(tmp_path / "gone", interval=0.05)
    writer.beat()  # logged, not raised: the trial must go on
    assert read_heartbeat(tmp_path / "gone") is None
