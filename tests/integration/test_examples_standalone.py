"""The example Experiments in examples/ and their training scripts, without katib.

Checks:
- Each YAML is a well-formed v1beta1 Experiment: every ``${trialParameters.X}``
  is declared and used, references point to spec.parameters, and the counts
  obey the Katib validation rules.
- Each training script, run directly with sys.executable, prints metric lines
  that the Experiment's filter (default or custom) parses, and exits with a
  failure for the parameter values that are meant to fail.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPERIMENT_FILES = ["random-sklearn.yaml", "grid-numpy.yaml", "custom-filter.yaml"]

# pkg/metricscollector/v1beta1/common/const.go DefaultFilter
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]+)\}")
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
TIMEOUT = 60


def load(name: str) -> dict[str, Any]:
    with open(EXAMPLES / name, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict)
    return doc


def filters_of(exp: dict[str, Any]) -> list[str]:
    mc = exp["spec"].get("metricsCollectorSpec") or {}
    fmt = ((mc.get("source") or {}).get("filter") or {}).get("metricsFormat")
    return list(fmt) if fmt else [DEFAULT_FILTER]


def metric_names(exp: dict[str, Any]) -> list[str]:
    obj = exp["spec"]["objective"]
    return [obj["objectiveMetricName"], *obj.get("additionalMetricNames", [])]


def parse_metrics(output: str, names: list[str], filters: list[str]) -> dict[str, list[str]]:
    """Parse TEXT output the way Katib's file metrics collector does."""
    found: dict[str, list[str]] = {n: [] for n in names}
    for line in output.split("\n"):
        if not any(n in line for n in names):  # substring pre-filter
            continue
        for flt in filters:
            for m in re.finditer(flt, line):
                name, value = m.group(1).strip(), m.group(2).strip()
                if name in found:
                    found[name].append(value)
    return found


def container(exp: dict[str, Any]) -> dict[str, Any]:
    containers = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    return containers[0]


def grid_size(params: list[dict[str, Any]]) -> int:
    """Number of combinations as Katib's grid suggestion enumerates them."""
    total = 1
    for p in params:
        fs = p["feasibleSpace"]
        if p["parameterType"] == "int":
            total *= len(range(int(fs["min"]), int(fs["max"]) + 1, int(fs.get("step", 1))))
        elif p["parameterType"] == "double":
            lo, hi, step = float(fs["min"]), float(fs["max"]), float(fs["step"])
            n = math.ceil((hi + step - lo) / step)
            if lo + (n - 1) * step > hi:
                n -= 1
            total *= n
        else:
            total *= len(fs["list"])
    return total


# --------------------------------------------------------------------------- YAML


@pytest.mark.parametrize("name", EXPERIMENT_FILES)
def test_experiment_yaml_is_well_formed(name: str) -> None:
    exp = load(name)
    assert exp["apiVersion"] == "kubeflow.org/v1beta1"
    assert exp["kind"] == "Experiment"
    meta_name = exp["metadata"]["name"]
    assert NAME_RE.match(meta_name) and len(meta_name) <= 40

    spec = exp["spec"]
    assert spec["objective"]["type"] in ("minimize", "maximize")
    assert spec["objective"]["objectiveMetricName"] not in spec["objective"].get(
        "additionalMetricNames", []
    )
    max_trials = spec["maxTrialCount"]
    assert 0 < spec.get("parallelTrialCount", 3) <= max_trials
    assert 0 <= spec.get("maxFailedTrialCount", 0) <= max_trials

    tt = spec["trialTemplate"]
    trial_spec = tt["trialSpec"]
    assert trial_spec["apiVersion"] == "batch/v1" and trial_spec["kind"] == "Job"
    assert "name" not in trial_spec.get("metadata", {})
    pod = trial_spec["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = container(exp)
    assert c["name"] == tt["primaryContainerName"] == "training-container"
    assert c["image"]
    assert c["command"][0] in ("python3", "python")
    assert (EXAMPLES / c["command"][1]).is_file(), c["command"][1]

    declared = [tp["name"] for tp in tt["trialParameters"]]
    assert len(set(declared)) == len(declared)
    for tp in tt["trialParameters"]:
        assert tp["description"]
    used = set(PLACEHOLDER.findall(yaml.safe_dump(trial_spec)))
    assert used == set(declared), f"used {used} vs declared {declared}"

    param_names = [p["name"] for p in spec["parameters"]]
    references = [tp["reference"] for tp in tt["trialParameters"]]
    # every reference is a parameter and every parameter is referenced
    assert sorted(references) == sorted(param_names)
    for p in spec["parameters"]:
        fs = p["feasibleSpace"]
        if p["parameterType"] in ("int", "double"):
            assert float(fs["min"]) < float(fs["max"])
            assert "list" not in fs
        else:
            assert p["parameterType"] in ("categorical", "discrete")
            assert fs["list"] and not {"min", "max", "step"} & fs.keys()

    if spec["algorithm"]["algorithmName"] == "grid":
        assert grid_size(spec["parameters"]) >= max_trials

    for flt in filters_of(exp):
        assert re.compile(flt).groups >= 2


def test_examples_cover_the_required_features() -> None:
    exps = [load(n) for n in EXPERIMENT_FILES]
    algorithms = {e["spec"]["algorithm"]["algorithmName"] for e in exps}
    types = {p["parameterType"] for e in exps for p in e["spec"]["parameters"]}
    objectives = {e["spec"]["objective"]["type"] for e in exps}
    assert {"random", "grid"} <= algorithms
    assert {"double", "int", "categorical", "discrete"} <= types
    assert objectives == {"minimize", "maximize"}
    assert all(e["spec"]["objective"].get("additionalMetricNames") for e in exps)
    assert any(filters_of(e) != [DEFAULT_FILTER] for e in exps)
    assert all(e["spec"].get("maxFailedTrialCount") for e in exps)


# --------------------------------------------------------------------- scripts


def first_assignment(exp: dict[str, Any]) -> dict[str, str]:
    """A valid, non-failing assignment: the middle of each range, an early list item."""
    out = {}
    for p in exp["spec"]["parameters"]:
        fs = p["feasibleSpace"]
        if p["parameterType"] == "int":
            out[p["name"]] = str((int(fs["min"]) + int(fs["max"])) // 2)
        elif p["parameterType"] == "double":
            out[p["name"]] = str(math.sqrt(float(fs["min"]) * float(fs["max"])))
        else:
            out[p["name"]] = str(fs["list"][len(fs["list"]) // 2 - 1])
    return out


def render_args(exp: dict[str, Any], assignment: dict[str, str]) -> list[str]:
    ref = {tp["name"]: tp["reference"] for tp in exp["spec"]["trialTemplate"]["trialParameters"]}
    c = container(exp)
    argv = [*c["command"][1:], *c.get("args", [])]
    return [PLACEHOLDER.sub(lambda m: assignment[ref[m.group(1)]], a) for a in argv]


# Every script invocation the tests need, keyed by a short label. They are all
# started at once by the `runs` fixture: most of each run is import time, so
# running them side by side keeps the module fast.
DIRECT_RUNS: dict[str, list[str]] = {
    "sklearn-log-loss": [
        "train_sklearn.py",
        "--lr=0.05",
        "--alpha=1e-5",
        "--loss=log_loss",
        "--num-epochs=5",
    ],
    "numpy-small-lr": [
        "train_numpy_regression.py",
        "--lr=0.25",
        "--num-epochs=10",
        "--batch-size=32",
    ],
    "numpy-diverge-32": [
        "train_numpy_regression.py",
        "--lr=1.0",
        "--num-epochs=10",
        "--batch-size=32",
    ],
    "numpy-diverge-128": [
        "train_numpy_regression.py",
        "--lr=1.0",
        "--num-epochs=10",
        "--batch-size=128",
    ],
    "logging-lbfgs": ["train_logging.py", "--optimizer=lbfgs", "--lr=0.01", "--num-epochs=5"],
}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    commands = dict(DIRECT_RUNS)
    for name in EXPERIMENT_FILES:
        exp = load(name)
        commands[f"rendered:{name}"] = render_args(exp, first_assignment(exp))
    procs = {
        key: subprocess.Popen(
            [sys.executable, *argv],
            cwd=EXAMPLES,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, argv in commands.items()
    }
    results = {}
    try:
        for key, proc in procs.items():
            out, err = proc.communicate(timeout=TIMEOUT)
            results[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    yield results


@pytest.mark.parametrize("name", EXPERIMENT_FILES)
def test_rendered_trial_command_reports_all_metrics(
    name: str, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    exp = load(name)
    proc = runs[f"rendered:{name}"]
    assert proc.returncode == 0, proc.stderr
    names = metric_names(exp)
    found = parse_metrics(proc.stdout, names, filters_of(exp))
    for n in names:
        assert len(found[n]) >= 2, f"{n}: {found[n]}\n{proc.stdout}"
        assert all(math.isfinite(float(v)) for v in found[n])


def test_sklearn_prints_one_default_format_line_per_epoch(
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    proc = runs["sklearn-log-loss"]
    assert proc.returncode == 0, proc.stderr
    found = parse_metrics(
        proc.stdout, ["Validation-accuracy", "Train-accuracy", "loss"], [DEFAULT_FILTER]
    )
    assert len(found["Validation-accuracy"]) == len(found["Train-accuracy"]) == 5
    assert len(found["loss"]) == 5
    assert 0.8 < float(found["Validation-accuracy"][-1]) <= 1.0
    assert re.search(r"^epoch 5: Train-accuracy=\S+ Validation-accuracy=\S+", proc.stdout, re.M)


def test_numpy_regression_converges_for_small_lr(
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    proc = runs["numpy-small-lr"]
    assert proc.returncode == 0, proc.stderr
    losses = parse_metrics(proc.stdout, ["loss"], [DEFAULT_FILTER])["loss"]
    assert len(losses) == 10
    assert float(losses[-1]) < 0.05


@pytest.mark.parametrize("key", ["numpy-diverge-32", "numpy-diverge-128"])
def test_numpy_regression_diverges_and_fails_for_large_lr(
    key: str, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    proc = runs[key]
    assert proc.returncode == 1
    assert "diverged" in proc.stderr


def test_logging_script_fails_for_lbfgs(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = runs["logging-lbfgs"]
    assert proc.returncode != 0
    assert "NotImplementedError" in proc.stderr
    exp = load("custom-filter.yaml")
    found = parse_metrics(proc.stdout, metric_names(exp), filters_of(exp))
    assert found == {"loss": [], "accuracy": []}


def test_logging_lines_need_the_custom_filter(
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    proc = runs["rendered:custom-filter.yaml"]
    assert proc.returncode == 0, proc.stderr
    exp = load("custom-filter.yaml")
    names = metric_names(exp)
    # The default name=value filter finds nothing in the logging format ...
    assert parse_metrics(proc.stdout, names, [DEFAULT_FILTER]) == {n: [] for n in names}
    # ... the custom one finds a loss and an accuracy per epoch, on RFC 3339-stamped lines.
    found = parse_metrics(proc.stdout, names, filters_of(exp))
    assert len(found["loss"]) == len(found["accuracy"]) >= 2
    metric_lines = [ln for ln in proc.stdout.splitlines() if "metricName" in ln]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO ", ln) for ln in metric_lines)
