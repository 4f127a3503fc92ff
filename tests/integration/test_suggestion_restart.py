"""kill -9 of the suggestion service mid-experiment changes nothing the user can see.

The embedded Runtime drives a small experiment with the fake executor; after a
few trials the suggestion service process is killed with SIGKILL. The next
GetSuggestions must start a new service, the experiment must complete, and the
trials' assignments must be exactly those of an uninterrupted run with the same
random_state: a stateless service that rebuilds from the history it is sent
suggests the same points as one that never died.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from katib.api.loading import load_experiment_dict
from katib.controller.reconcile import PassResult
from katib.controller.runtime import RunOptions, Runtime
from katib.executors.fake import FakeExecutor, FakeRun

MAX_TRIALS = 12
KILL_AFTER = 5  # trials created before the service is killed


def experiment_doc(algorithm: str) -> dict[str, Any]:
    """Two doubles and an int (cmaes needs two numeric dimensions), parallelism 2."""

    def param(name: str, ptype: str, lo: str, hi: str) -> dict[str, Any]:
        return {"name": name, "parameterType": ptype, "feasibleSpace": {"min": lo, "max": hi}}

    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "restart"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {
                "algorithmName": algorithm,
                "algorithmSettings": [{"name": "random_state", "value": "5"}],
            },
            "parallelTrialCount": 2,
            "maxTrialCount": MAX_TRIALS,
            "maxFailedTrialCount": MAX_TRIALS,
            "parameters": [
                param("x", "double", "0", "1"),
                param("y", "double", "-1", "1"),
                param("n", "int", "1", "6"),
            ],
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": k, "reference": k} for k in ("x", "y", "n")],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "training-container",
                            "image": "python:3.11",
                            "command": ["python3", "-c", "print('${trialParameters.x}', "
                                    "'${trialParameters.y}', '${trialParameters.n}')"],
                        }],
                    }}},
                },
            },
        },
    }


def behaviour(assignments: Mapping[str, str]) -> FakeRun:
    """Deterministic outcome and duration per point; one point in five fails."""
    x, y, n = float(assignments["x"]), float(assignments["y"]), int(assignments["n"])
    accuracy = 1 - (x - 0.3) ** 2 - (y - 0.2) ** 2 - 0.01 * (n - 4) ** 2
    polls = 1 + int(x * 3)
    if int(x * 1000) % 5 == 0:
        return FakeRun(exit_code=1, polls=polls)
    return FakeRun(metrics=[("accuracy", f"{accuracy:.6f}")], polls=polls)


def service_pids() -> list[int]:
    """This process's `python -m suggestion_services` children (read from /proc)."""
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and b"suggestion_services" in cmdline:
            pids.append(int(entry.name))
    return pids


def kill_9(pid: int, wait: bool = True) -> None:
    """SIGKILL; with `wait`, return once every thread of it has ended.

    The main thread turns zombie first; until the other threads (gRPC's) have
    exited, waitpid does not report the process, so the controller would still
    take it for alive. WNOWAIT leaves the reaping to its Popen.
    """
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while wait:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} survived SIGKILL")
        time.sleep(0.005)


def run_experiment(
    data_dir: Path, algorithm: str, kills: int = 0, wait: bool = True
) -> tuple[list[dict[str, str]], set[int], str]:
    """Run to completion, killing the service `kills` times (every KILL_AFTER trials).

    Returns the assignments in creation order, the service pids seen and the reason
    the experiment ended.
    """
    seen: set[int] = set()
    killed = 0

    def on_pass(result: PassResult) -> None:
        nonlocal killed
        seen.update(service_pids())
        if killed < kills and len(result.trials) >= KILL_AFTER * (killed + 1):
            (pid,) = service_pids()
            kill_9(pid, wait)
            killed += 1

    with Runtime(data_dir=data_dir, executor=FakeExecutor(behaviour)) as runtime:
        runtime.submit(load_experiment_dict(experiment_doc(algorithm)))
        final = runtime.run("restart", on_pass=on_pass, options=RunOptions(poll_interval=0.005))
        trials = runtime.storage.list_trials("restart")
    assert killed == kills
    assert final.status is not None
    reason = [c for c in final.status.conditions if c.status == "True"][-1].reason or ""
    points = [{a.name: a.value for a in t.spec.parameter_assignments} for t in trials]
    return points, seen, reason


# bayesianoptimization passes too, but its three skopt start-ups take ~11 s.
@pytest.mark.parametrize("algorithm", ["tpe", "cmaes", "random"])
def test_kill_9_mid_experiment_gives_the_same_trials(tmp_path: Path, algorithm: str) -> None:
    reference, _, reason = run_experiment(tmp_path / "reference", algorithm)
    assert reason == "ExperimentMaxTrialsReached"
    assert len(reference) == MAX_TRIALS
    interrupted, pids, reason = run_experiment(tmp_path / "killed", algorithm, kills=1)
    assert reason == "ExperimentMaxTrialsReached"
    assert len(pids) == 2, "the service was not restarted"
    assert interrupted == reference


def test_service_dying_just_before_a_call(tmp_path: Path) -> None:
    """Killed without waiting: the next call may reach the dying process. That call
    must fail fast and the pass be retried against a new service (not hang until
    the 60 s deadline and end the run)."""
    points, pids, reason = run_experiment(tmp_path, "random", kills=2, wait=False)
    assert reason == "ExperimentMaxTrialsReached"
    assert len(points) == MAX_TRIALS
    assert len(pids) == 3
