"""v1alpha3 Go-template and ConfigMap trial templates, end to end with the local executor
(`katib run`), and the ways a ConfigMap is found without a cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from katib.api.loading import load_experiment
from katib.controller.templating import (
    CONFIGMAP_PATH_ENV,
    LOCAL_CONFIGMAPS_ANNOTATION,
    render_run_spec,
    resolve_trial_spec,
)
from katib.errors import InvalidSpecError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLI = [sys.executable, "-m", "katib.cli.main"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
    env["KATIB_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=240
    )


def _trials(env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    out = _run(["get", "trials", "-o", "json"], env, cwd)
    assert out.returncode == 0, out.stderr
    trials: list[dict[str, Any]] = json.loads(out.stdout)
    return trials


def _command(trial: dict[str, Any]) -> list[str]:
    containers = trial["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"]
    command: list[str] = containers[0]["command"]
    return command


@pytest.mark.slow
def test_v1alpha3_go_template_example_runs(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = _run(["run", "-q", str(EXAMPLES / "gotemplate.yaml")], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "gotemplate-random Succeeded" in out.stdout
    trials = _trials(env, tmp_path)
    assert len(trials) == 4
    for trial in trials:
        values = {a["name"]: a["value"] for a in trial["spec"]["parameterAssignments"]}
        name = trial["metadata"]["name"]
        containers = trial["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"]
        assert containers[0]["name"] == name  # {{.Trial}}
        assert trial["spec"]["runSpec"]["metadata"] == {"name": name, "namespace": "kubeflow"}
        assert _command(trial)[-2:] == [
            f"--lr={values['--lr']}",
            f"--num-epochs={values['--num-epochs']}",
        ]
        conditions = [c["type"] for c in trial["status"]["conditions"] if c["status"] == "True"]
        assert conditions[-1] == "Succeeded"
        metrics = {m["name"]: m for m in trial["status"]["observation"]["metrics"]}
        assert float(metrics["loss"]["min"]) < 1


def _configmap_experiment(directory: Path, with_configmap: bool) -> Path:
    """examples/gotemplate-configmap.yaml split: the ConfigMap in its own file (or nowhere)."""
    docs = list(yaml.safe_load_all((EXAMPLES / "gotemplate-configmap.yaml").read_text()))
    configmap, experiment = docs
    experiment["spec"]["maxTrialCount"] = 2
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "train_numpy_regression.py", directory)
    path = directory / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    if with_configmap:
        (directory / "templates.yaml").write_text(yaml.safe_dump(configmap, sort_keys=False))
    return path


@pytest.mark.slow
def test_configmap_template_next_to_the_experiment_runs(tmp_path: Path) -> None:
    path = _configmap_experiment(tmp_path / "project", with_configmap=True)
    env = _env(tmp_path)
    out = _run(["run", "-q", str(path)], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    trials = _trials(env, tmp_path)
    assert len(trials) == 2
    for trial in trials:
        values = {a["name"]: a["value"] for a in trial["spec"]["parameterAssignments"]}
        assert _command(trial)[2:4] == [
            f"--lr={values['lr']}",
            f"--num-epochs={values['num-epochs']}",
        ]
        assert [c["type"] for c in trial["status"]["conditions"]][-1] == "Succeeded"


def test_configmap_found_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _configmap_experiment(tmp_path / "project", with_configmap=False)
    elsewhere = tmp_path / "shared"
    elsewhere.mkdir()
    docs = list(yaml.safe_load_all((EXAMPLES / "gotemplate-configmap.yaml").read_text()))
    (elsewhere / "cm.yaml").write_text(yaml.safe_dump(docs[0]))
    monkeypatch.setenv(CONFIGMAP_PATH_ENV, str(elsewhere))
    exp = load_experiment(path)
    # recorded on the Experiment: the stored Experiment renders without the files
    recorded = json.loads((exp.metadata.annotations or {})[LOCAL_CONFIGMAPS_ANNOTATION])
    assert list(recorded) == ["kubeflow/trial-templates"]
    monkeypatch.delenv(CONFIGMAP_PATH_ENV)
    job = render_run_spec(exp, "configmap-template-t1", {"lr": "0.2", "num-epochs": "6"})
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][2:4] == [
        "--lr=0.2",
        "--num-epochs=6",
    ]
    assert job["metadata"] == {"name": "configmap-template-t1", "namespace": "kubeflow"}


def test_missing_configmap_fails_the_experiment_clearly(tmp_path: Path) -> None:
    path = _configmap_experiment(tmp_path / "project", with_configmap=False)
    # Accepted at load time (on a cluster the ConfigMap may exist only there); the
    # experiment then fails at its first trial, saying what is missing and how to fix it.
    out = _run(["run", "-q", str(path)], _env(tmp_path), tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "configmap-template Failed" in text
    assert "configMap not found: kubeflow/trial-templates" in text
    assert "Suggestion has failed" not in text  # a spec problem, not the algorithm's
    assert CONFIGMAP_PATH_ENV in text
    assert "Traceback" not in text


def test_configmap_with_a_wrong_placeholder_fails_validation(tmp_path: Path) -> None:
    path = _configmap_experiment(tmp_path / "project", with_configmap=True)
    cm = tmp_path / "project" / "templates.yaml"
    cm.write_text(cm.read_text().replace("trialParameters.numberEpochs", "trialParameters.epochs"))
    out = _run(["validate", str(path)], _env(tmp_path), tmp_path)
    assert out.returncode == 2
    assert "numberEpochs" in out.stderr and "not found in spec.trialTemplate" in out.stderr


def test_resolve_trial_spec_uses_the_given_fetcher(tmp_path: Path) -> None:
    path = _configmap_experiment(tmp_path / "project", with_configmap=True)
    exp = load_experiment(path)
    seen: list[tuple[str, str]] = []

    def fetch(name: str, namespace: str) -> dict[str, str] | None:
        seen.append((name, namespace))
        return {"numpy-regression.yaml": "apiVersion: batch/v1\nkind: Job\nspec: {}\n"}

    resolved = resolve_trial_spec(exp, fetch)
    assert seen == [("trial-templates", "kubeflow")]
    assert (resolved.dialect, resolved.path) == ("yaml", "spec.trialTemplate.configMap")
    assert "kind: Job" in resolved.text
    with pytest.raises(InvalidSpecError, match="unable to find trial template in ConfigMap"):
        resolve_trial_spec(exp, lambda name, namespace: {"other.yaml": "x"})


def test_v1alpha3_template_spec_from_a_configmap(tmp_path: Path) -> None:
    raw = (EXAMPLES / "gotemplate.yaml").read_text()
    doc = yaml.safe_load(raw)
    template = doc["spec"]["trialTemplate"]["goTemplate"].pop("rawTemplate")
    doc["spec"]["trialTemplate"]["goTemplate"]["templateSpec"] = {
        "configMapName": "go-templates",
        "configMapNamespace": "kubeflow",
        "templatePath": "job.yaml",
    }
    configmap: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "go-templates", "namespace": "kubeflow"},
        "data": {"job.yaml": template},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump_all([configmap, doc], sort_keys=False))
    exp = load_experiment(path)
    tt = exp.spec.trial_template
    assert tt is not None and tt.success_condition  # defaulted from the rendered Job
    job = render_run_spec(exp, "gotemplate-random-t1", {"--lr": "0.5", "--num-epochs": "7"})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "gotemplate-random-t1"
    assert container["command"][-2:] == ["--lr=0.5", "--num-epochs=7"]
    # the go template is checked against the ConfigMap's text at load time
    configmap["data"]["job.yaml"] = template.replace("{{.Trial}}", "{{.Trail}}")
    path.write_text(yaml.safe_dump_all([configmap, doc], sort_keys=False))
    with pytest.raises(InvalidSpecError, match="can't evaluate field Trail"):
        load_experiment(path)
