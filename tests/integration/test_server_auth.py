"""Auth and binding of a real `katib server`: every route needs the token, gRPC too.

Routes are enumerated from the application itself (API, UI, static files, OpenAPI),
so a route added later is covered without editing this test.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import pytest
from katib_server import KATIB, ServerProcess, experiment_doc, wait_until
from starlette.routing import Mount

from katib import errors
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.sdk.http_client import KatibHttpClient
from katib.server.app import create_app
from katib.server.auth import PUBLIC_PATHS

pytestmark = pytest.mark.slow

TOKEN = "s3cret-Token_for-tests"

PUSH_PROGRAM = textwrap.dedent(
    """
    import sys
    import katib
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    x = float(args["x"])
    print("pushing", x, flush=True)
    katib.report_metrics({"accuracy": x, "loss": 1 - x})
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("auth")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    proc = ServerProcess(
        tmp / "data",
        f"sqlite:///{tmp / 'katib.db'}",
        args=("--token-file", str(token_file)),
        env={"KATIB_TOKEN": ""},
    ).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.output()


def _flat_routes(routes: list[Any]) -> Iterator[tuple[str, Any]]:
    """(full path, route) of every route, included routers expanded."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:  # an included router (FastAPI >= 0.13x)
            for context in contexts():
                yield context.path, context.original_route
        else:
            yield getattr(route, "path", ""), route


def app_routes() -> list[tuple[str, str]]:
    """(method, concrete path) for every route of the app, path parameters filled in."""
    app = create_app(SimpleNamespace(db_manager_address="x"), token=TOKEN)  # type: ignore[arg-type]
    out: list[tuple[str, str]] = []
    for raw_path, route in _flat_routes(list(app.routes)):
        path = re.sub(r"\{[^}]+\}", "x", raw_path)
        if isinstance(route, Mount):
            out.append(("GET", path.rstrip("/") + "/x"))
            continue
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                out.append((method, path))
    return out


def test_every_route_needs_the_token(server: ServerProcess) -> None:
    routes = app_routes()
    paths = {p for _, p in routes}
    assert "/api/v1/health" in paths and "/openapi.json" in paths and "/" in paths
    assert ("POST", "/api/v1/experiments") in routes
    assert ("PATCH", "/api/v1/namespaces/x/experiments/x") in routes
    assert ("DELETE", "/api/v1/namespaces/x/experiments/x") in routes
    checked = 0
    with httpx.Client(base_url=server.url) as http:
        for method, path in routes:
            if path in PUBLIC_PATHS:
                continue
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": TOKEN},  # no scheme
                {"Cookie": "katib_token=wrong"},
            ):
                response = http.request(method, path, headers=headers, content=b"{}")
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
            checked += 1
        # HTML clients get a page pointing at the login page, still with 401.
        page = http.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 401 and "/ui/login" in page.text
        # with the token (header or cookie) a GET works
        ok = http.get("/api/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        http.cookies.set("katib_token", TOKEN)
        assert http.get("/api/v1/experiments").status_code == 200
        assert http.get("/openapi.json").status_code == 200
    assert checked >= 10


def test_client_with_and_without_token(server: ServerProcess) -> None:
    with (
        KatibHttpClient(server.url, token="") as anonymous,
        pytest.raises(errors.KatibError, match="unauthorized"),
    ):
        anonymous.list_experiments()
    with KatibHttpClient(server.url, token=TOKEN) as api:
        assert api.health()["status"] == "ok"


def _observation_call(address: str, metadata: list[tuple[str, str]]) -> Any:
    with grpc.insecure_channel(address) as channel:
        stub = api_pb2_grpc.DBManagerStub(channel)
        return stub.GetObservationLog(
            api_pb2.GetObservationLogRequest(trial_name="nobody"),
            timeout=10,
            metadata=metadata,
        )


def test_dbmanager_refuses_calls_without_the_token(server: ServerProcess) -> None:
    for metadata in ([], [("authorization", "Bearer wrong")]):
        with pytest.raises(grpc.RpcError) as info:
            _observation_call(server.dbmanager, metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = _observation_call(server.dbmanager, [("authorization", f"Bearer {TOKEN}")])
    assert list(reply.observation_log.metric_logs) == []


def test_experiment_runs_end_to_end_with_the_token(server: ServerProcess, tmp_path: Path) -> None:
    """StdOut collector and katib.report_metrics (Push) both reach DBManager with the token."""
    stdout_program = tmp_path / "trial.py"
    stdout_program.write_text("import sys\nprint('accuracy=0.5')\nprint('loss=0.5')\n")
    push_program = tmp_path / "push.py"
    push_program.write_text(PUSH_PROGRAM)
    push = experiment_doc(push_program, "push", "auth", max_trials=2)
    push["spec"]["metricsCollectorSpec"] = {"collector": {"kind": "Push"}}
    with KatibHttpClient(server.url, token=TOKEN) as api:
        api.create_experiment(experiment_doc(stdout_program, "stdout", "auth", max_trials=2))
        api.create_experiment(push)

        def done(name: str) -> dict[str, Any] | None:
            doc = api.get_experiment(name, "auth")
            conditions = [
                c["type"]
                for c in doc.get("status", {}).get("conditions", [])
                if c["status"] == "True"
            ]
            return doc if {"Succeeded", "Failed"} & set(conditions) else None

        for name in ("stdout", "push"):
            final = wait_until(lambda n=name: done(n), 120, f"{name} to finish")
            trials = api.list_trials(name, "auth")
            assert final["status"]["conditions"][-1]["type"] == "Succeeded", (
                name,
                final["status"],
                [t["status"] for t in trials],
            )
            assert len(trials) == 2
            for trial in trials:
                trial_name = trial["metadata"]["name"]
                values = api.get_observations(trial_name, "auth", metric="accuracy")
                assert values, trial_name
                trial_dir = server.data_dir / "trials" / "auth" / trial_name
                # delivered over gRPC, not spooled for the controller to pick up
                assert not (trial_dir / "unreported.jsonl").exists()
                assert "UNAUTHENTICATED" not in (trial_dir / "collector.out").read_text()


def test_public_bind_refused_without_flag(tmp_path: Path) -> None:
    for host_args in (["--host", "0.0.0.0"], ["--host", "10.1.2.3"], ["--dbmanager-host", "::"]):
        result = subprocess.run(
            [*KATIB, "server", "--port", "0", "--data-dir", str(tmp_path), *host_args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result
        assert "--allow-public" in result.stderr
        assert "Traceback" not in result.stderr
        assert "listening" not in result.stdout


def test_public_bind_with_flag(tmp_path: Path) -> None:
    with ServerProcess(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'k.db'}",
        args=("--host", "0.0.0.0", "--allow-public"),
        env={"KATIB_TOKEN": TOKEN},
    ) as proc:
        assert proc.url.startswith("http://0.0.0.0:")
        port = proc.url.rsplit(":", 1)[1]
        local = f"http://127.0.0.1:{port}"
        assert httpx.get(local + "/api/v1/health").status_code == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(local + "/api/v1/health", headers=headers).status_code == 200
        assert proc.dbmanager.startswith("0.0.0.0:")


def test_unreadable_token_file_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *KATIB,
            "server",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--token-file",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--token-file" in result.stderr and "Traceback" not in result.stderr


def test_early_stopping_reads_observations_with_the_token(
    server: ServerProcess, tmp_path: Path
) -> None:
    """medianstop reads the finished trials' logs from the token-guarded DBManager."""
    from test_early_stopping import TRIAL_PROGRAM
    from test_early_stopping import experiment_doc as early_stopping_doc

    program = tmp_path / "trial.py"
    program.write_text(TRIAL_PROGRAM)
    doc = early_stopping_doc(
        "es-token", ["0.9", "0.8", "0.1"], {"min_trials_required": "2", "start_step": "2"},
        steps=20,
    )
    doc["metadata"]["namespace"] = "auth"
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"][
        "containers"][0]
    container["command"][1] = str(program)  # paths are not resolved for documents sent over HTTP
    with KatibHttpClient(server.url, token=TOKEN) as api:
        api.create_experiment(doc)

        def done() -> dict[str, Any] | None:
            got = api.get_experiment("es-token", "auth")
            types = {c["type"] for c in got.get("status", {}).get("conditions", [])
                     if c["status"] == "True"}
            return got if {"Succeeded", "Failed"} & types else None

        wait_until(done, 180, "es-token to finish")
        trials = {t["spec"]["parameterAssignments"][0]["value"]: t
                  for t in api.list_trials("es-token", "auth")}
    conditions = {x: t["status"]["conditions"][-1]["type"] for x, t in trials.items()}
    assert conditions == {"0.9": "Succeeded", "0.8": "Succeeded", "0.1": "EarlyStopped"}, (
        conditions, server.output()[-3000:])
    assert trials["0.1"]["spec"]["earlyStoppingRules"], trials["0.1"]["spec"]
