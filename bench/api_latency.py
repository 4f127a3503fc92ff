"""REST API latency (p50/p99) of list and get with 1,000 experiments and 100,000 trials.

    python bench/api_latency.py                          # SQLite in a temporary directory
    python bench/api_latency.py --db postgresql+psycopg://postgres@127.0.0.1:5432/bench
    python bench/api_latency.py --experiments 100 --trials-per-experiment 100 --requests 50

The database is seeded with bulk inserts through SQLAlchemy (realistic documents:
a finished experiment with status and optimal trial, trials with parameters,
observations and conditions), then a real `katib server --port 0` process serves it
and each route is timed from a client on the same machine, one request at a time.
A server database given with --db must be empty (or the script refuses); its
experiments live in namespace `bench-*` and are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from katib.storage.sql import SQLStorage
from katib.storage.tables import experiments, trials

URL_LINE = re.compile(r"katib server listening on (http://\S+)")
STATUSES = ["Succeeded", "Succeeded", "Succeeded", "Failed", "Killed", "Running", "Created"]


def _experiment_doc(name: str, namespace: str, max_trials: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy",
                          "additionalMetricNames": ["loss"],
                          "metricStrategies": [{"name": "accuracy", "value": "max"},
                                               {"name": "loss", "value": "max"}]},
            "algorithm": {"algorithmName": "random", "algorithmSettings": []},
            "parallelTrialCount": 3,
            "maxTrialCount": max_trials,
            "maxFailedTrialCount": 3,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "parameters": [
                {"name": "lr", "parameterType": "double",
                 "feasibleSpace": {"min": "0.001", "max": "0.1"}},
                {"name": "layers", "parameterType": "int",
                 "feasibleSpace": {"min": "1", "max": "8"}},
            ],
            "resumePolicy": "Never",
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": "lr", "reference": "lr"},
                                    {"name": "layers", "reference": "layers"}],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {
                    "spec": {"containers": [{
                        "name": "training-container", "image": "python:3.11",
                        "command": ["python3", "/opt/train.py", "--lr=${trialParameters.lr}",
                                    "--layers=${trialParameters.layers}"]}],
                        "restartPolicy": "Never"}}}},
                "successCondition": 'status.conditions.#(type=="Complete")#|#(status=="True")#',
                "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#',
            },
        },
    }


def _observation(accuracy: float) -> dict[str, Any]:
    return {"metrics": [
        {"name": "accuracy", "min": f"{accuracy / 2:.4f}", "max": f"{accuracy:.4f}",
         "latest": f"{accuracy:.4f}"},
        {"name": "loss", "min": f"{1 - accuracy:.4f}", "max": "0.9", "latest": "0.5"},
    ]}


def seed(url: str, n_experiments: int, per_experiment: int, rng: random.Random) -> float:
    """Insert the rows in bulk; returns the seconds it took."""
    started = time.perf_counter()
    storage = SQLStorage(url)
    engine = storage.engine
    base = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        conditions = [
            [rng.choice(STATUSES) for _ in range(per_experiment)] for _ in range(n_experiments)
        ]
        with engine.begin() as conn:
            exp_rows = []
            for i in range(n_experiments):
                name, namespace = f"exp-{i:04d}", f"bench-{i % 10}"
                best = rng.random()
                tally = {c: conditions[i].count(c) for c in set(conditions[i])}
                status = {
                    "startTime": "2026-01-01T00:00:00Z",
                    "completionTime": "2026-01-01T01:00:00Z",
                    "conditions": [
                        {"type": "Created", "status": "True", "reason": "ExperimentCreated"},
                        {"type": "Running", "status": "False", "reason": "ExperimentRunning"},
                        {"type": "Succeeded", "status": "True",
                         "reason": "ExperimentMaxTrialsReached"},
                    ],
                    "currentOptimalTrial": {
                        "bestTrialName": f"{name}-t0000",
                        "parameterAssignments": [{"name": "lr", "value": "0.01"},
                                                 {"name": "layers", "value": "3"}],
                        "observation": _observation(best),
                    },
                    "trials": per_experiment,
                    "trialsSucceeded": tally.get("Succeeded", 0),
                    "trialsFailed": tally.get("Failed", 0),
                    "trialsKilled": tally.get("Killed", 0),
                    "trialsRunning": tally.get("Running", 0),
                    "trialsPending": tally.get("Created", 0),
                }
                exp_rows.append({
                    "name": name, "namespace": namespace,
                    "spec": _experiment_doc(name, namespace, per_experiment),
                    "status": status, "condition_type": "Succeeded",
                    "created_at": base + timedelta(seconds=i),
                    "updated_at": base + timedelta(seconds=i),
                })
            conn.execute(sa.insert(experiments), exp_rows)
            ids = {(r.namespace, r.name): r.id for r in conn.execute(
                sa.select(experiments.c.id, experiments.c.name, experiments.c.namespace))}
        batch: list[dict[str, Any]] = []
        for i in range(n_experiments):
            name, namespace = f"exp-{i:04d}", f"bench-{i % 10}"
            for j in range(per_experiment):
                trial = f"{name}-t{j:04d}"
                condition = conditions[i][j]
                lr, layers = f"{rng.uniform(0.001, 0.1):.5f}", str(rng.randint(1, 8))
                document = {
                    "apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
                    "metadata": {"name": trial, "namespace": namespace,
                                 "labels": {"katib.kubeflow.org/experiment": name}},
                    "spec": {"parameterAssignments": [{"name": "lr", "value": lr},
                                                      {"name": "layers", "value": layers}],
                             "primaryContainerName": "training-container"},
                }
                status = {"startTime": "2026-01-01T00:00:00Z",
                          "conditions": [{"type": "Created", "status": "True"},
                                         {"type": condition, "status": "True"}],
                          "observation": _observation(rng.random())}
                batch.append({
                    "name": trial, "namespace": namespace,
                    "experiment_id": ids[(namespace, name)], "document": document,
                    "status": status, "condition_type": condition,
                    "assignments": {"lr": lr, "layers": layers},
                    "created_at": base + timedelta(seconds=j),
                })
                if len(batch) >= 5000:
                    with engine.begin() as conn:
                        conn.execute(sa.insert(trials), batch)
                    batch = []
        if batch:
            with engine.begin() as conn:
                conn.execute(sa.insert(trials), batch)
    finally:
        storage.close()
    return time.perf_counter() - started


def start_server(url: str, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "katib.cli.main", "server", "--port", "0", "--db", url,
         "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if k not in ("KATIB_TOKEN", "KATIB_SERVER")},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := URL_LINE.search(line):
            return proc, m.group(1)
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def timed(client: httpx.Client, path: str, n: int) -> tuple[list[float], int]:
    samples: list[float] = []
    size = 0
    client.get(path).raise_for_status()  # warm-up
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
        size = len(response.content)
    return samples, size


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=None, help="an empty database URL (default: SQLite)")
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--trials-per-experiment", type=int, default=100)
    parser.add_argument("--requests", type=int, default=100, help="requests per route")
    args = parser.parse_args(argv)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="katib-api-bench-") as tmp:
        url = args.db or f"sqlite:///{tmp}/katib.db"
        if args.db:
            probe = SQLStorage(url)
            try:
                if probe.list_experiments():
                    raise SystemExit(f"{args.db} is not empty; give an empty database")
            finally:
                probe.close()
        seconds = seed(url, args.experiments, args.trials_per_experiment, rng)
        total = args.experiments * args.trials_per_experiment
        proc, base = start_server(url, Path(tmp) / "data")
        n = args.requests
        mid = f"exp-{args.experiments // 2:04d}"
        ns = f"bench-{(args.experiments // 2) % 10}"
        routes = [
            ("list all experiments", "/api/v1/experiments", max(10, n // 5)),
            ("list one namespace", f"/api/v1/experiments?namespace={ns}", n),
            ("list status=Succeeded", "/api/v1/experiments?status=Succeeded", max(10, n // 5)),
            ("get experiment", f"/api/v1/namespaces/{ns}/experiments/{mid}", n),
            ("best trial", f"/api/v1/namespaces/{ns}/experiments/{mid}/best", n),
            (f"list trials ({args.trials_per_experiment})",
             f"/api/v1/namespaces/{ns}/experiments/{mid}/trials", n),
            ("get trial", f"/api/v1/namespaces/{ns}/trials/{mid}-t0001", n),
        ]
        lines = [
            f"{args.experiments} experiments, {total} trials "
            f"({url.split(':', 1)[0]}; seeded in {seconds:.1f} s); one client, sequential",
            "",
            "| route | requests | p50 ms | p99 ms | response bytes |",
            "|---|---:|---:|---:|---:|",
        ]
        try:
            with httpx.Client(base_url=base, timeout=120) as client:
                for label, path, count in routes:
                    samples, size = timed(client, path, count)
                    lines.append(
                        f"| {label} | {count} | {statistics.median(samples):.1f} | "
                        f"{percentile(samples, 99):.1f} | {size} |"
                    )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            if proc.stdout is not None:
                proc.stdout.close()
            if args.db:
                cleanup = SQLStorage(url)
                try:
                    with cleanup.engine.begin() as conn:
                        conn.execute(sa.delete(trials))
                        conn.execute(sa.delete(experiments).where(
                            experiments.c.namespace.like("bench-%")))
                finally:
                    cleanup.close()
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
