"""`katib run` end to end: real processes, SQLite, suggestion service and metrics collector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

KATIB = [sys.executable, "-m", "katib.cli.main"]

TRIAL_PROGRAM = textwrap.dedent(
    """
    import os, sys, time
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(f"start {os.environ['KATIB_TRIAL_NAME']} {time.time()}\\n")
    time.sleep(float(args.get("sleep", "0.3")))
    x = float(args["x"])
    print(f"accuracy={x:.4f}", flush=True)
    print(f"loss={1 - x:.4f}", flush=True)
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(f"end {os.environ['KATIB_TRIAL_NAME']} {time.time()}\\n")
    """
)


def write_experiment(
    tmp_path: Path,
    name: str = "exp",
    max_trials: int = 8,
    parallel: int = 2,
    sleep: str = "0.3",
    algorithm: str = "random",
    extra_params: list[dict[str, Any]] | None = None,
) -> Path:
    (tmp_path / "trial.py").write_text(TRIAL_PROGRAM)
    doc = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {
                "type": "maximize",
                "objectiveMetricName": "accuracy",
                "additionalMetricNames": ["loss"],
            },
            "algorithm": {
                "algorithmName": algorithm,
                "algorithmSettings": [{"name": "random_state", "value": "3"}],
            },
            "parallelTrialCount": parallel,
            "maxTrialCount": max_trials,
            "maxFailedTrialCount": 0,
            "parameters": [
                {
                    "name": "x",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "0.0", "max": "1.0"},
                }
            ]
            + (extra_params or []),
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "training-container",
                                        "image": "python:3.11",
                                        "command": [
                                            "python3",
                                            "trial.py",
                                            "--x=${trialParameters.x}",
                                            f"--sleep={sleep}",
                                        ],
                                    }
                                ],
                            }
                        }
                    },
                },
            },
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
    env.update(
        KATIB_DATA_DIR=str(tmp_path / "data"),
        RUNS_FILE=str(tmp_path / "runs.log"),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def katib(
    tmp_path: Path, *args: str, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KATIB, *args],
        env=env_for(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def trials_json(tmp_path: Path) -> list[dict[str, Any]]:
    out = katib(tmp_path, "get", "trials", "-o", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    return data if isinstance(data, list) else [data]


def runs(tmp_path: Path) -> list[tuple[str, str, float]]:
    path = tmp_path / "runs.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        kind, name, stamp = line.split()
        rows.append((kind, name, float(stamp)))
    return rows


def max_overlap(rows: list[tuple[str, str, float]]) -> int:
    events = sorted((stamp, 1 if kind == "start" else -1) for kind, _, stamp in rows)
    current = best = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def test_parallel_3_max_12(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, max_trials=12, parallel=3, sleep="0.4")
    out = katib(tmp_path, "run", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "optimal trial:" in out.stdout
    trials = trials_json(tmp_path)
    assert len(trials) == 12
    assert all(t["status"]["conditions"][-1]["type"] == "Succeeded" for t in trials)
    rows = runs(tmp_path)
    assert len([r for r in rows if r[0] == "start"]) == 12
    assert max_overlap(rows) <= 3
    table = katib(tmp_path, "get", "trials")
    assert table.returncode == 0
    names = [t["metadata"]["name"] for t in trials]
    assert all(name in table.stdout for name in names)
    assert "accuracy" in table.stdout and "loss" in table.stdout
    # running the same file again resumes the stored experiment, creating nothing new
    again = katib(tmp_path, "run", str(path))
    assert again.returncode == 0 and len(trials_json(tmp_path)) == 12


CRASHES = [
    {"KATIB_CRASH_AT": "after_create_trials:1"},
    {"KATIB_CRASH_AT": "after_create_trials:3"},
    {"KATIB_CRASH_AT": "after_launch:2"},
    {"KATIB_CRASH_AT": "before_finish:3"},
    {"KILL_AFTER": "1.5"},
    {"KILL_AFTER": "3.0"},
]


@pytest.mark.parametrize("crash", CRASHES, ids=lambda c: next(iter(c.values())))
def test_kill_9_and_resume(tmp_path: Path, crash: dict[str, str]) -> None:
    path = write_experiment(tmp_path, max_trials=8, parallel=2)
    kill_after = crash.pop("KILL_AFTER", None)
    if kill_after is None:
        first = katib(tmp_path, "run", str(path), **crash)
        assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    else:
        process = subprocess.Popen(
            [*KATIB, "run", str(path)],
            env=env_for(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(float(kill_after))
        process.send_signal(signal.SIGKILL)
        process.wait()
    before = {t["metadata"]["name"]: t for t in trials_json(tmp_path)}
    second = katib(tmp_path, "run", str(path))
    assert second.returncode == 0, second.stdout + second.stderr
    trials = trials_json(tmp_path)
    assert len(trials) == 8
    names = {t["metadata"]["name"] for t in trials}
    assert set(before) <= names
    started = Counter(name for kind, name, _ in runs(tmp_path) if kind == "start")
    assert set(started) == names, "every trial ran"
    assert max(started.values()) == 1, f"a trial ran twice: {started}"
    for trial in trials:
        assert trial["status"]["conditions"][-1]["type"] == "Succeeded", trial["status"]
        metrics = {m["name"]: m for m in trial["status"]["observation"]["metrics"]}
        assert metrics["accuracy"]["latest"] != "unavailable"
    for name, old in before.items():
        if old["status"]["conditions"][-1]["type"] == "Succeeded":
            new = next(t for t in trials if t["metadata"]["name"] == name)
            assert new["status"]["observation"] == old["status"]["observation"]


MODES = {
    "ok": "Succeeded",
    "garbage": "Succeeded",
    "garbage_only": "MetricsUnavailable",
    "nan": "MetricsUnavailable",
    "inf": "MetricsUnavailable",
    "huge": "Succeeded",
    "no_newline": "Succeeded",
    "nothing": "MetricsUnavailable",
    "exit1": "Failed",
}

BAD_PROGRAM = textwrap.dedent(
    """
    import os, sys
    mode = sys.argv[1].split("=", 1)[1]
    out = sys.stdout.buffer
    if mode == "ok":
        out.write(b"accuracy=0.5\\n")
    elif mode == "garbage":
        out.write(bytes(range(256)) + b"\\xff\\xfe\\r\\naccuracy=0.7\\r\\n" + os.urandom(3000))
    elif mode == "garbage_only":
        out.write(b"\\x00\\xff\\xfe junk accuracy= \\x80\\n" + os.urandom(5000))
    elif mode == "nan":
        out.write(b"accuracy=nan\\n")
    elif mode == "inf":
        out.write(b"accuracy=inf\\n")
    elif mode == "huge":
        out.write(b"x" * (10 * 1024 * 1024) + b"\\naccuracy=0.6\\n")
    elif mode == "no_newline":
        out.write(b"accuracy=0.4")
    elif mode == "exit1":
        out.write(b"accuracy=0.9\\n")
        out.flush()
        sys.exit(1)
    out.flush()
    """
)


def test_bad_trial_output(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(BAD_PROGRAM)
    doc = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "bad-output"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "grid"},
            "parallelTrialCount": 3,
            "maxTrialCount": len(MODES),
            "maxFailedTrialCount": len(MODES),
            "parameters": [
                {
                    "name": "mode",
                    "parameterType": "categorical",
                    "feasibleSpace": {"list": list(MODES)},
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
                                "containers": [
                                    {
                                        "name": "main",
                                        "image": "x",
                                        "command": [
                                            "python3",
                                            "bad.py",
                                            "--mode=${trialParameters.mode}",
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
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = katib(tmp_path, "run", str(path), timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    trials = trials_json(tmp_path)
    assert len(trials) == len(MODES)
    seen = {}
    for trial in trials:
        mode = trial["spec"]["parameterAssignments"][0]["value"]
        seen[mode] = trial["status"]["conditions"][-1]["type"]
    assert seen == MODES
    best = katib(tmp_path, "describe", "experiment", "bad-output")
    assert "bestTrialName" in best.stdout


def test_validate_and_errors_without_traceback(tmp_path: Path) -> None:
    good = write_experiment(tmp_path)
    assert katib(tmp_path, "validate", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("maxTrialCount: 8", "maxTrialCount: -1"))
    out = katib(tmp_path, "validate", str(bad))
    assert out.returncode == 2
    assert "spec.maxTrialCount" in out.stderr and "Traceback" not in out.stderr
    out = katib(tmp_path, "run", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    missing = katib(tmp_path, "describe", "experiment", "nope")
    assert missing.returncode == 3 and "Traceback" not in missing.stderr
    assert katib(tmp_path, "logs", "nope-trial").returncode == 3
