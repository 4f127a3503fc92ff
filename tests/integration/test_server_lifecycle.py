"""SIGTERM stops the server cleanly: trials keep running, ownership is released, and the
next server on the same database adopts them and finishes with exactly maxTrialCount trials."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from katib_server import ServerProcess, experiment_doc, wait_until, write_program

from katib.sdk.http_client import KatibHttpClient
from katib.storage.sql import SQLStorage

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _conditions(doc: dict[str, object]) -> list[str]:
    status = doc.get("status") or {}
    assert isinstance(status, dict)
    return [c["type"] for c in status.get("conditions") or [] if c.get("status") == "True"]


def test_sigterm_leaves_trials_running_and_the_next_server_adopts_them(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'katib.db'}"
    data = tmp_path / "data"
    program = write_program(tmp_path)
    doc = experiment_doc(program, "survivor", max_trials=4, parallel=2, sleep="4")

    first = ServerProcess(data, db).start()
    try:
        with KatibHttpClient(first.url) as api:
            api.create_experiment(doc)
            running = wait_until(
                lambda: [
                    t for t in api.list_trials("survivor", "default") if "Running" in _conditions(t)
                ],
                60,
                "a running trial",
            )
    finally:
        started = time.monotonic()
        code = first.stop()
    assert code == 0, first.output()
    assert time.monotonic() - started < 20
    assert "stopped" in first.output()

    trial_name = running[0]["metadata"]["name"]
    record = json.loads((data / "trials" / "default" / trial_name / "launched").read_text())
    assert _alive(record["pid"]), "the trial's collector died with the server"
    with SQLStorage(db) as storage:
        assert storage.get_ownership("survivor", "default").owner is None

    with ServerProcess(data, db) as second, KatibHttpClient(second.url) as api:

        def finished() -> dict[str, object] | None:
            doc = api.get_experiment("survivor", "default")
            return doc if {"Succeeded", "Failed"} & set(_conditions(doc)) else None

        final = wait_until(finished, 120, "the adopted experiment to finish")
        assert _conditions(final)[-1] == "Succeeded", final["status"]
        trials = api.list_trials("survivor", "default")
        names = [t["metadata"]["name"] for t in trials]
        assert len(names) == 4 == len(set(names))
        assert all(_conditions(t)[-1] == "Succeeded" for t in trials)
        adopted = next(t for t in trials if t["metadata"]["name"] == trial_name)
        assert api.get_observations(trial_name, "default", metric="accuracy"), adopted
