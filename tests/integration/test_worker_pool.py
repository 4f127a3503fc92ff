"""WorkerPoolExecutor on its own: warm reuse, replacement, outcomes, state across restarts."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from katib.api.loading import load_experiment_dict
from katib.api.models import Experiment, ObjectMeta, ParameterAssignment, Trial, TrialSpec
from katib.executors.base import LaunchContext, TrialOutcome, TrialPhase
from katib.executors.worker_pool import WorkerPoolExecutor


def behaviour(params: dict[str, Any]) -> Any:
    mode = params["mode"]
    if mode == "quiet":  # prints nothing, ends at once
        return {"score": 0.25}
    print(f"pid={os.getpid()}")
    if mode == "exit":
        sys.exit(3)
    if mode == "text":
        return "not a number"
    if mode == "abort":
        os.abort()
    if mode == "sleep":
        time.sleep(60)
    return {"score": 0.5}


def _experiment() -> Experiment:
    return load_experiment_dict(
        {
            "metadata": {"name": "pool"},
            "spec": {
                "objective": {"type": "maximize", "objectiveMetricName": "score"},
                "algorithm": {"algorithmName": "random"},
                "parameters": [
                    {
                        "name": "mode",
                        "parameterType": "categorical",
                        "feasibleSpace": {
                            "list": ["ok", "exit", "text", "abort", "sleep", "quiet"]
                        },
                    }
                ],
                "trialTemplate": {
                    "primaryContainerName": "main",
                    "trialParameters": [{"name": "mode", "reference": "mode"}],
                    "trialSpec": {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [
                                        {
                                            "name": "main",
                                            "image": "python",
                                            "command": ["true", "${trialParameters.mode}"],
                                        }
                                    ],
                                }
                            }
                        },
                    },
                },
            },
        }
    )


@pytest.fixture
def context() -> LaunchContext:
    return LaunchContext(experiment=_experiment(), db_manager_address="unused")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[WorkerPoolExecutor]:
    executor = WorkerPoolExecutor(tmp_path / "trials", size=1)
    executor.register("default", "pool", behaviour)
    yield executor
    executor.close()


def _trial(name: str, mode: str) -> Trial:
    return Trial(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=TrialSpec(parameter_assignments=[ParameterAssignment(name="mode", value=mode)]),
    )


def _run(pool: WorkerPoolExecutor, trial: Trial, context: LaunchContext) -> TrialOutcome:
    pool.launch(trial, context)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        outcome = pool.poll(trial)
        if outcome.phase == TrialPhase.FINISHED:
            return outcome
        pool.wait(0.1)
    raise AssertionError(f"{trial.name} did not finish")


def _wait_for_output(pool: WorkerPoolExecutor, trial: Trial) -> None:
    deadline = time.monotonic() + 30
    path = pool.log_path(trial)
    while not (path.exists() and "pid=" in path.read_text()):
        assert time.monotonic() < deadline, f"{trial.name} printed nothing"
        pool.wait(0.02)


def _pid(pool: WorkerPoolExecutor, trial: Trial) -> int:
    text = pool.log_path(trial).read_text()
    return int(text.split("pid=")[1].split()[0])


def test_workers_are_reused_and_replaced(
    pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    first, second = _trial("t-1", "ok"), _trial("t-2", "ok")
    assert _run(pool, first, context).succeeded
    assert _run(pool, second, context).succeeded
    assert _pid(pool, first) == _pid(pool, second)  # one warm worker ran both

    crash = _trial("t-3", "abort")
    outcome = _run(pool, crash, context)
    assert outcome.signal == 6 and "SIGABRT" in outcome.message
    after = _trial("t-4", "ok")
    assert _run(pool, after, context).succeeded
    assert _pid(pool, after) != _pid(pool, first)  # a new worker took over


def test_outcomes_of_exit_and_a_bad_return_value(
    pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    exited = _run(pool, _trial("t-exit", "exit"), context)
    assert exited.exit_code == 3 and "SystemExit" in exited.message
    text = _run(pool, _trial("t-text", "text"), context)
    assert not text.succeeded and text.message.startswith("TypeError: the objective returned")
    ok = _run(pool, _trial("t-ok", "ok"), context)
    assert [(m.metric_name, m.value) for m in ok.unreported] == [("score", "0.5")]


def test_state_survives_a_new_executor(
    tmp_path: Path, pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    done = _trial("t-done", "ok")
    outcome = _run(pool, done, context)
    assert outcome.unreported  # not yet acknowledged
    sleeping = _trial("t-sleep", "sleep")
    pool.launch(sleeping, context)
    _wait_for_output(pool, sleeping)  # its function runs (before that it is NotStarted)
    pool.close()  # the process that owned the pool is gone

    fresh = WorkerPoolExecutor(tmp_path / "trials", size=1)
    try:
        # finished but unacknowledged: its metrics were never stored, so it is lost too
        assert fresh.poll(done).phase == TrialPhase.LOST
        assert fresh.poll(sleeping).phase == TrialPhase.LOST
        assert fresh.poll(_trial("t-never", "ok")).phase == TrialPhase.NOT_STARTED
        fresh.launch(sleeping, context)  # launched before: never run twice
        assert fresh.poll(sleeping).phase == TrialPhase.LOST
    finally:
        fresh.close()

    again = WorkerPoolExecutor(tmp_path / "trials", size=1)
    again.register("default", "pool", behaviour)
    try:
        acked = _trial("t-acked", "ok")
        _run(again, acked, context)
        again.acknowledge(acked)
    finally:
        again.close()
    restarted = WorkerPoolExecutor(tmp_path / "trials", size=1)
    try:
        outcome = restarted.poll(acked)
        assert outcome.phase == TrialPhase.FINISHED and outcome.succeeded
        assert outcome.unreported == []
    finally:
        restarted.close()


def test_a_trial_sent_to_a_dying_worker_goes_to_another(
    pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    first = _trial("t-dying-1", "ok")
    assert _run(pool, first, context).succeeded
    dying = _pid(pool, first)
    os.kill(dying, 9)  # and launch at once: the trial reaches a worker that never begins it
    second = _trial("t-dying-2", "ok")
    outcome = _run(pool, second, context)
    assert outcome.succeeded, outcome.message
    assert _pid(pool, second) != dying


def test_an_idle_worker_killed_from_outside_is_replaced(
    pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    first = _trial("t-idle-1", "ok")
    assert _run(pool, first, context).succeeded
    os.kill(_pid(pool, first), 9)  # the idle worker dies while no trial runs
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{_pid(pool, first)}") and time.monotonic() < deadline:
        with open(f"/proc/{_pid(pool, first)}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    second = _trial("t-idle-2", "ok")
    assert _run(pool, second, context).succeeded  # not deferred forever
    assert _pid(pool, second) != _pid(pool, first)
