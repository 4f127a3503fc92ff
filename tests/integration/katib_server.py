"""A real `katib server` subprocess on 127.0.0.1:0 for integration tests, and fresh databases.

`ServerProcess` starts the command, reads the URL and DBManager address it prints,
waits for /api/v1/health and stops it with SIGTERM. `fresh_database(kind)` yields a
URL of a new, empty database (SQLite file, or a database created on the PostgreSQL /
MariaDB server named by KATIB_TEST_POSTGRES_URL / KATIB_TEST_MYSQL_URL, dropped after).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from katib.storage.engine import resolve_url

KATIB = [sys.executable, "-m", "katib.cli.main"]
URL_LINE = re.compile(r"katib server listening on (http://\S+)")
DBM_LINE = re.compile(r"katib DBManager listening on (\S+)")

DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]
_SERVERS = {
    "postgres": (
        "KATIB_TEST_POSTGRES_URL",
        'CREATE DATABASE "{name}"',
        'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    ),
    "mysql": (
        "KATIB_TEST_MYSQL_URL",
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        "DROP DATABASE IF EXISTS `{name}`",
    ),
}


@contextlib.contextmanager
def fresh_database(kind: str, tmp: Path) -> Iterator[str]:
    """A new empty database of `kind` (skips with the reason when its env URL is unset)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'katib.db'}"
        return
    env, create, drop = _SERVERS[kind]
    raw = os.environ.get(env)
    if not raw:
        pytest.skip(f"{env} not set: server API tests on {kind} skipped")
    admin = sa.create_engine(resolve_url(raw), isolation_level="AUTOCOMMIT")
    name = f"katib_t_{uuid.uuid4().hex[:16]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(create.format(name=name))
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(drop.format(name=name))
        admin.dispose()


class ServerProcess:
    """`katib server --port 0` as a child process."""

    def __init__(
        self,
        data_dir: Path,
        db_url: str,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.args = args
        # Only what the test says: a KATIB_TOKEN or KATIB_SERVER of the caller stays out.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
        self.env = {**inherited, **(env or {})}
        self.env.setdefault("KATIB_HEARTBEAT_TIMEOUT", "30")
        self.lines: list[str] = []
        self.url = ""
        self.dbmanager = ""
        self.proc: subprocess.Popen[str] | None = None
        self._drainer = threading.Thread()
        self.stderr_path = data_dir.parent / f"server-{uuid.uuid4().hex[:6]}.err"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*KATIB, "server", "--port", "0", "--data-dir", str(self.data_dir)]
        cmd += ["--db", self.db_url, *self.args]
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=self.env
            )
        assert self.proc.stdout is not None
        ready = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if m := DBM_LINE.search(line):
                    self.dbmanager = m.group(1)
                if m := URL_LINE.search(line):
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        self._drainer = threading.Thread(target=drain, daemon=True)
        self._drainer.start()
        if not ready.wait(timeout) or not self.url:
            self.stop()
            raise AssertionError(f"server did not start:\n{self.output()}")
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=5).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server never answered:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        err = self.stderr_path.read_text() if self.stderr_path.exists() else ""
        return "".join(self.lines) + "\n--- stderr ---\n" + err

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._drainer.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


TRIAL_PROGRAM = textwrap.dedent(
    """
    import sys, time
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    time.sleep(float(args.get("sleep", "0.1")))
    x = float(args["x"])
    print(f"progress x={x}", flush=True)
    print(f"accuracy={x:.4f}", flush=True)
    print(f"loss={1 - x:.4f}", flush=True)
    """
)


def experiment_doc(
    program: Path,
    name: str,
    namespace: str = "default",
    max_trials: int = 3,
    parallel: int = 2,
    sleep: str = "0.1",
) -> dict[str, Any]:
    """A small random-search experiment whose trials run `program` (TRIAL_PROGRAM)."""
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {
                "type": "maximize",
                "objectiveMetricName": "accuracy",
                "additionalMetricNames": ["loss"],
            },
            "algorithm": {
                "algorithmName": "random",
                "algorithmSettings": [{"name": "random_state", "value": "7"}],
            },
            "parallelTrialCount": min(parallel, max_trials),
            "maxTrialCount": max_trials,
            "maxFailedTrialCount": 1,
            "parameters": [
                {
                    "name": "x",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "0.1", "max": "0.9"},
                }
            ],
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "training-container",
                                        "image": "python:3.11",
                                        "command": [
                                            "python3",
                                            str(program),
                                            "--x=${trialParameters.x}",
                                            f"--sleep={sleep}",
                                        ],
                                    }
                                ],
                                "restartPolicy": "Never",
                            }
                        }
                    },
                },
            },
        },
    }


def write_program(directory: Path) -> Path:
    path = directory / "trial.py"
    path.write_text(TRIAL_PROGRAM)
    return path


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
