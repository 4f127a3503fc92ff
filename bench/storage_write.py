"""SQLStorage.write_batch: time per call for the batches tune()'s controller writes.

    python bench/storage_write.py [--dir DIR] [--trials 400] [--rounds 5]

tune() writes twice per trial, both fenced by the controller's lease (owner):
- "new": the next trial, planned on the experiment's trial count (expected_count);
- "finish": the finished trial's observation (one metric, step given) and its status.
Each is also timed with the experiment's status in the batch ("+status"), which the
controller adds when the status changed and is due. Per shape the script prints the
median over rounds of the mean per call, in microseconds: wall time and this thread's
CPU time (SQLite in WAL mode with synchronous=NORMAL does not wait for the disk on
commit, so there the two should be close).

SQLite always (a file under --dir, default a new temporary directory); PostgreSQL and
MariaDB/MySQL too when KATIB_TEST_POSTGRES_URL / KATIB_TEST_MYSQL_URL are set (each
run uses its own experiment and trial names and deletes its experiment at the end).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from katib.api.models import Experiment, ExperimentStatus, Trial
from katib.storage.base import MetricLogEntry, WriteBatch
from katib.storage.sql import SQLStorage

SHAPES = ("new", "finish", "new+status", "finish+status")
OWNER = "bench-host:1:1"
T0 = datetime(2024, 3, 4, 17, 55, 8, 123456, tzinfo=UTC)


def rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_experiment(name: str) -> Experiment:
    return Experiment.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "objective": {"type": "minimize", "objectiveMetricName": "objective"},
                "algorithm": {"algorithmName": "tpe"},
                "parallelTrialCount": 1,
                "maxTrialCount": 1_000_000,
                "parameters": [
                    {"name": p, "parameterType": "double",
                     "feasibleSpace": {"min": "-10", "max": "10"}}
                    for p in ("x", "y")
                ],
            },
        }
    )


def make_trial(experiment: str, name: str, index: int) -> tuple[Trial, Trial]:
    """The trial as created (Created condition) and as finished (Succeeded, observed)."""
    created_at = T0 + timedelta(seconds=index)
    doc: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"katib.kubeflow.org/experiment": experiment},
        },
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "objective"},
            "parameterAssignments": [
                {"name": "x", "value": f"{index * 0.001:.6f}"},
                {"name": "y", "value": f"{-index * 0.002:.6f}"},
            ],
        },
        "status": {
            "conditions": [
                {"type": "Created", "status": "True", "reason": "TrialCreated",
                 "message": "Trial is created",
                 "lastUpdateTime": rfc3339(created_at), "lastTransitionTime": rfc3339(created_at)},
            ],
        },
    }
    new = Trial.model_validate(doc)
    done_at = created_at + timedelta(milliseconds=5)
    doc["status"] = {
        "startTime": rfc3339(created_at),
        "completionTime": rfc3339(done_at),
        "conditions": [
            *doc["status"]["conditions"],
            {"type": "Running", "status": "False", "reason": "TrialRunning",
             "lastUpdateTime": rfc3339(done_at), "lastTransitionTime": rfc3339(created_at)},
            {"type": "Succeeded", "status": "True", "reason": "TrialSucceeded",
             "message": "Trial has succeeded",
             "lastUpdateTime": rfc3339(done_at), "lastTransitionTime": rfc3339(done_at)},
        ],
        "observation": {"metrics": [
            {"name": "objective", "min": str(index * 0.5), "max": str(index * 0.5),
             "latest": str(index * 0.5)},
        ]},
    }
    return new, Trial.model_validate(doc)


def make_status(index: int) -> ExperimentStatus:
    return ExperimentStatus.model_validate(
        {
            "startTime": rfc3339(T0),
            "conditions": [
                {"type": "Created", "status": "True", "reason": "ExperimentCreated"},
                {"type": "Running", "status": "True", "reason": "ExperimentRunning",
                 "message": "Experiment is running"},
            ],
            "currentOptimalTrial": {
                "bestTrialName": f"t{index}",
                "parameterAssignments": [{"name": "x", "value": "0.1"}],
                "observation": {"metrics": [{"name": "objective", "min": "0.5",
                                             "max": "0.5", "latest": "0.5"}]},
            },
            "trials": index, "trialsSucceeded": index, "runningTrialList": [f"t{index}"],
        }
    )


def run(url: str, trials: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per shape: (median wall µs, median CPU µs) per write_batch call."""
    storage = SQLStorage(url)
    tag = secrets.token_hex(4)
    name = f"bench-write-{tag}"
    storage.create_experiment(make_experiment(name))
    if not storage.acquire_experiment(name, "default", OWNER):
        raise SystemExit(f"could not take the lease of {name}")
    wall: dict[str, list[float]] = {s: [] for s in SHAPES}
    cpu: dict[str, list[float]] = {s: [] for s in SHAPES}
    count = 0
    try:
        for r in range(rounds):
            with_status = r % 2 == 1  # alternate, so both variants see the same table sizes
            spent: dict[str, list[int]] = {s: [0, 0, 0] for s in SHAPES}
            # Objects built before timing: the controller has them in memory already.
            plans = []
            for i in range(trials):
                index = count + i
                new, done = make_trial(name, f"{name}-{index}", index)
                obs = [MetricLogEntry("objective", str(index * 0.5), T0, step=1)]
                status = make_status(index) if with_status else None
                plans.append((index, new, done, obs, status))
            for index, new, done, obs, status in plans:
                suffix = "+status" if with_status else ""
                calls: list[tuple[str, WriteBatch, int | None]] = [
                    ("new" + suffix, WriteBatch(new_trials=[new], status=status), index),
                    ("finish" + suffix, WriteBatch(
                        observations={new.name: obs}, trial_updates=[done], status=status
                    ), None),
                ]
                for shape, batch, expected in calls:
                    w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                    storage.write_batch(
                        name, "default", batch, owner=OWNER, expected_count=expected
                    )
                    c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
                    acc = spent[shape]
                    acc[0] += w1 - w0
                    acc[1] += c1 - c0
                    acc[2] += 1
            count += trials
            for shape, (w, c, n) in spent.items():
                if n:
                    wall[shape].append(w / n / 1000)
                    cpu[shape].append(c / n / 1000)
        return {s: (statistics.median(wall[s]), statistics.median(cpu[s])) for s in SHAPES}
    finally:
        try:
            storage.delete_experiment(name, "default")
        finally:
            storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the SQLite file (default: a new temp dir)")
    parser.add_argument("--trials", type=int, default=400, help="trials per round")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds (alternately without and with the status)")
    args = parser.parse_args()
    rounds = max(args.rounds, 2)
    targets: list[tuple[str, Callable[[], str]]] = []
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="katib-bench-write-")
        directory = Path(tmp.name)
    else:
        directory = args.dir
        directory.mkdir(parents=True, exist_ok=True)
    db = directory / f"bench-{secrets.token_hex(4)}.db"
    targets.append(("sqlite", lambda: f"sqlite:///{db}"))
    for label, env in (("postgresql", "KATIB_TEST_POSTGRES_URL"),
                       ("mysql", "KATIB_TEST_MYSQL_URL")):
        url = os.environ.get(env)
        if url:
            targets.append((label, lambda url=url: url))
    print(f"write_batch per call, µs (median of {rounds // 2}+{rounds - rounds // 2} rounds "
          f"x {args.trials} trials; wall / CPU of this thread)")
    try:
        for label, make_url in targets:
            results = run(make_url(), args.trials, rounds)
            for shape, (w, c) in results.items():
                print(f"  {label:<10} {shape:<14} wall {w:8.1f}  cpu {c:8.1f}")
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
