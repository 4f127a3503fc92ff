"""Every example experiment runs to completion through `katib run`, as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
    env["KATIB_DATA_DIR"] = str(tmp_path)
    cli = [sys.executable, "-m", "katib.cli.main"]
    out = subprocess.run(
        [*cli, "run", str(example)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "optimal trial:" in out.stdout
    listed = subprocess.run(
        [*cli, "get", "experiments", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    experiment = json.loads(listed.stdout)
    conditions = [c for c in experiment["status"]["conditions"] if c["status"] == "True"]
    assert conditions[-1]["type"] == "Succeeded"
    assert experiment["status"]["currentOptimalTrial"]["bestTrialName"]
    best = experiment["status"]["currentOptimalTrial"]["bestTrialName"]
    logs = subprocess.run([*cli, "logs", best], env=env, capture_output=True, check=False)
    assert logs.returncode == 0 and logs.stdout, logs.stderr
