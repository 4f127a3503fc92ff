"""Parallel trials that write the same absolute metrics file, like Katib's /katib/mnist.log.

The trial program builds the path in its code (`"/" + dir + "/metrics.log"`), so the
executor's path remapping cannot help: only a private mount can. With mounts, two
trials run at once and each sees only its own file; without (forced off), they run one
at a time and each still gets only its own metrics. Real processes, the reconcile
loop, a real DBManager; the directory made on the host is removed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
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
from katib.executors.private_paths import PrivatePaths
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.sql import SQLStorage

PROGRAM = """
import os, sys, time
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
path = "/" + args["dir"] + "/metrics.log"
x = args["x"]
log = os.environ["RUNS_FILE"]
with open(log, "a") as f:
    f.write(f"start {x} {time.time()}\\n")
with open(path, "a") as out:
    out.write(f"accuracy={x}\\n")
    out.flush()
    time.sleep(1.0)
    out.write(f"accuracy={x}\\n")
alone = open(path).read() == f"accuracy={x}\\n" * 2
with open(log, "a") as f:
    f.write(f"end {x} {time.time()} {alone}\\n")
"""


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
        values = [{"x": f"0.{len(trials) + i + 1}"} for i in range(count)]
        return SuggestionReply(values, [None] * count, [{}] * count)


def experiment(shared: str, runs: Path) -> Experiment:
    doc: dict[str, Any] = {
        "metadata": {"name": "shared"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 2,
            "maxTrialCount": 2,
            "metricsCollectorSpec": {
                "collector": {"kind": "File"},
                "source": {"fileSystemPath": {"path": f"/{shared}/metrics.log", "kind": "File"}},
            },
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
                                        "args": ["--x=${trialParameters.x}", f"--dir={shared}"],
                                        "env": [{"name": "RUNS_FILE", "value": str(runs)}],
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


@pytest.fixture
def shared() -> Iterator[str]:
    """A directory name at the root of the host, removed afterwards whatever happens."""
    name = f"katib-test-{uuid.uuid4().hex[:10]}"
    yield name
    shutil.rmtree(f"/{name}", ignore_errors=True)


def run(
    tmp_path: Path, shared: str, executor: LocalExecutor
) -> tuple[dict[str, list[str]], list[list[str]]]:
    """Run the experiment; (trial value -> its accuracy logs, parsed runs file)."""
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    server, port = serve_dbmanager(storage)
    runs = tmp_path / "runs.log"
    storage.create_experiment(experiment(shared, runs))
    controller = Controller(
        storage,
        executor,
        lambda name: Suggestions(),  # type: ignore[arg-type,return-value]
        lambda exp: LaunchContext(
            experiment=exp, db_manager_address=f"127.0.0.1:{port}", experiment_dir=tmp_path
        ),
    )
    try:
        deadline = time.monotonic() + 60
        while not controller.reconcile("shared").completed:
            assert time.monotonic() < deadline, "experiment did not complete"
            time.sleep(0.05)
        got: dict[str, list[str]] = {}
        for trial in storage.list_trials("shared"):
            assert trial.condition == "Succeeded", trial.status.conditions[-1]
            value = trial.spec.parameter_assignments[0].value
            logs = storage.get_observation_log(trial.name)
            got[value] = [e.value for e in logs if e.metric_name == "accuracy"]
    finally:
        executor.close()
        server.stop(None)
        storage.close()
    rows = [line.split() for line in runs.read_text().splitlines()]
    return got, rows


def overlapped(rows: list[list[str]]) -> bool:
    spans: dict[str, dict[str, float]] = {}
    for row in rows:
        spans.setdefault(row[1], {})[row[0]] = float(row[2])
    (a, b) = spans.values()
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_parallel_trials_get_private_copies_of_the_same_path(
    tmp_path: Path, shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mount points are removed once no trial of this user on this machine uses any:
    # a registry of our own keeps other tests' trials out of the count.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    reason = PrivatePaths(tmp_path / "probe", lambda _: None).unavailable()
    if reason is not None:
        pytest.skip(f"mount namespaces unavailable here: {reason}")
    notices: list[str] = []
    executor = LocalExecutor(tmp_path / "trials", notices.append)
    got, rows = run(tmp_path, shared, executor)
    assert got == {"0.1": ["0.1", "0.1"], "0.2": ["0.2", "0.2"]}
    assert overlapped(rows), "the two trials ran at the same time"
    assert all(row[3] == "True" for row in rows if row[0] == "end"), rows
    assert not [n for n in notices if "one at a time" in n]
    for trial_dir in (tmp_path / "trials" / "default").iterdir():
        private = trial_dir / "metrics-volume" / shared / "metrics.log"
        assert private.read_text().count("accuracy=") == 2
    assert not Path(f"/{shared}").exists(), "the mount point made on the host was removed"
    assert shared not in Path("/proc/self/mountinfo").read_text()


def test_without_mounts_trials_run_one_at_a_time(tmp_path: Path, shared: str) -> None:
    notices: list[str] = []
    executor = LocalExecutor(tmp_path / "trials", notices.append, private_mounts=False)
    got, rows = run(tmp_path, shared, executor)
    assert got == {"0.1": ["0.1", "0.1"], "0.2": ["0.2", "0.2"]}
    assert not overlapped(rows)
    assert all(row[3] == "True" for row in rows if row[0] == "end"), rows
    said = [n for n in notices if "one at a time" in n]
    assert len(said) == 1 and f"/{shared}/metrics.log" in said[0]
    set_aside = list((tmp_path / "trials" / ".private-paths" / "set-aside").glob("*/metrics.log"))
    assert len(set_aside) == 1, "the first trial's file was moved out of the second's way"
