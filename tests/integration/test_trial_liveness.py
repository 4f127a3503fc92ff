"""Heartbeats end to end: real collectors, stopped, killed, throttled, and a controller restart.

Each test runs a one-trial experiment through the reconcile loop with the local
executor (collector beating every 0.2 s) and a controller whose heartbeat timeout is
2 s, against a real DBManager over SQLite.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from katib.api.loading import load_experiment_dict
from katib.api.models import Experiment, Trial
from katib.controller.reconcile import Controller
from katib.controller.suggestion_client import SuggestionReply
from katib.executors.base import LaunchContext
from katib.executors.local import LocalExecutor
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.sql import SQLStorage

TIMEOUT = 2.0
PROGRAM = (
    "import sys, time\n"
    "args = dict(a.lstrip('-').split('=', 1) for a in sys.argv[1:])\n"
    "time.sleep(float(args['sleep']))\n"
    "print('accuracy=' + args['x'], flush=True)\n"
)


class Suggestions:
    def validate(self, experiment: Experiment) -> None:
        return None

    def get_suggestions(
        self,
        experiment: Experiment,
        trials: Sequence[Trial],
        count: int,
        total: int,
        settings: Sequence[tuple[str, str]] = (),
        **_: Any,
    ) -> SuggestionReply:
        values = [{"x": "0.5"} for _ in range(count)]
        return SuggestionReply(values, [None] * count, [{}] * count)


def experiment(sleep: float) -> Experiment:
    doc: dict[str, Any] = {
        "metadata": {"name": "live"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 1,
            "maxTrialCount": 1,
            "maxFailedTrialCount": 1,
            "parameters": [
                {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "main",
                                        "command": ["python3", "-c", PROGRAM],
                                        "args": ["--x=${trialParameters.x}", f"--sleep={sleep}"],
                                    }
                                ]
                            }
                        }
                    },
                },
            },
        },
    }
    return load_experiment_dict(doc)


class Harness:
    def __init__(self, tmp_path: Path, storage: SQLStorage, address: str) -> None:
        self.tmp_path = tmp_path
        self.storage = storage
        self.address = address
        self.executor = LocalExecutor(tmp_path / "trials", heartbeat_interval=0.2)
        self.controller = self.new_controller()

    def new_controller(self) -> Controller:
        return Controller(
            self.storage,
            self.executor,
            lambda name: Suggestions(),  # type: ignore[arg-type,return-value]
            lambda exp: LaunchContext(experiment=exp, db_manager_address=self.address),
            heartbeat_timeout_seconds=TIMEOUT,
        )

    def restart(self) -> None:
        """What a killed and restarted controller has: nothing but storage and files."""
        self.executor.close()
        self.executor = LocalExecutor(self.tmp_path / "trials", heartbeat_interval=0.2)
        self.controller = self.new_controller()

    def trial(self) -> Trial:
        return self.storage.list_trials("live")[0]

    def trial_dir(self) -> Path:
        return self.executor.trial_dir(self.trial())

    def run_until(self, done: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            self.controller.reconcile("live")
            time.sleep(0.05)

    def start(self) -> tuple[int, int]:
        """Run until the trial command runs; (collector pid, trial pid)."""

        def running() -> bool:
            trials = self.storage.list_trials("live")
            return bool(trials) and (self.executor.trial_dir(trials[0]) / "trial.pid").exists()

        self.run_until(running)
        directory = self.trial_dir()
        return int((directory / "collector.pid").read_text()), int(
            (directory / "trial.pid").read_text()
        )

    def finish(self) -> Trial:
        self.run_until(lambda: self.controller.reconcile("live").completed)
        return self.trial()


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    server, port = serve_dbmanager(storage)
    storage.create_experiment(experiment(sleep=60))
    h = Harness(tmp_path, storage, f"127.0.0.1:{port}")
    yield h
    for name in ("collector.pid", "trial.pid"):  # never leave a stopped process behind
        path = h.trial_dir() / name
        if path.exists():
            pid = int(path.read_text())
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    h.executor.close()
    server.stop(None)
    storage.close()


def test_hung_collector_fails_the_trial_and_kills_its_processes(harness: Harness) -> None:
    collector, trial_pid = harness.start()
    os.kill(collector, signal.SIGSTOP)
    stopped_at = time.monotonic()
    trial = harness.finish()
    waited = time.monotonic() - stopped_at
    last = trial.status.conditions[-1]
    assert (last.type, last.reason) == ("Failed", "TrialHeartbeatLost"), last
    assert "stopped sending heartbeats (last heartbeat at 20" in (last.message or "")
    # The timeout runs from the last heartbeat, up to one interval (0.2 s) before the stop.
    assert waited >= TIMEOUT - 0.2
    assert gone(collector) and gone(trial_pid)


def test_killed_collector_fails_the_trial_and_kills_the_survivors(harness: Harness) -> None:
    collector, trial_pid = harness.start()
    os.kill(collector, signal.SIGKILL)
    trial = harness.finish()
    last = trial.status.conditions[-1]
    assert (last.type, last.reason) == ("Failed", "TrialLost"), last
    assert "exited without recording the trial's outcome" in (last.message or "")
    assert "last heartbeat was at 20" in (last.message or "")
    deadline = time.monotonic() + 10
    while not gone(trial_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(trial_pid), "the trial command outlived its collector"


def test_slow_collector_is_not_failed(tmp_path: Path) -> None:
    """A collector that only gets the CPU now and then (stopped 0.6 s of every 0.8 s)."""
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    server, port = serve_dbmanager(storage)
    storage.create_experiment(experiment(sleep=4))
    harness = Harness(tmp_path, storage, f"127.0.0.1:{port}")
    done = threading.Event()
    try:
        collector, _ = harness.start()

        def throttle() -> None:
            while not done.is_set():
                try:
                    os.kill(collector, signal.SIGSTOP)
                    time.sleep(0.6)
                    os.kill(collector, signal.SIGCONT)
                except ProcessLookupError:
                    return
                time.sleep(0.2)

        thread = threading.Thread(target=throttle)
        thread.start()
        try:
            trial = harness.finish()
        finally:
            done.set()
            thread.join()
            if not gone(collector):
                os.kill(collector, signal.SIGCONT)
        assert trial.condition == "Succeeded", trial.status.conditions[-1]
    finally:
        harness.executor.close()
        server.stop(None)
        storage.close()


def test_restarted_controller_does_not_fail_running_trials(tmp_path: Path) -> None:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    server, port = serve_dbmanager(storage)
    storage.create_experiment(experiment(sleep=4))
    harness = Harness(tmp_path, storage, f"127.0.0.1:{port}")
    try:
        harness.start()
        harness.restart()
        time.sleep(TIMEOUT * 1.5)  # the controller is "down" for longer than the timeout
        trial = harness.finish()
        assert trial.condition == "Succeeded", trial.status.conditions[-1]
    finally:
        harness.executor.close()
        server.stop(None)
        storage.close()
