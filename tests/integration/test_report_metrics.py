"""report_metrics from a real trial process into a real DBManager over gRPC."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import katib
from katib.errors import InvalidArgumentError
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.sql import SQLStorage


@pytest.fixture
def dbmanager(tmp_path: Path) -> Iterator[tuple[SQLStorage, str]]:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    server, port = serve_dbmanager(storage, "127.0.0.1", 0)
    try:
        yield storage, f"127.0.0.1:{port}"
    finally:
        server.stop(None)
        storage.close()


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_trial_program_pushes_metrics(
    dbmanager: tuple[SQLStorage, str], tmp_path: Path
) -> None:
    storage, address = dbmanager
    address_file = tmp_path / "address"
    address_file.write_text(address + "\n")
    code = (
        "import katib\n"
        "for epoch in range(3):\n"
        "    katib.report_metrics({'accuracy': 0.5 + epoch / 10, 'loss': '0.25'})\n"
    )
    env = {"KATIB_TRIAL_NAME": "t-push", "KATIB_DB_MANAGER_ADDRESS_FILE": str(address_file),
           "PATH": "/usr/bin:/bin"}
    done = _run(code, env)
    assert done.returncode == 0, done.stderr
    rows = storage.get_observation_log("t-push", "accuracy")
    assert [r.value for r in rows] == ["0.5", "0.6", "0.7"]
    assert [r.value for r in storage.get_observation_log("t-push", "loss")] == ["0.25"] * 3


def test_missing_trial_name_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KATIB_TRIAL_NAME", raising=False)
    with pytest.raises(ValueError, match="KATIB_TRIAL_NAME"):
        katib.report_metrics({"accuracy": 0.9})


def test_non_numeric_value_names_the_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATIB_TRIAL_NAME", "t")
    with pytest.raises(InvalidArgumentError, match="value of accuracy"):
        katib.report_metrics({"accuracy": "high"}, db_manager_address="127.0.0.1:1")


def test_unreachable_dbmanager_fails_within_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATIB_TRIAL_NAME", "t")
    with pytest.raises(katib.errors.KatibError, match="ReportObservationLog"):
        katib.report_metrics({"accuracy": 1}, db_manager_address="127.0.0.1:1", timeout=0.5)
