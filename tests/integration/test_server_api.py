"""The REST API of a real `katib server` process (127.0.0.1:0), on SQLite, PostgreSQL, MariaDB.

One server per database for the module; each test uses its own namespace.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from katib_server import (
    DATABASES,
    ServerProcess,
    experiment_doc,
    fresh_database,
    wait_until,
    write_program,
)

from katib import errors
from katib.sdk.http_client import KatibHttpClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    with fresh_database(request.param, tmp) as url:
        proc = ServerProcess(tmp / "data", url).start()
        try:
            yield proc
        finally:
            code = proc.stop()
            assert code == 0, proc.output()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[KatibHttpClient]:
    with KatibHttpClient(server.url, timeout=60) as client:
        yield client


@pytest.fixture
def ns() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def program(tmp_path: Path) -> Path:
    return write_program(tmp_path)


def _status(doc: dict[str, Any]) -> str:
    conditions = (doc.get("status") or {}).get("conditions") or []
    true = [c["type"] for c in conditions if c.get("status") == "True"]
    return true[-1] if true else "Created"


def _wait_done(api: KatibHttpClient, name: str, ns: str, timeout: float = 120) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        doc = api.get_experiment(name, ns)
        return doc if _status(doc) in ("Succeeded", "Failed") else None

    return dict(wait_until(finished, timeout, f"experiment {ns}/{name} to finish", 0.3))


def test_health_and_openapi(server: ServerProcess, api: KatibHttpClient) -> None:
    health = api.health()
    assert health["status"] == "ok"
    assert health["dbManagerAddress"] == server.dbmanager
    assert health["version"]
    paths = api.openapi()["paths"]
    for path in (
        "/api/v1/health",
        "/api/v1/experiments",
        "/api/v1/namespaces/{namespace}/experiments/{name}",
        "/api/v1/namespaces/{namespace}/experiments/{name}/trials",
        "/api/v1/namespaces/{namespace}/experiments/{name}/best",
        "/api/v1/namespaces/{namespace}/trials/{trial}",
        "/api/v1/namespaces/{namespace}/trials/{trial}/observations",
        "/api/v1/namespaces/{namespace}/trials/{trial}/logs",
    ):
        assert path in paths


def test_create_from_yaml_runs_to_completion(api: KatibHttpClient, ns: str, program: Path) -> None:
    doc = experiment_doc(program, "yaml-exp", ns, max_trials=3)
    created = api.create_experiment(yaml.safe_dump(doc))
    assert created["metadata"]["name"] == "yaml-exp"
    assert created["metadata"]["namespace"] == ns
    assert created["spec"]["maxTrialCount"] == 3
    assert created["metadata"]["creationTimestamp"]

    final = _wait_done(api, "yaml-exp", ns)
    assert _status(final) == "Succeeded", final["status"]

    trials = api.list_trials("yaml-exp", ns)
    assert len(trials) == 3
    assert all(_status(t) == "Succeeded" for t in trials)
    trial = trials[0]
    name = trial["metadata"]["name"]
    assert api.get_trial(name, ns)["metadata"]["name"] == name

    obs = api.get_observations(name, ns)
    assert {o["metricName"] for o in obs} >= {"accuracy", "loss"}
    accuracy = api.get_observations(name, ns, metric="accuracy")
    assert len(accuracy) == 1 and accuracy[0]["step"] == 1
    assigned = {p["name"]: p["value"] for p in trial["spec"]["parameterAssignments"]}
    assert float(accuracy[0]["value"]) == pytest.approx(float(assigned["x"]), abs=1e-4)

    text = api.get_trial_logs(name, ns)
    assert f"accuracy={float(assigned['x']):.4f}" in text
    assert api.get_trial_logs(name, ns, tail=1).count("\n") == 1
    assert api.get_trial_logs(name, ns, tail=1).startswith("loss=")

    best = api.get_best_trial("yaml-exp", ns)
    values = {
        t["metadata"]["name"]: float(
            next(
                m["latest"]
                for m in t["status"]["observation"]["metrics"]
                if m["name"] == "accuracy"
            )
        )
        for t in trials
    }
    assert best["trialName"] == max(values, key=lambda k: values[k])
    assert best["value"] == pytest.approx(max(values.values()))
    assert set(best["parameters"]) == {"x"}

    [summary] = api.list_experiments(namespace=ns)
    assert summary["name"] == "yaml-exp"
    assert summary["status"] == "Succeeded"
    assert summary["algorithm"] == "random"
    assert summary["trials"]["total"] == 3 and summary["trials"]["succeeded"] == 3
    assert summary["trials"]["running"] == 0 and summary["trials"]["pending"] == 0
    assert summary["best"]["trialName"] == best["trialName"]
    assert summary["objectiveMetricName"] == "accuracy"
    assert summary["objectiveType"] == "maximize"
    assert summary["maxTrialCount"] == 3 and summary["parallelTrialCount"] == 2
    assert summary["completionTimestamp"]


def test_create_from_json_and_conflict(api: KatibHttpClient, ns: str, program: Path) -> None:
    doc = experiment_doc(program, "json-exp", ns, max_trials=1, parallel=1)
    created = api.create_experiment(doc)
    assert created["spec"]["parallelTrialCount"] == 1
    with pytest.raises(errors.AlreadyExistsError, match="already exists"):
        api.create_experiment(doc)
    # JSON text with an explicit content type
    raw = httpx.post(
        api.base_url + "/api/v1/experiments",
        content=json.dumps(experiment_doc(program, "json-exp2", ns, max_trials=1, parallel=1)),
        headers={"Content-Type": "application/json"},
    )
    assert raw.status_code == 201, raw.text
    assert raw.json()["metadata"]["name"] == "json-exp2"
    generated = experiment_doc(program, "", ns, max_trials=1, parallel=1)
    generated["metadata"] = {"generateName": "gen-", "namespace": ns}
    name = api.create_experiment(generated, dry_run=False)["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == 9
    assert api.get_experiment(name, ns)["metadata"]["generateName"] == "gen-"


def test_invalid_yaml_gives_422_with_paths_and_lines(
    server: ServerProcess, ns: str, program: Path
) -> None:
    doc = experiment_doc(program, "bad", ns)
    doc["spec"]["maxTrialCount"] = -1
    doc["spec"]["parameters"][0]["feasibleSpace"]["min"] = "oops"
    doc["spec"]["algorithm"]["algorithmName"] = "nope"
    text = yaml.safe_dump(doc, sort_keys=False)
    response = httpx.post(
        server.url + "/api/v1/experiments",
        content=text,
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    by_path = {d["path"]: d for d in detail}
    assert "spec.maxTrialCount" in by_path
    assert "spec.parameters[0].feasibleSpace.min" in by_path
    assert "spec.algorithm.algorithmName" in by_path
    lines = text.splitlines()
    assert "maxTrialCount" in lines[by_path["spec.maxTrialCount"]["line"] - 1]
    # nothing stored
    with KatibHttpClient(server.url) as client, pytest.raises(errors.NotFoundError):
        client.get_experiment("bad", ns)

    broken = httpx.post(
        server.url + "/api/v1/experiments",
        content="metadata: {name: x\n",
        headers={"Content-Type": "text/yaml"},
    )
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["path"] == "<file>"
    # A body that names a file on the server is read as YAML text, never as a path.
    path_body = httpx.post(
        server.url + "/api/v1/experiments",
        content=str(program),
        headers={"Content-Type": "application/yaml"},
    )
    assert path_body.status_code == 422
    assert "import" not in path_body.text


def test_invalid_algorithm_setting_is_422_from_the_service(
    api: KatibHttpClient, ns: str, program: Path
) -> None:
    doc = experiment_doc(program, "badset", ns)
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": "random_state", "value": "x"}]
    with pytest.raises((errors.InvalidSpecError, errors.InvalidArgumentError)) as info:
        api.create_experiment(doc)
    assert "random_state" in str(info.value)


def test_dry_run_validates_without_storing(api: KatibHttpClient, ns: str, program: Path) -> None:
    doc = experiment_doc(program, "dry", ns)
    out = api.create_experiment(doc, dry_run=True)
    assert out["metadata"]["name"] == "dry"
    assert out["spec"]["objective"]["metricStrategies"]  # defaulted
    assert api.list_experiments(namespace=ns) == []
    doc["spec"]["maxTrialCount"] = 0
    with pytest.raises(errors.InvalidSpecError) as info:
        api.create_experiment(doc, dry_run=True)
    assert [p.path for p in info.value.problems] == ["spec.maxTrialCount"]


def test_list_filters_patch_and_delete(
    server: ServerProcess, api: KatibHttpClient, ns: str, program: Path
) -> None:
    other = ns + "b"
    api.create_experiment(experiment_doc(program, "slow", ns, max_trials=4, sleep="30"))
    api.create_experiment(experiment_doc(program, "quick", other, max_trials=1, parallel=1))
    assert [s["name"] for s in api.list_experiments(namespace=ns)] == ["slow"]
    assert [s["name"] for s in api.list_experiments(namespace=other)] == ["quick"]
    _wait_done(api, "quick", other)
    succeeded = api.list_experiments(status="Succeeded")
    assert ("quick", other) in {(s["name"], s["namespace"]) for s in succeeded}
    assert "slow" not in {s["name"] for s in succeeded if s["namespace"] == ns}
    running = wait_until(
        lambda: [s for s in api.list_experiments(namespace=ns, status="Running")],
        60,
        "slow to run",
    )
    assert running[0]["name"] == "slow"
    with pytest.raises(errors.InvalidArgumentError, match="status"):
        api.list_experiments(status="Bogus")
    # full=true: whole experiments, as the GET of each returns them, filters included
    whole = api.list_experiments(namespace=other, full=True)
    assert whole == [api.get_experiment("quick", other)]
    assert api.list_experiments(namespace=ns, status="Succeeded", full=True) == []

    # PATCH: budget fields only, Katib's rules
    edited = api.edit_experiment_budget("slow", ns, max_trial_count=6, parallel_trial_count=3)
    assert edited["spec"]["maxTrialCount"] == 6 and edited["spec"]["parallelTrialCount"] == 3
    assert api.get_experiment("slow", ns)["spec"]["maxTrialCount"] == 6
    with pytest.raises(errors.InvalidSpecError) as info:
        api.edit_experiment_budget("slow", ns, parallel_trial_count=0)
    assert info.value.problems[0].path == "spec.parallelTrialCount"
    refused = httpx.patch(
        server.url + f"/api/v1/namespaces/{ns}/experiments/slow",
        json={"algorithm": {"algorithmName": "grid"}},
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["path"] == "algorithm"
    with pytest.raises(errors.NotFoundError):
        api.edit_experiment_budget("missing", ns, max_trial_count=3)

    # DELETE stops the running trials and removes everything
    trials = wait_until(
        lambda: [t for t in api.list_trials("slow", ns) if _status(t) == "Running"],
        60,
        "a running trial",
    )
    trial_dir = server.data_dir / "trials" / ns / trials[0]["metadata"]["name"]
    assert trial_dir.exists()
    api.delete_experiment("slow", ns)
    with pytest.raises(errors.NotFoundError):
        api.get_experiment("slow", ns)
    with pytest.raises(errors.NotFoundError):
        api.get_trial(trials[0]["metadata"]["name"], ns)
    assert not trial_dir.exists()
    with pytest.raises(errors.NotFoundError):
        api.delete_experiment("slow", ns)
    api.delete_experiment("quick", other)


def test_not_found_routes(api: KatibHttpClient, ns: str) -> None:
    with pytest.raises(errors.NotFoundError, match="nope"):
        api.get_experiment("nope", ns)
    with pytest.raises(errors.NotFoundError):
        api.list_trials("nope", ns)
    with pytest.raises(errors.NotFoundError):
        api.get_best_trial("nope", ns)
    with pytest.raises(errors.NotFoundError):
        api.get_trial("nope", ns)
    with pytest.raises(errors.NotFoundError):
        api.get_observations("nope", ns)
    with pytest.raises(errors.NotFoundError):
        api.get_trial_logs("nope", ns)


def test_best_is_404_before_any_trial_succeeds(
    api: KatibHttpClient, ns: str, program: Path
) -> None:
    api.create_experiment(experiment_doc(program, "waiting", ns, max_trials=1, sleep="30"))
    with pytest.raises(errors.NotFoundError, match="no optimal trial"):
        api.get_best_trial("waiting", ns)
    api.delete_experiment("waiting", ns)
