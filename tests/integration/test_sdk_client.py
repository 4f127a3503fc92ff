"""KatibClient: every verb against real processes, trials and SQLite, on both backends.

`client` runs each contract test twice: embedded (runner processes on a local data
directory) and over HTTP against a real `katib server` process on 127.0.0.1:0 with a
bearer token. Tests of what only the embedded backend has (its runner, resuming it,
relative paths next to a YAML file) use `embedded`.

Trials are small `python -c` programs that print Katib-style metrics; each experiment
has a few trials, so each test takes a second or two.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from katib import errors
from katib.api.models import Experiment
from katib.executors import process_tree
from katib.sdk import search
from katib.sdk.client import (
    ExperimentFailedError,
    KatibClient,
    MetricLog,
    WaitTimeoutError,
)

SERVER_TOKEN = "sdk-client-test-token"

TRIAL = (
    "import os, sys, time\n"
    "x = float(sys.argv[1])\n"
    "pid_dir = os.environ.get('PID_DIR')\n"
    "if pid_dir: open(os.path.join(pid_dir, str(os.getpid())), 'w').close()\n"
    "time.sleep(float(sys.argv[2]))\n"
    "print(f'accuracy={x:.4f}', flush=True)\n"
    "print(f'accuracy={x / 2:.4f}', flush=True)\n"
    "print(f'loss={1 - x:.4f}', flush=True)\n"
    "sys.exit(int(sys.argv[3]))\n"
)


def experiment_doc(
    name: str,
    max_trials: int = 3,
    parallel: int = 2,
    sleep: float = 0.1,
    exit_code: int = 0,
    max_failed: int | None = None,
    env: dict[str, str] | None = None,
    resume_policy: str | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "training-container",
        "image": "python:3.12",
        "command": ["python", "-c", TRIAL, "${trialParameters.x}", str(sleep), str(exit_code)],
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec: dict[str, Any] = {
        "objective": {
            "type": "maximize",
            "objectiveMetricName": "accuracy",
            "additionalMetricNames": ["loss"],
        },
        "algorithm": {
            "algorithmName": "random",
            "algorithmSettings": [{"name": "random_state", "value": "7"}],
        },
        "parallelTrialCount": parallel,
        "maxTrialCount": max_trials,
        "maxFailedTrialCount": max_trials if max_failed is None else max_failed,
        "parameters": [{"name": "x", **search.double(0.1, 1.0).to_dict()}],
        "trialTemplate": {
            "primaryContainerName": "training-container",
            "trialParameters": [{"name": "x", "reference": "x"}],
            "trialSpec": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "spec": {"template": {"spec": {"containers": [container]}}},
            },
        },
    }
    if resume_policy:
        spec["resumePolicy"] = resume_policy
    return {"metadata": {"name": name}, "spec": spec}


def _cleanup(c: KatibClient) -> None:
    """Delete whatever a test left (runners and trials are stopped)."""
    for namespace in ("default", "team-a"):
        for exp in c.list_experiments(namespace):
            c.delete_experiment(exp.name, exp.namespace)


@pytest.fixture(scope="module")
def katib_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `katib server` on 127.0.0.1:0 requiring a bearer token; yields its URL."""
    root = tmp_path_factory.mktemp("server")
    (root / "token").write_text(SERVER_TOKEN)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "katib.cli.main", "server", "--port", "0"),
            *("--data-dir", str(root / "data"), "--token-file", str(root / "token")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("KATIB_DB", "KATIB_TOKEN")},
    )
    assert process.stdout is not None
    seen: list[str] = []
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("katib server listening on "):
            url = line.split(" on ", 1)[1].strip()
    if url is None:
        process.kill()
        process.wait()
        pytest.fail("katib server did not start:\n" + "".join(seen))
    try:
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[KatibClient]:
    """An embedded client on a fresh data directory."""
    c = KatibClient(data_dir=tmp_path / "data")
    try:
        yield c
    finally:
        _cleanup(c)
        c.close()


@pytest.fixture(params=["embedded", "http"])
def client(request: pytest.FixtureRequest) -> Iterator[KatibClient]:
    """The same calls on each backend in turn."""
    if request.param == "embedded":
        yield request.getfixturevalue("embedded")
        return
    c = KatibClient(server=request.getfixturevalue("katib_server"), token=SERVER_TOKEN)
    try:
        yield c
    finally:
        _cleanup(c)
        c.close()


def is_embedded(c: KatibClient) -> bool:
    return c.server is None


def wait_done(client: KatibClient, name: str, namespace: str | None = None) -> Experiment:
    return client.wait_for_experiment_condition(name, namespace, timeout=60, polling_interval=0.1)


def test_every_read_verb_on_a_finished_experiment(client: KatibClient) -> None:
    created = client.create_experiment(experiment_doc("reads", max_trials=3))
    assert created.name == "reads" and created.namespace == "default"
    assert created.spec.parallel_trial_count == 2
    if is_embedded(client):  # Created is set before create_experiment returns
        assert client.is_experiment_created("reads")
    else:
        client.wait_for_experiment_condition(
            "reads", expected_condition="Created", timeout=10, polling_interval=0.05
        )

    final = wait_done(client, "reads")
    assert client.is_experiment_succeeded("reads")
    assert client.is_experiment_succeeded("reads", experiment=final)
    assert not client.is_experiment_failed("reads")
    assert not client.is_experiment_running("reads")  # Running becomes False at the end
    assert not client.is_experiment_restarting("reads")
    conditions = client.get_experiment_conditions("reads")
    assert [(c.type, c.status) for c in conditions] == [
        ("Created", "True"),
        ("Running", "False"),
        ("Succeeded", "True"),
    ]
    assert conditions[-1].reason == "ExperimentMaxTrialsReached"
    assert [e.name for e in client.list_experiments()] == ["reads"]
    assert client.get_experiment("reads").status == final.status

    trials = client.list_trials("reads")
    assert len(trials) == 3 and all(t.condition == "Succeeded" for t in trials)
    assert client.list_trials() == trials  # every experiment's trials
    assert client.get_trial(trials[0].name) == trials[0]

    # the optimal trial is the one with the highest max(accuracy) = x
    optimal = client.get_optimal_hyperparameters("reads")
    assert optimal is not None
    xs = {t.name: float(t.assignments["x"]) for t in trials}
    assert optimal.best_trial_name == max(xs, key=lambda n: xs[n])
    assert optimal.parameter_assignments[0].name == "x"

    details = client.get_success_trial_details("reads")
    assert [d["name"] for d in details] == [t.name for t in trials]
    first = details[0]
    assert first["parameter_assignments"][0].value == trials[0].assignments["x"]
    accuracy = next(m for m in first["metrics"] if m.name == "accuracy")
    x = float(trials[0].assignments["x"])
    assert float(accuracy.max) == pytest.approx(round(x, 4))
    assert float(accuracy.latest) == pytest.approx(round(x / 2, 4))

    logs = client.get_trial_metrics(trials[0].name)
    assert all(isinstance(m, MetricLog) for m in logs)
    assert [(m.metric.name, m.step) for m in logs] == [
        ("accuracy", 1),
        ("accuracy", 2),
        ("loss", 1),
    ]
    assert float(logs[0].metric.value) == pytest.approx(round(x, 4))
    assert logs[0].time_stamp.endswith("Z")
    only_loss = client.get_trial_metrics(trials[0].name, metric_name="loss")
    assert [m.metric.name for m in only_loss] == ["loss"]

    suggestion = client.get_suggestion("reads")
    assert suggestion.kind == "Suggestion" and suggestion.name == "reads"
    assert suggestion.spec.requests == suggestion.status.suggestion_count == 3
    handed_out = suggestion.status.suggestions or []
    assert [a.name for a in handed_out] == [t.name for t in trials]
    assert [a.parameter_assignments for a in handed_out] == [
        t.spec.parameter_assignments for t in trials
    ]
    assert suggestion.spec.algorithm == final.spec.algorithm
    assert [(c.type, c.status) for c in suggestion.status.conditions] == [
        ("Created", "True"),
        ("Running", "False"),
        ("Succeeded", "True"),
    ]
    assert client.list_suggestions() == [suggestion]  # Suggestions, not experiments
    assert client.list_suggestions(namespace="team-a") == []

    output = client.get_trial_logs(trials[0].name)
    assert f"loss={1 - x:.4f}" in output
    assert client.get_trial_logs(trials[0].name, tail=1).strip() == f"loss={1 - x:.4f}"


def test_create_from_yaml_file_next_to_its_script(
    embedded: KatibClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A YAML file whose trial runs a script next to it by a relative path, created from
    another directory (embedded: the server cannot see the client's files)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.py").write_text(
        "import sys\nprint(f'accuracy={float(sys.argv[1]):.3f}')\nprint('loss=0.5')\n"
    )
    doc = experiment_doc("from-file", max_trials=2)
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    container["command"] = ["python", "train.py", "${trialParameters.x}"]
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    created = embedded.create_experiment(str(path))
    assert created.name == "from-file"
    done = wait_done(embedded, "from-file")
    assert embedded.is_experiment_succeeded("from-file", experiment=done)
    assert all(t.condition == "Succeeded" for t in embedded.list_trials("from-file"))


def test_create_from_model_and_yaml_text(client: KatibClient) -> None:
    # a model, into another namespace given by the call
    model = Experiment.model_validate(experiment_doc("from-model", max_trials=2), by_alias=True)
    created = client.create_experiment(model, namespace="team-a")
    assert created.namespace == "team-a"
    wait_done(client, "from-model", "team-a")
    assert [e.name for e in client.list_experiments("team-a")] == ["from-model"]
    assert client.list_experiments() == []

    # YAML text, and generateName
    text_doc = experiment_doc("", max_trials=2)
    text_doc["metadata"] = {"generateName": "gen-"}
    created = client.create_experiment(yaml.safe_dump(text_doc))
    assert created.name.startswith("gen-") and len(created.name) == len("gen-") + 5
    assert [e.name for e in client.list_experiments()] == [created.name]
    wait_done(client, created.name)


def test_invalid_spec_lists_every_problem_with_field_paths(
    client: KatibClient, tmp_path: Path
) -> None:
    doc = experiment_doc("bad-spec", max_trials=2, parallel=5)
    doc["spec"]["parameters"][0]["feasibleSpace"] = {"min": "2", "max": "1"}
    doc["spec"]["objective"]["type"] = "maximise"
    with pytest.raises(errors.InvalidSpecError) as info:
        client.create_experiment(doc)
    paths = {p.path for p in info.value.problems}
    assert paths == {
        "spec.parallelTrialCount",
        "spec.parameters[0].feasibleSpace",
        "spec.objective.type",
    }
    assert "should be less than or equal to spec.maxTrialCount" in str(info.value)

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(errors.InvalidSpecError) as info:
        client.create_experiment(path)
    assert str(path) in str(info.value)
    assert {p.path for p in info.value.problems} == paths
    if is_embedded(client):  # the server (so far) answers YAML bodies without lines
        assert all(p.line is not None for p in info.value.problems)

    with pytest.raises(errors.InvalidArgumentError, match="file not found"):
        client.create_experiment(tmp_path / "missing.yaml")
    with pytest.raises(errors.InvalidArgumentError, match="expected an Experiment"):
        client.create_experiment(42)  # type: ignore[arg-type]
    assert client.list_experiments() == []  # nothing stored


def test_bad_algorithm_setting_is_refused_at_create(client: KatibClient) -> None:
    doc = experiment_doc("bad-setting")
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": "random_state", "value": "-1"}]
    with pytest.raises(errors.InvalidArgumentError, match="random_state"):
        client.create_experiment(doc)
    with pytest.raises(errors.NotFoundError):
        client.get_experiment("bad-setting")


def test_name_in_use_and_unknown_names(client: KatibClient) -> None:
    client.create_experiment(experiment_doc("taken", max_trials=1, parallel=1))
    with pytest.raises(errors.AlreadyExistsError, match="default/taken already exists"):
        client.create_experiment(experiment_doc("taken", max_trials=1, parallel=1))
    wait_done(client, "taken")

    message = 'experiment "nope" not found in namespace "default"'
    if is_embedded(client):
        message += " (experiments there: taken)"
    for call in (
        lambda: client.get_experiment("nope"),
        lambda: client.is_experiment_running("nope"),
        lambda: client.list_trials("nope"),
        lambda: client.get_suggestion("nope"),
        lambda: client.get_optimal_hyperparameters("nope"),
        lambda: client.edit_experiment_budget("nope", max_trial_count=9),
        lambda: client.delete_experiment("nope"),
        lambda: client.wait_for_experiment_condition("nope", timeout=1),
    ):
        with pytest.raises(errors.NotFoundError) as info:
            call()
        assert message in str(info.value)
    with pytest.raises(errors.NotFoundError, match='experiment "taken" not found in namespace'):
        client.get_experiment("taken", namespace="team-a")
    for trial_call in (
        lambda: client.get_trial("taken-nope"),
        lambda: client.get_trial_metrics("taken-nope"),
        lambda: client.get_trial_logs("taken-nope"),
    ):
        with pytest.raises(errors.NotFoundError, match='trial "taken-nope" not found'):
            trial_call()


def test_wait_timeout_then_delete_while_running(client: KatibClient, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    client.create_experiment(
        experiment_doc("slow", max_trials=4, parallel=2, sleep=60, env={"PID_DIR": str(pids)})
    )
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as info:
        client.wait_for_experiment_condition("slow", timeout=1.0, polling_interval=0.1)
    assert 1.0 <= time.monotonic() - started < 10
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, errors.DeadlineExceededError)
    assert "slow to reach Succeeded condition after 1 s" in str(info.value)
    with pytest.raises(errors.InvalidArgumentError, match="expected_condition 'Done'"):
        client.wait_for_experiment_condition("slow", expected_condition="Done")

    running = client.wait_for_experiment_condition(
        "slow", expected_condition="Running", timeout=30, polling_interval=0.1
    )
    assert client.is_experiment_running("slow", experiment=running)
    deadline = time.monotonic() + 30
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    trial_pids = [int(p.name) for p in pids.iterdir()]
    assert len(trial_pids) == 2
    trials = client.list_trials("slow")
    assert {t.condition for t in trials} <= {"Created", "Running"}
    if is_embedded(client):
        assert client.data_dir is not None
        state = json.loads((client.data_dir / "sdk" / "default" / "slow.json").read_text())
        runner = (state["pid"], state["ticks"])
        trial_dirs = [client.data_dir / "trials" / "default" / t.name for t in trials]
        assert any(d.exists() for d in trial_dirs)

    client.delete_experiment("slow")
    if is_embedded(client):
        assert not process_tree.is_alive(*runner)
        assert not any(d.exists() for d in trial_dirs)
    for pid in trial_pids:
        assert not process_tree.is_alive(pid, None), f"trial process {pid} still running"
    with pytest.raises(errors.NotFoundError):
        client.get_experiment("slow")
    assert client.list_experiments() == []


def test_failed_experiment(client: KatibClient) -> None:
    client.create_experiment(
        experiment_doc("fails", max_trials=3, parallel=1, exit_code=3, max_failed=1)
    )
    with pytest.raises(ExperimentFailedError) as info:
        wait_done(client, "fails")
    assert isinstance(info.value, RuntimeError)
    assert "default/fails is Failed" in str(info.value)
    assert "max failed count has reached" in str(info.value)
    failed = client.wait_for_experiment_condition(
        "fails", expected_condition="Failed", timeout=5, polling_interval=0.1
    )
    assert client.is_experiment_failed("fails", experiment=failed)
    assert client.get_optimal_hyperparameters("fails") is None
    assert client.get_success_trial_details("fails") == []
    assert "exited with code 3" in (
        client.list_trials("fails")[0].status.conditions[-1].message or ""
    )


def test_edit_budget_rules(client: KatibClient) -> None:
    client.create_experiment(experiment_doc("budget", max_trials=2, parallel=1))
    with pytest.raises(errors.InvalidArgumentError, match="give at least one of"):
        client.edit_experiment_budget("budget")
    with pytest.raises(errors.InvalidArgumentError, match="max_trial_count must be an integer"):
        client.edit_experiment_budget("budget", max_trial_count="5")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidSpecError) as info:
        client.edit_experiment_budget("budget", parallel_trial_count=3)
    assert "spec.parallelTrialCount: should be less than or equal to spec.maxTrialCount" in str(
        info.value
    )
    with pytest.raises(errors.InvalidSpecError, match=r"spec\.maxFailedTrialCount"):
        client.edit_experiment_budget("budget", max_failed_trial_count=-1)
    wait_done(client, "budget")
    # finished with the default resumePolicy (Never): Katib refuses any change
    with pytest.raises(errors.InvalidSpecError) as info:
        client.edit_experiment_budget("budget", max_trial_count=5)
    assert [p.path for p in info.value.problems] == ["spec.resumePolicy"]
    assert "spec.resumePolicy = LongRunning" in str(info.value)
    stored = client.get_experiment("budget")
    assert stored.spec.max_trial_count == 2  # nothing changed
    assert len(client.list_trials("budget")) == 2


def test_edit_budget_while_running_and_restart(client: KatibClient) -> None:
    client.create_experiment(
        experiment_doc("grow", max_trials=3, parallel=1, sleep=0.3, resume_policy="LongRunning")
    )
    client.wait_for_experiment_condition(
        "grow", expected_condition="Running", timeout=30, polling_interval=0.1
    )
    edited = client.edit_experiment_budget("grow", parallel_trial_count=2, max_failed_trial_count=1)
    assert edited.spec.parallel_trial_count == 2
    assert edited.spec.max_failed_trial_count == 1
    done = wait_done(client, "grow")
    trials = len(client.list_trials("grow"))
    assert trials == 3
    with pytest.raises(errors.InvalidSpecError, match=r"must be greater than status\.trials"):
        client.edit_experiment_budget("grow", max_trial_count=2)

    restarted = client.edit_experiment_budget("grow", max_trial_count=5)
    assert restarted.spec.max_trial_count == 5
    assert client.is_experiment_restarting("grow", experiment=restarted)
    assert not client.is_experiment_succeeded("grow", experiment=restarted)
    final = wait_done(client, "grow")
    assert final.status is not None and done.status is not None
    assert len(client.list_trials("grow")) == 5
    assert final.status.trials_succeeded == 5


@pytest.mark.slow
def test_runner_killed_mid_experiment_is_resumed(embedded: KatibClient) -> None:
    client = embedded
    client.create_experiment(experiment_doc("resume", max_trials=4, parallel=2, sleep=1.0))
    client.wait_for_experiment_condition(
        "resume", expected_condition="Running", timeout=30, polling_interval=0.1
    )
    assert client.data_dir is not None
    state_file = client.data_dir / "sdk" / "default" / "resume.json"
    first = json.loads(state_file.read_text())
    os.kill(first["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_tree.is_alive(first["pid"], first["ticks"]) and time.monotonic() < deadline:
        client.backend._reap()  # type: ignore[attr-defined]
        time.sleep(0.05)
    # a fresh client (a new kernel) notices the dead runner and starts another
    other = KatibClient(data_dir=client.data_dir)
    try:
        final = other.wait_for_experiment_condition("resume", timeout=60, polling_interval=0.1)
    finally:
        other.close()
    second = json.loads(state_file.read_text())
    assert second["pid"] != first["pid"]
    trials = client.list_trials("resume")
    assert len(trials) == 4
    assert all(t.condition == "Succeeded" for t in trials)
    assert final.status is not None and final.status.trials_succeeded == 4
    log = client.backend.runner_log("resume", "default").read_text()  # type: ignore[attr-defined]
    assert log.count("running experiment default/resume") == 2


def test_tune_runs_in_this_clients_data_directory(embedded: KatibClient) -> None:
    """KatibClient.tune is katib.sdk.tune.tune on this client's storage: its experiment
    is then read with the client's own verbs."""

    def objective(params: dict[str, Any]) -> dict[str, float]:
        return {"score": -((params["x"] - 0.3) ** 2), "other": 1.0}

    result = embedded.tune(
        "tuned",
        objective,
        {"x": search.double(0, 1), "scale": 2},
        objective_metric_name="score",
        max_trial_count=3,
        progress=False,
    )
    assert embedded.is_experiment_succeeded("tuned")
    trials = embedded.list_trials("tuned")
    assert len(trials) == 3
    optimal = embedded.get_optimal_hyperparameters("tuned")
    assert optimal is not None
    best = result.best_params
    assert best is not None
    assert best["x"] == pytest.approx(float(optimal.parameter_assignments[0].value))
    scores = embedded.get_trial_metrics(trials[0].name, metric_name="score")
    x = float(trials[0].assignments["x"])
    assert [float(m.metric.value) for m in scores] == [pytest.approx(-((x - 0.3) ** 2))]


def test_client_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KATIB_SERVER", "http://127.0.0.1:1")
    from_env = KatibClient()
    assert from_env.server == "http://127.0.0.1:1"
    from_env.close()
    local = KatibClient(data_dir=tmp_path)  # an explicit data directory wins over the env
    assert local.server is None and local.list_experiments() == []
    local.close()
    with pytest.raises(errors.InvalidArgumentError, match="not both"):
        KatibClient(server="http://127.0.0.1:1", data_dir="/tmp/x")
    with pytest.raises(errors.InvalidArgumentError, match="must start with http"):
        KatibClient(server="127.0.0.1:8080")
    remote = KatibClient(server="http://127.0.0.1:1")
    with pytest.raises(errors.InvalidArgumentError, match="runs the objective function"):
        remote.tune("t", lambda p: 0.0, {})
    with pytest.raises(errors.UnavailableError, match="not reachable"):
        remote.get_experiment("x")
    remote.close()
