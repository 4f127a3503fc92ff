"""`katib render` as a user runs it: YAML on stdout, one clear message and exit 2 on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from katib.testing.manifest_schema import validate_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
KINDS = ROOT / "tests" / "unit" / "trial_kinds"


def render(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
    return subprocess.run(
        [sys.executable, "-m", "katib.cli.main", "render", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def manifest(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert isinstance(doc, dict)
    return doc


def command_of(doc: dict[str, Any]) -> list[str]:
    container = doc["spec"]["template"]["spec"]["containers"][0]
    return [*container.get("command", []), *container.get("args", [])]


def test_set_values_and_samples() -> None:
    out = render(
        str(EXAMPLES / "random-sklearn.yaml"), "--set", "lr=0.01", "--set", "loss=log_loss"
    )
    doc = manifest(out)
    assert doc["kind"] == "Job"
    assert doc["metadata"]["name"] == "random-sklearn-sample"
    assert doc["metadata"]["namespace"] == "kubeflow"
    argv = command_of(doc)
    assert "--lr=0.01" in argv and "--loss=log_loss" in argv
    assert "--num-epochs=17" in argv  # the int midpoint of 5..30
    assert "--alpha=0.0050005" in argv  # the double midpoint
    assert "#   lr = 0.01\n" in out.stdout and "#   alpha = 0.0050005  (sample)" in out.stdout
    assert (
        '# successCondition: status.conditions.#(type=="Complete")#|#(status=="True")#'
        in out.stdout
    )
    assert (
        doc["spec"]["template"]["spec"]["containers"][1]["name"] == "metrics-logger-and-collector"
    )
    validate_manifest(doc)


def test_wrapper_collector_and_trial_name() -> None:
    doc = manifest(
        render(
            str(EXAMPLES / "grid-numpy.yaml"), "--collector", "wrapper", "--trial-name", "grid-x7"
        )
    )
    assert doc["metadata"]["name"] == "grid-x7"
    argv = command_of(doc)
    assert argv[:3] == ["python", "-m", "metrics_collector"]
    assert argv[argv.index("--trial-name") + 1] == "grid-x7"
    assert argv[argv.index("--db-manager-address") + 1] == "katib-server.katib.svc:6789"
    assert "--batch-size=32" in argv  # the first list value
    validate_manifest(doc)


def test_raw_is_the_template_only() -> None:
    doc = manifest(render(str(EXAMPLES / "grid-numpy.yaml"), "--raw", "--set", "lr=0.5"))
    assert "labels" not in doc["metadata"]
    assert command_of(doc)[:3] == ["python3", "train_numpy_regression.py", "--lr=0.5"]


@pytest.mark.parametrize("name", ["tfjob", "trainjob", "argo-workflow", "tekton-pipeline-run"])
def test_other_kinds(name: str) -> None:
    doc = manifest(render(str(KINDS / f"{name}.yaml"), "--set", "optimizer=adam"))
    assert doc["metadata"]["labels"]["katib.kubeflow.org/trial"] == doc["metadata"]["name"]
    text = yaml.safe_dump(doc)
    assert "optimizer=adam" in text or "value: adam" in text  # Tekton passes it as a param
    validate_manifest(doc)


def test_go_template_example() -> None:
    doc = manifest(render(str(EXAMPLES / "gotemplate.yaml"), "--set=--lr=0.3", "--raw"))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "gotemplate-random-sample"
    assert container["command"][-2:] == ["--lr=0.3", "--num-epochs=7"]


def test_configmap_example_from_the_same_file() -> None:
    doc = manifest(render(str(EXAMPLES / "gotemplate-configmap.yaml"), "--set", "num-epochs=9"))
    assert "--num-epochs=9" in command_of(doc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "nope=1"],
            "--set nope: no such parameter (parameters: alpha, loss, lr, num-epochs)",
        ),
        (["--set", "lr=2"], "--set lr=2: must be at most 0.5"),
        (["--set", "lr=abc"], "--set lr=abc: must be a number (double)"),
        (["--set", "num-epochs=7.5"], "--set num-epochs=7.5: must be an integer"),
        (["--set", "loss=mse"], "--set loss=mse: must be one of hinge, log_loss, modified_huber"),
        (["--set", "lr"], "--set 'lr': expected NAME=VALUE"),
    ],
)
def test_bad_set_is_one_clear_message(args: list[str], message: str) -> None:
    out = render(str(EXAMPLES / "random-sklearn.yaml"), *args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip() == f"error: {message}"


def test_several_bad_values_are_reported_together() -> None:
    out = render(str(EXAMPLES / "random-sklearn.yaml"), "--set", "nope=1", "--set", "lr=9")
    assert out.returncode == 2
    assert "nope: no such parameter" in out.stderr and "lr=9: must be at most 0.5" in out.stderr


def test_invalid_experiment_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (
        (EXAMPLES / "grid-numpy.yaml")
        .read_text()
        .replace("${trialParameters.batchSize}", "${trialParameters.bs}")
    )
    bad.write_text(text)
    out = render(str(bad))
    assert out.returncode == 2
    assert "spec.trialTemplate" in out.stderr and "Traceback" not in out.stderr
    out = render(str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "file not found" in out.stderr


def test_bad_collector_choice_is_a_usage_error() -> None:
    out = render(str(EXAMPLES / "grid-numpy.yaml"), "--collector", "magic")
    assert out.returncode == 2
    assert "Invalid value for '--collector'" in out.stderr
