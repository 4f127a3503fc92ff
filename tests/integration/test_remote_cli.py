"""`katib apply/get/describe/logs/delete/wait` against a real server (--server or KATIB_SERVER)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from katib_server import KATIB, ServerProcess, experiment_doc, write_program

pytestmark = pytest.mark.slow

TOKEN = "remote-cli-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("remote")
    proc = ServerProcess(
        tmp / "data", f"sqlite:///{tmp / 'katib.db'}", env={"KATIB_TOKEN": TOKEN}
    ).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.output()


def katib(
    server: ServerProcess, *args: str, via_env: bool = True, token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
    # An unused data dir: a command that ignored --server would find nothing there.
    env["KATIB_DATA_DIR"] = str(server.data_dir.parent / "not-used")
    if token is not None:
        env["KATIB_TOKEN"] = token
    argv = [*KATIB, *args]
    if via_env:
        env["KATIB_SERVER"] = server.url
    else:
        argv += ["--server", server.url]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)


def test_remote_verbs_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    program = write_program(tmp_path)
    doc = experiment_doc(program, "remote-exp", "default", max_trials=3, parallel=2)
    doc["spec"]["resumePolicy"] = "LongRunning"  # so a finished one may grow (Katib's rule)
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    dry = katib(server, "apply", "-f", str(exp_file), "--dry-run")
    assert dry.returncode == 0 and "valid" in dry.stdout, dry

    applied = katib(server, "apply", "-f", str(exp_file))
    assert applied.returncode == 0, applied
    assert "experiment default/remote-exp created" in applied.stdout
    again = katib(server, "apply", "-f", str(exp_file))
    assert again.returncode == 0 and "unchanged" in again.stdout, again

    waited = katib(server, "wait", "remote-exp", "--timeout", "120", via_env=False)
    assert waited.returncode == 0, waited
    assert "remote-exp Succeeded" in waited.stdout

    listing = katib(server, "get", "experiments")
    assert listing.returncode == 0, listing
    row = next(line for line in listing.stdout.splitlines() if "remote-exp" in line)
    assert "Succeeded" in row and "3/3" in row and "random" in row

    as_json = katib(server, "get", "experiments", "-o", "json")
    assert json.loads(as_json.stdout)["metadata"]["name"] == "remote-exp"

    trials_out = katib(server, "get", "trials", "-e", "remote-exp", "-o", "json")
    trials = json.loads(trials_out.stdout)
    assert len(trials) == 3
    table = katib(server, "get", "trials")
    assert table.returncode == 0
    header = table.stdout.splitlines()[1]
    for column in ("EXPERIMENT", "TRIAL", "STATUS", "accuracy", "loss", "x"):
        assert column in header
    assert table.stdout.count("Succeeded") == 3

    trial = trials[0]["metadata"]["name"]
    one = katib(server, "get", "trial", trial)
    assert yaml.safe_load(one.stdout)["metadata"]["name"] == trial

    described = katib(server, "describe", "experiment", "remote-exp", via_env=False)
    assert described.returncode == 0, described
    assert "objectiveMetricName: accuracy" in described.stdout
    assert "3/3 done" in described.stdout

    logs = katib(server, "logs", trial)
    assert logs.returncode == 0, logs
    assert "accuracy=" in logs.stdout and "loss=" in logs.stdout
    followed = katib(server, "logs", trial, "-f", "-n", "default", via_env=False)
    assert followed.stdout == logs.stdout

    # budget edit through apply: a finished experiment restarts and runs 2 more
    exp_file.write_text(exp_file.read_text().replace("maxTrialCount: 3", "maxTrialCount: 5"))
    edited = katib(server, "apply", "-f", str(exp_file))
    assert edited.returncode == 0 and "configured" in edited.stdout, edited
    assert katib(server, "wait", "remote-exp", "--timeout", "120").returncode == 0
    trials_after = json.loads(katib(server, "get", "trials", "-o", "json").stdout)
    assert len(trials_after) == 5

    # any other change is refused with exit code 4
    changed = dict(doc)
    changed["spec"] = {**doc["spec"], "algorithm": {"algorithmName": "grid"}}
    exp_file.write_text(yaml.safe_dump(changed, sort_keys=False))
    refused = katib(server, "apply", "-f", str(exp_file))
    assert refused.returncode == 4, refused
    assert "spec.algorithm" in refused.stderr

    deleted = katib(server, "delete", "experiment", "remote-exp")
    assert deleted.returncode == 0, deleted
    assert "experiment default/remote-exp deleted (5 trial(s))" in deleted.stdout
    gone = katib(server, "describe", "experiment", "remote-exp")
    assert gone.returncode == 3 and "not found" in gone.stderr


def test_remote_errors_are_one_line_with_exit_codes(server: ServerProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("metadata:\n  name: bad\nspec:\n  maxTrialCount: 0\n")
    result = katib(server, "apply", "-f", str(bad))
    assert result.returncode == 2
    assert "spec.maxTrialCount (line 4)" in result.stderr
    assert "Traceback" not in result.stderr

    unauthorized = katib(server, "get", "experiments", token="wrong")
    assert unauthorized.returncode == 2 and "unauthorized" in unauthorized.stderr

    missing = katib(server, "logs", "no-such-trial")
    assert missing.returncode == 3 and "no-such-trial" in missing.stderr

    waited = katib(server, "wait", "nope", "--timeout", "1")
    assert waited.returncode == 3

    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nsys.exit(3)\n")
    doc = experiment_doc(failing, "failing", max_trials=2, parallel=1)
    doc["spec"]["maxFailedTrialCount"] = 0
    slow = experiment_doc(write_program(tmp_path), "slowpoke", max_trials=1, sleep="60")
    for d in (doc, slow):
        path = tmp_path / f"{d['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(d))
        assert katib(server, "apply", "-f", str(path)).returncode == 0
    failed = katib(server, "wait", "failing", "--timeout", "120")
    assert failed.returncode == 1, failed
    assert "failing Failed" in failed.stderr
    assert katib(server, "wait", "failing", "--for", "Failed").returncode == 0
    timed_out = katib(server, "wait", "slowpoke", "--timeout", "1")
    assert timed_out.returncode == 5 and "after 1s" in timed_out.stderr
    for name in ("failing", "slowpoke"):
        assert katib(server, "delete", "experiment", name).returncode == 0

    down = subprocess.run(
        [*KATIB, "get", "experiments", "--server", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 5 and "not reachable" in down.stderr


def test_embedded_apply_and_wait_with_a_server_on_the_same_database(tmp_path: Path) -> None:
    """Without --server, apply stores into the database; a server on it runs the experiment."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    program = write_program(tmp_path)
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(experiment_doc(program, "stored", max_trials=2)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
    env["KATIB_DB"] = db
    env["KATIB_DATA_DIR"] = str(tmp_path / "data")
    with ServerProcess(tmp_path / "data", db):
        address_file = tmp_path / "data" / "dbmanager.addr"
        before = address_file.read_text()
        stored = subprocess.run(
            [*KATIB, "apply", "-f", str(exp_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert stored.returncode == 0, stored
        assert "experiment default/stored stored" in stored.stdout
        assert address_file.read_text() == before  # the server's trials still find it
        waited = subprocess.run(
            [*KATIB, "wait", "stored", "--timeout", "120"],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        assert waited.returncode == 0, waited
        assert "stored Succeeded" in waited.stdout
