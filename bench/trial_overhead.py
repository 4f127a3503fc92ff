"""Per-trial overhead of the local path against the bare trial command.

    python bench/trial_overhead.py [--trials 20] [--parallel 1,4]

For each parallelism P, runs an experiment of N trials whose command is a tiny
Python program printing one metric, through `katib run` (SQLite, suggestion
service, metrics collector, all real), and runs the same command N times bare,
P at a time. Overhead per trial = (katib wall time - bare wall time) / N * P,
i.e. the extra time each trial slot spends; start-up of `katib run` itself is
reported apart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

PROGRAM = "import sys; print('accuracy=' + sys.argv[1].split('=')[1])"


def experiment(path: Path, trials: int, parallel: int) -> Path:
    (path / "trial.py").write_text(PROGRAM)
    doc = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": f"overhead-p{parallel}"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": parallel,
            "maxTrialCount": trials,
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
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "main",
                                        "image": "python",
                                        "command": [
                                            "python3",
                                            "trial.py",
                                            "--x=${trialParameters.x}",
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
    file = path / f"overhead-p{parallel}.yaml"
    file.write_text(yaml.safe_dump(doc))
    return file


def bare(path: Path, trials: int, parallel: int) -> float:
    command = [sys.executable, str(path / "trial.py"), "--x=0.5"]
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(
            pool.map(
                lambda _: subprocess.run(command, capture_output=True, check=True), range(trials)
            )
        )
    return time.perf_counter() - start


def through_katib(path: Path, file: Path, data: Path) -> tuple[float, float]:
    env = {**os.environ, "KATIB_DATA_DIR": str(data)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "katib.cli.main", "run", "-q", str(file)],
        env=env,
        check=True,
        capture_output=True,
    )
    total = time.perf_counter() - start
    # start-up: the same command on the finished experiment does no trial work
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "katib.cli.main", "run", "-q", str(file)],
        env=env,
        check=True,
        capture_output=True,
    )
    return total, time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", default="1,4")
    args = parser.parse_args(argv)
    lines = [
        "| parallel | trials | bare s | katib s | katib start-up s | overhead ms/trial |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for parallel in [int(p) for p in args.parallel.split(",")]:
            file = experiment(root, args.trials, parallel)
            bare_s = bare(root, args.trials, parallel)
            katib_s, startup_s = through_katib(root, file, root / f"data-{parallel}")
            per_trial = (katib_s - startup_s - bare_s) / args.trials * parallel * 1000
            lines.append(
                f"| {parallel} | {args.trials} | {bare_s:.2f} | {katib_s:.2f} | "
                f"{startup_s:.2f} | {per_trial:.0f} |"
            )
            print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    main()
