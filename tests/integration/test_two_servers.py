"""Two servers reconciling one database, two clients submitting, one server killed with -9.

Two tests. In the first, each server is a bare OS process running a Runtime and an
ExperimentReconciler on the same database URL and data directory, and records its
ownership events to a file of its own. In the second, the servers are two real
`katib server` processes, the clients POST over REST, and ownership is read from
the database while the test runs. Checked both times: every experiment completes
with exactly maxTrialCount trials, each trial ran exactly once, ownership passed
from one server to the other only when the first was killed (never two owners at
once), and the killed server's unfinished experiments were adopted by the survivor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from katib.api.loading import load_experiment_dict
from katib.storage.sql import SQLStorage

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3.0

SERVER_PROGRAM = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    from pathlib import Path
    from katib.controller.runtime import Runtime
    from katib.server.reconciler import ExperimentReconciler

    url, data_dir, events_path, label, lease = sys.argv[1:6]
    out = open(events_path, "a", buffering=1)

    def on_event(event, namespace, name, detail):
        out.write(json.dumps({"t": time.time(), "server": label, "event": event,
                              "name": name, "detail": detail}) + "\\n")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runtime = Runtime(data_dir=Path(data_dir), db_url=url)
    reconciler = ExperimentReconciler(runtime, lease_seconds=float(lease), on_event=on_event)
    reconciler.start()
    print("ready", runtime.owner, flush=True)
    stop.wait()
    reconciler.stop()
    runtime.close()
    """
)

TRIAL_PROGRAM = textwrap.dedent(
    """
    import os, sys, time
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(f"start {os.environ['KATIB_TRIAL_NAME']}\\n")
    time.sleep(float(args["sleep"]))
    print(f"accuracy={float(args['x']):.4f}", flush=True)
    """
)

MAX_TRIALS = 3


def experiment_doc(script: Path, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 2,
            "maxTrialCount": MAX_TRIALS,
            "maxFailedTrialCount": 0,
            "parameters": [
                {"name": "x", "parameterType": "double",
                 "feasibleSpace": {"min": "0.0", "max": "1.0"}},
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "main",
                            "image": "python:3.11",
                            "command": ["python3", str(script), "--x=${trialParameters.x}",
                                        "--sleep=1.5"],
                        }],
                    }}},
                },
            },
        },
    }


class Server:
    def __init__(self, label: str, url: str, tmp_path: Path) -> None:
        self.label = label
        self.events_path = tmp_path / f"events-{label}.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
        env.update(RUNS_FILE=str(tmp_path / "runs.log"), PYTHONUNBUFFERED="1")
        self.log = open(tmp_path / f"server-{label}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER_PROGRAM, url, str(tmp_path / "data"),
             str(self.events_path), label, str(LEASE_SECONDS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        assert line.startswith("ready"), f"server {label} did not start: {self.log_text()}"
        self.owner = line.split()[1]

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(x) for x in self.events_path.read_text().splitlines() if x]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.log.close()


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on the server named by the env var (skips with the reason if unset)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def servers(db_url: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    SQLStorage(db_url).close()  # migrate once up front
    started: list[Server] = []
    try:
        started.append(Server("a", db_url, tmp_path))
        started.append(Server("b", db_url, tmp_path))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def submit_all(url: str, script: Path, names: list[str], namespace: str) -> None:
    """One client: its own connection pool, experiments stored as a server's API stores them."""
    storage = SQLStorage(url, migrate_schema=False)
    try:
        for name in names:
            storage.create_experiment(load_experiment_dict(experiment_doc(script, name, namespace)))
            time.sleep(0.3)
    finally:
        storage.close()


def test_two_servers_two_clients_and_a_kill(
    db_url: str, servers: tuple[Server, Server], tmp_path: Path
) -> None:
    script = tmp_path / "trial.py"
    script.write_text(TRIAL_PROGRAM)
    by_client = {
        "team-x": [f"x{i}" for i in range(3)],
        "team-y": [f"y{i}" for i in range(3)],
    }
    clients = [
        threading.Thread(target=submit_all, args=(db_url, script, names, ns))
        for ns, names in by_client.items()
    ]
    for client in clients:
        client.start()

    # Kill -9 the first server seen owning an experiment whose trials have started.
    deadline = time.monotonic() + 60
    victim: Server | None = None
    while victim is None:
        assert time.monotonic() < deadline, "no server took an experiment"
        started = (tmp_path / "runs.log").read_text() if (tmp_path / "runs.log").exists() else ""
        for server in servers:
            events = server.events()
            owned = {e["name"] for e in events if e["event"] == "acquired"}
            owned -= {e["name"] for e in events if e["event"] == "completed"}
            if any(f"start {name}-" in started for name in owned):
                victim = server
                break
        time.sleep(0.1)
    # Taken before the signal: the survivor may adopt (pid check) before wait() returns here.
    killed_at = time.time()
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    survivor = servers[1] if victim is servers[0] else servers[0]
    for client in clients:
        client.join(timeout=60)

    storage = SQLStorage(db_url, migrate_schema=False)
    try:
        everything = [(ns, n) for ns, names in by_client.items() for n in names]

        def all_done() -> bool:
            for ns, name in everything:
                exp = storage.get_experiment(name, ns)
                if exp.status is None or exp.status.conditions[-1].type not in (
                    "Succeeded", "Failed"
                ):
                    return False
            return True

        deadline = time.monotonic() + 240
        while not all_done():
            assert survivor.process.poll() is None, survivor.log_text()
            assert time.monotonic() < deadline, "experiments did not complete: " + (
                survivor.log_text()
            )
            time.sleep(0.3)

        runs = Counter(
            line.split()[1] for line in (tmp_path / "runs.log").read_text().splitlines()
        )
        for ns, name in everything:
            exp = storage.get_experiment(name, ns)
            assert exp.status is not None
            assert exp.status.conditions[-1].type == "Succeeded", (name, exp.status.conditions)
            trials = storage.list_trials(name, ns)
            assert len(trials) == MAX_TRIALS, (name, [t.name for t in trials])
            assert all(t.condition == "Succeeded" for t in trials), name
            for trial in trials:
                assert runs[trial.name] == 1, f"{trial.name} ran {runs[trial.name]} times"
            assert storage.get_ownership(name, ns).owner is None  # released on completion
        assert sum(runs.values()) == MAX_TRIALS * len(everything)
    finally:
        storage.close()

    # Ownership history: one owner at a time, a change of owner only through the kill.
    history: dict[str, list[dict[str, Any]]] = {}
    for server in servers:
        for event in server.events():
            history.setdefault(event["name"], []).append(event)
    adopted = []
    for _, name in everything:
        events = sorted(history.get(name, []), key=lambda e: e["t"])
        shape = [(e["event"], e["server"]) for e in events]
        assert not [e for e in events if e["event"] == "lost"], shape
        if shape == [("acquired", victim.label), ("acquired", survivor.label),
                     ("completed", survivor.label)]:
            assert events[0]["t"] < killed_at <= events[1]["t"], events
            assert victim.owner in events[1]["detail"], events[1]
            adopted.append(name)
        else:
            assert shape in (
                [("acquired", victim.label), ("completed", victim.label)],
                [("acquired", survivor.label), ("completed", survivor.label)],
            ), shape
    assert adopted, "the killed server owned no unfinished experiment to adopt"


class OwnerMonitor:
    """Polls the experiments' owner column and records every change it sees."""

    def __init__(self, url: str) -> None:
        self.storage = SQLStorage(url, migrate_schema=False)
        self.changes: dict[str, list[tuple[float, str | None]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from katib.storage.tables import experiments

        while not self._stop.wait(0.05):
            with self.storage.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(experiments.c.namespace, experiments.c.name, experiments.c.owner)
                ).all()
            now = time.time()
            for ns, name, owner in rows:
                seen = self.changes.setdefault(f"{ns}/{name}", [])
                if not seen or seen[-1][1] != owner:
                    seen.append((now, owner))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.storage.close()


def test_two_katib_servers_over_rest(db_url: str, tmp_path: Path) -> None:
    """The same, end to end: two `katib server` processes, two REST clients, kill -9."""
    from katib_server import ServerProcess

    script = tmp_path / "trial.py"
    script.write_text(TRIAL_PROGRAM)
    env = {"RUNS_FILE": str(tmp_path / "runs.log")}
    data = tmp_path / "data"
    SQLStorage(db_url).close()
    first = ServerProcess(data, db_url, env=env).start()
    second = ServerProcess(data, db_url, env=env).start()
    monitor = OwnerMonitor(db_url)
    try:
        by_client = {
            (first, "rest-x"): [f"rx{i}" for i in range(3)],
            (second, "rest-y"): [f"ry{i}" for i in range(3)],
        }

        def client(server: ServerProcess, namespace: str, names: list[str]) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for name in names:
                    reply = http.post(
                        "/api/v1/experiments", json=experiment_doc(script, name, namespace)
                    )
                    assert reply.status_code == 201, reply.text
                    time.sleep(0.3)

        clients = [
            threading.Thread(target=client, args=(server, ns, names))
            for (server, ns), names in by_client.items()
        ]
        for thread in clients:
            thread.start()
        for thread in clients:  # a client of the server killed below could not submit
            thread.join(60)
        pid_of = {first.proc.pid: first, second.proc.pid: second}  # type: ignore[union-attr]

        def owner_server(owner: str | None) -> ServerProcess | None:
            return pid_of.get(int(owner.split(":")[1])) if owner else None

        # Kill -9 a server that owns an experiment whose trials have started.
        victim: ServerProcess | None = None
        deadline = time.monotonic() + 60
        while victim is None:
            assert time.monotonic() < deadline, "no server took an experiment"
            runs_file = tmp_path / "runs.log"
            runs_text = runs_file.read_text() if runs_file.exists() else ""
            for key, seen in list(monitor.changes.items()):
                name = key.split("/")[1]
                if seen[-1][1] and f"start {name}-" in runs_text:
                    victim = owner_server(seen[-1][1])
                    break
            time.sleep(0.05)
        assert victim is not None and victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = time.time()
        survivor = second if victim is first else first

        everything = [(ns, n) for (_, ns), names in by_client.items() for n in names]
        with httpx.Client(base_url=survivor.url, timeout=30) as http:
            deadline = time.monotonic() + 240
            pending = list(everything)
            while pending:
                assert time.monotonic() < deadline, f"not completed: {pending}\n" + (
                    survivor.output()[-3000:]
                )
                ns, name = pending[0]
                reply = http.get(f"/api/v1/namespaces/{ns}/experiments/{name}")
                assert reply.status_code == 200, reply.text
                doc = reply.json()
                conditions = (doc.get("status") or {}).get("conditions") or []
                if conditions and conditions[-1]["type"] in ("Succeeded", "Failed"):
                    assert conditions[-1]["type"] == "Succeeded", conditions
                    pending.pop(0)
                else:
                    time.sleep(0.3)
            runs = Counter(
                line.split()[1] for line in (tmp_path / "runs.log").read_text().splitlines()
            )
            for ns, name in everything:
                items = http.get(f"/api/v1/namespaces/{ns}/experiments/{name}/trials").json()[
                    "items"
                ]
                assert len(items) == MAX_TRIALS, name
                for trial in items:
                    trial_name = trial["metadata"]["name"]
                    assert trial["status"]["conditions"][-1]["type"] == "Succeeded", trial_name
                    assert runs[trial_name] == 1, f"{trial_name} ran {runs[trial_name]} times"
            assert sum(runs.values()) == MAX_TRIALS * len(everything)
        time.sleep(0.2)  # let the monitor see the last releases
    finally:
        monitor.close()
        for server in (first, second):
            server.stop()

    # Owners as the database recorded them: one at a time, changing hands only by the kill.
    adopted = 0
    for ns, name in everything:
        seen = monitor.changes[f"{ns}/{name}"]
        owners = [(t, owner_server(o)) for t, o in seen if o is not None]
        servers = [s for _, s in owners]
        assert None not in servers, seen  # no owner but our two servers
        distinct = [s for i, s in enumerate(servers) if i == 0 or s is not servers[i - 1]]
        assert distinct in ([victim], [survivor], [victim, survivor]), seen
        if distinct == [victim, survivor]:
            handover = next(t for t, s in owners if s is survivor)
            assert handover >= killed_at - 0.1, (handover, killed_at, seen)
            adopted += 1
        assert seen[-1][1] is None, seen  # released on completion
    assert adopted, "the killed server owned no unfinished experiment to adopt"
