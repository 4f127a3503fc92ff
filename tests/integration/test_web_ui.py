"""The web UI in a real browser: Debian's Chromium driven by Playwright against `katib server`.

Each test talks to a real `katib server --port 0` subprocess on SQLite, creates
experiments through the REST API or the create page, and asserts on the DOM (plotly's
.js-plotly-plot nodes, trace counts, table rows). A screenshot of every page goes to
$KATIB_TEST_ARTIFACTS (default: the test's tmp_path); the path is printed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install chromium): web UI tests skipped",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = pytest.mark.slow

KATIB = Path(sys.executable).with_name("katib")
LISTENING = re.compile(r"katib server listening on (http://\S+)")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


# --- a real server --------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    token: str | None = None
    output: list[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, body: Any = None, yaml_text: str | None = None
    ) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if yaml_text is not None:
            data, headers["Content-Type"] = yaml_text.encode(), "application/yaml"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def create(self, yaml_text: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/api/v1/experiments", yaml_text=yaml_text)
        return result

    def experiment(self, name: str, ns: str = "default") -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/namespaces/{ns}/experiments/{name}")
        return result

    def wait_finished(self, name: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exp = self.experiment(name)
            conditions = (exp.get("status") or {}).get("conditions") or []
            if conditions and conditions[-1]["type"] in ("Succeeded", "Failed"):
                return exp
            time.sleep(0.3)
        raise AssertionError(f"experiment {name} did not finish in {timeout}s")


def start_server(tmp: Path, token: str | None = None) -> Server:
    env = dict(os.environ)
    env.pop("KATIB_TOKEN", None)
    env.pop("KATIB_SERVER", None)
    if token:
        env["KATIB_TOKEN"] = token
    cmd = [
        str(KATIB),
        "server",
        "--port",
        "0",
        "--db",
        f"sqlite:///{tmp / 'katib.db'}",
        "--data-dir",
        str(tmp / "data"),
    ]
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = LISTENING.search(line)
        if match:
            # Keep draining the pipe so a chatty server never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process.stdout, lines), daemon=True).start()
            return Server(match.group(1), process, token, lines)
    process.kill()
    process.wait()
    process.stdout.close()
    raise AssertionError("katib server did not start:\n" + "".join(lines))


def _drain(stream: Any, lines: list[str]) -> None:
    with stream:
        for line in stream:
            lines.append(line)


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    # Trials are the server's grandchildren in their own groups; they end on their own.


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("ui-server"))
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.console_errors = []  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        pg.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()

    def on_console(msg: Any) -> None:
        # Expected API refusals (422 validation, 404, 401) are shown by the page, not errors.
        expected = re.search(r"Failed to load resource.* status of (422|404|401)", msg.text)
        if msg.type == "error" and "GL Driver" not in msg.text and not expected:
            pg.console_errors.append(msg.text)  # type: ignore[attr-defined]

    pg.on("dialog", on_dialog)
    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: pg.console_errors.append(str(exc)))  # type: ignore[attr-defined]
    yield pg
    context.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("KATIB_TEST_ARTIFACTS")
    path = Path(env) if env else tmp_path_factory.mktemp("ui-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(page: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


# --- experiments --------------------------------------------------------------------

#: Each trial prints `loss=` per step, with a pause between steps (`steps` x `pause` s).
TRIAL_CODE = (
    "import sys, time\n"
    "x, kind = float(sys.argv[1]), sys.argv[2]\n"
    "steps, pause = int(sys.argv[3]), float(sys.argv[4])\n"
    "for i in range(steps):\n"
    '    print(f\'loss={(x - 1) ** 2 + (0.5 if kind == "b" else 0.0) + 1.0 / (i + 1):.6f} '
    "acc={1 / (1 + abs(x - 1)):.6f}', flush=True)\n"
    "    time.sleep(pause)\n"
)


def experiment_yaml(
    name: str,
    *,
    max_trials: int = 6,
    parallel: int = 2,
    steps: int = 1,
    pause: float = 0.0,
    kinds: tuple[str, ...] = ("a", "b"),
    namespace: str = "default",
) -> str:
    doc = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {
                "type": "minimize",
                "objectiveMetricName": "loss",
                "additionalMetricNames": ["acc"],
            },
            "algorithm": {
                "algorithmName": "random",
                "algorithmSettings": [{"name": "random_state", "value": "3"}],
            },
            "parallelTrialCount": parallel,
            "maxTrialCount": max_trials,
            "maxFailedTrialCount": 2,
            "parameters": [
                {
                    "name": "x",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "-3", "max": "3"},
                },
                {
                    "name": "kind",
                    "parameterType": "categorical",
                    "feasibleSpace": {"list": list(kinds)},
                },
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [
                    {"name": "x", "reference": "x"},
                    {"name": "kind", "reference": "kind"},
                ],
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
                                        "image": "python:3.11",
                                        "command": [
                                            "python3",
                                            "-c",
                                            TRIAL_CODE,
                                            "${trialParameters.x}",
                                            "${trialParameters.kind}",
                                            str(steps),
                                            str(pause),
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
    return yaml.safe_dump(doc, sort_keys=False, width=200)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def plot_traces(page: Any, element_id: str) -> list[dict[str, Any]]:
    """The plotly traces drawn into #element_id (empty if it is not a plotly graph)."""
    result: list[dict[str, Any]] = page.evaluate(
        """id => { const n = document.getElementById(id);
            return n && n.classList.contains('js-plotly-plot') && n.data
              ? n.data.map(t => ({type: t.type || 'scatter', name: t.name || null,
                  n: (t.x || t.y || (t.dimensions ? t.dimensions[0].values : []) || []).length,
                  y: Array.isArray(t.y) ? t.y.map(String) : null,
                  dims: t.dimensions ? t.dimensions.map(d => d.label) : null}))
              : []; }""",
        element_id,
    )
    return result


def wait_plot(page: Any, element_id: str) -> None:
    page.wait_for_selector(f"#{element_id}.js-plotly-plot .main-svg", state="attached")


# --- tests --------------------------------------------------------------------------


def test_experiment_page_plots_table_and_yaml(server: Server, page: Any, artifacts: Path) -> None:
    name = unique("ui-plots")
    server.create(experiment_yaml(name, max_trials=8, parallel=3, steps=4))
    exp = server.wait_finished(name)
    assert exp["status"]["conditions"][-1]["type"] == "Succeeded"

    page.goto(f"{server.url}/ui/experiments/default/{name}")
    page.wait_for_selector("#exp-name")
    assert page.inner_text("#exp-name") == name
    wait_plot(page, "plot-history")
    wait_plot(page, "plot-parallel")
    wait_plot(page, "plot-importance")

    history = plot_traces(page, "plot-history")
    assert [t["name"] for t in history] == ["loss", "best so far"]
    assert history[0]["n"] == 8 and history[1]["n"] == 8
    best = [float(v) for v in history[1]["y"]]
    assert best == sorted(best, reverse=True)  # best-so-far never gets worse (minimize)
    assert page.locator("#plot-history .scatterlayer .trace").count() == 2

    parallel = plot_traces(page, "plot-parallel")
    assert len(parallel) == 1 and parallel[0]["type"] == "parcoords"
    assert parallel[0]["dims"] == ["x", "kind", "loss"]
    assert (
        page.locator("#plot-parallel svg .axis").count() >= 3
        or page.locator("#plot-parallel .parcoords").count() >= 1
    )

    importance = plot_traces(page, "plot-importance")
    assert len(importance) == 1 and importance[0]["type"] == "bar"
    assert sorted(importance[0]["y"] or []) == ["kind", "x"]
    assert page.locator("#plot-importance .bars .point").count() == 2

    rows = page.locator("#trials tbody tr")
    assert rows.count() == 8
    assert page.locator("#trials tbody tr.best").count() == 1
    # Sort by the objective column (ascending, then descending) and read the values back.
    header = page.locator("#trials th[data-key='metric:loss']")
    header.click()
    values = [float(v) for v in page.locator("#trials tbody tr td:nth-child(3)").all_inner_texts()]
    assert values == sorted(values)
    header.click()
    values = [float(v) for v in page.locator("#trials tbody tr td:nth-child(3)").all_inner_texts()]
    assert values == sorted(values, reverse=True)
    # Filter by status and by text.
    page.select_option("#trial-status", "Failed")
    assert page.inner_text("#trials tbody") == "No rows match the filter."
    page.select_option("#trial-status", "Succeeded")
    assert page.locator("#trials tbody tr").count() == 8
    page.fill("#trial-filter", '"kind":"a"')
    trials = server.request("GET", f"/api/v1/namespaces/default/experiments/{name}/trials")
    kind_a = [
        t
        for t in trials["items"]
        if {"name": "kind", "value": "a"} in t["spec"]["parameterAssignments"]
    ]
    assert page.locator("#trials tbody tr").count() == len(kind_a) > 0
    page.fill("#trial-filter", "")

    assert f"name: {name}" in page.inner_text("#yaml")
    assert "algorithmName: random" in page.inner_text("#yaml")
    assert "Succeeded" in page.inner_text("#conditions")
    assert page.console_errors == []
    screenshot(page, artifacts, "experiment")

    # The best trial's page: parameters, metric curves, logs.
    best_trial = exp["status"]["currentOptimalTrial"]["bestTrialName"]
    page.goto(f"{server.url}/ui/trials/default/{best_trial}")
    wait_plot(page, "plot-metrics")
    curves = plot_traces(page, "plot-metrics")
    assert sorted(t["name"] for t in curves) == ["acc", "loss"]
    params = page.inner_text("#param-table")
    assert "x" in params and "kind" in params
    page.wait_for_function("document.getElementById('logs').textContent.includes('loss=')")
    assert page.inner_text("#trial-name") == best_trial
    assert page.locator("#crumbs a", has_text=name).count() == 1
    assert page.console_errors == []
    screenshot(page, artifacts, "trial")


STEPS = 8


def fresh_running_trial(server: Server, name: str, skip: set[str]) -> str | None:
    """A trial of `name` that runs and has reported at most 2 steps (None when all are done)."""
    while True:
        trials = server.request("GET", f"/api/v1/namespaces/default/experiments/{name}/trials")
        exp = server.experiment(name)
        if (exp["status"].get("conditions") or [{}])[-1].get("type") in ("Succeeded", "Failed"):
            return None
        for t in trials["items"]:
            conditions = t["status"].get("conditions") or []
            trial = t["metadata"]["name"]
            if trial in skip or not conditions or conditions[-1]["type"] != "Running":
                continue
            path = f"/api/v1/namespaces/default/trials/{trial}/observations?metric=loss"
            if len(server.request("GET", path)["items"]) <= 2:
                return trial
        time.sleep(0.1)


def test_list_and_trial_page_update_live(server: Server, page: Any, artifacts: Path) -> None:
    name = unique("ui-live")
    page.goto(server.url + "/")
    page.wait_for_selector("#summary:not(:has-text('Loading'))")
    page.evaluate("window.__sameDocument = true")
    server.create(experiment_yaml(name, max_trials=4, parallel=1, steps=STEPS, pause=0.75))
    row = page.locator(f"tr[data-experiment='default/{name}']")
    row.wait_for()
    count = row.locator(".trials-cell .count")

    def done() -> int:
        return int(count.inner_text().split("/")[0])

    first = done()
    page.wait_for_function(
        """([sel, first]) => { const n = document.querySelector(sel);
            return n && parseInt(n.textContent) > first; }""",
        arg=[f"tr[data-experiment='default/{name}'] .trials-cell .count", first],
        timeout=60_000,
    )
    assert done() > first
    assert page.evaluate("window.__sameDocument") is True  # updated without a reload
    assert count.inner_text().endswith("/4")
    screenshot(page, artifacts, "experiments-list")
    # The status filter goes to the API: the running experiment leaves the list, then returns.
    page.select_option("#filter-status", "Succeeded")
    row.wait_for(state="detached")
    statuses = page.locator("#experiments tbody tr[data-status]").evaluate_all(
        "rows => rows.map(r => r.dataset.status)"
    )
    assert set(statuses) <= {"Succeeded"}
    assert "status=Succeeded" in page.url
    page.select_option("#filter-status", "")
    row.wait_for()

    # A running trial's page, opened early in the trial: the curves and the log grow.
    # On a loaded machine the page may draw only after the trial ended: try the next one.
    tried: set[str] = set()
    points = logged = STEPS
    deadline = time.monotonic() + 90
    while (points >= STEPS or logged >= STEPS) and time.monotonic() < deadline:
        running = fresh_running_trial(server, name, tried)
        if running is None:
            break
        tried.add(running)
        page.goto(f"{server.url}/ui/trials/default/{running}")
        page.evaluate("window.__sameDocument = true")
        wait_plot(page, "plot-metrics")
        points = plot_traces(page, "plot-metrics")[0]["n"]
        logged = page.inner_text("#logs").count("loss=")
    assert points < STEPS and logged < STEPS, f"every trial ended before its page drew: {tried}"
    page.wait_for_function(
        """n => { const p = document.getElementById('plot-metrics');
            return p.data && p.data[0].x.length > n; }""",
        arg=points,
        timeout=30_000,
    )
    page.wait_for_function(
        "document.querySelector('#trial-status .badge').textContent !== 'Running'", timeout=30_000
    )
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_function(
        f"document.getElementById('logs').textContent.split('loss=').length - 1 === {STEPS}"
    )
    page.wait_for_function(f"document.getElementById('plot-metrics').data[0].x.length === {STEPS}")
    screenshot(page, artifacts, "trial-live")
    server.wait_finished(name)
    assert page.console_errors == []


def test_create_page_shows_problems_then_creates(
    server: Server, page: Any, artifacts: Path, tmp_path: Path
) -> None:
    page.goto(server.url + "/ui/create")
    page.wait_for_selector("#validation")
    # Upload a bad file: unknown algorithm and a negative budget, each with its path and line.
    name = unique("ui-create")
    bad_yaml = experiment_yaml(name).replace("algorithmName: random", "algorithmName: no-such")
    bad_yaml = bad_yaml.replace("maxTrialCount: 6", "maxTrialCount: -4")
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(bad_yaml)
    page.set_input_files("#file", str(bad_file))
    page.wait_for_selector("#problems li")
    problems = page.locator("#problems li")
    paths = [problems.nth(i).get_attribute("data-path") for i in range(problems.count())]
    assert "spec.algorithm.algorithmName" in paths
    assert "spec.maxTrialCount" in paths
    where = page.locator("#problems li[data-path='spec.maxTrialCount'] .where").inner_text()
    line = next(i for i, text in enumerate(bad_yaml.splitlines(), 1) if "maxTrialCount" in text)
    assert where == f"line {line} · spec.maxTrialCount"
    assert page.is_disabled("#submit")
    assert page.inner_text("#file-name") == "bad.yaml"
    screenshot(page, artifacts, "create-errors")
    # Nothing was stored by the dry run.
    with pytest.raises(urllib.error.HTTPError) as missing:
        server.experiment(name)
    with missing.value as answer:
        assert answer.code == 404

    # Paste a good one: validated, then created, then its page.
    page.fill("#yaml-input", experiment_yaml(name, max_trials=3))
    page.wait_for_selector("#validation .notice.ok")
    assert name in page.inner_text("#validation")
    screenshot(page, artifacts, "create-valid")
    page.click("#submit")
    page.wait_for_url(f"**/ui/experiments/default/{name}")
    page.wait_for_selector("#page-body:not(.hidden)")
    assert page.inner_text("#exp-name") == name
    assert server.wait_finished(name)["status"]["conditions"][-1]["type"] == "Succeeded"
    page.wait_for_function("document.getElementById('plot-history').data?.[0]?.x.length === 3")
    assert page.console_errors == []


def test_script_in_names_and_values_shows_as_text(
    server: Server, page: Any, artifacts: Path
) -> None:
    evil = "<script>alert(1)</script>"
    img = "<img src=x onerror=alert(2)>"
    name = unique("ui-xss")
    server.create(experiment_yaml(name, max_trials=2, parallel=2, kinds=(evil, img)))
    server.wait_finished(name)

    page.goto(server.url + "/")
    row = page.locator(f"tr[data-experiment='default/{name}']")
    row.wait_for()
    best = server.experiment(name)["status"]["currentOptimalTrial"]["parameterAssignments"]
    kind = next(a["value"] for a in best if a["name"] == "kind")
    assert f"kind={kind}" in row.inner_text()  # the best parameters, markup as text
    assert page.locator("#experiments img, #experiments script").count() == 0
    page.goto(f"{server.url}/ui/experiments/default/{name}")
    page.wait_for_selector("#page-body:not(.hidden)")
    wait_plot(page, "plot-parallel")
    text = page.inner_text("#trials")
    assert evil in text or img in text  # the value shows as text in the trials table
    assert evil in page.inner_text("#yaml") and img in page.inner_text("#yaml")
    assert page.locator("#trials img, #yaml script, #trials script").count() == 0
    trials = server.request("GET", f"/api/v1/namespaces/default/experiments/{name}/trials")
    trial = trials["items"][0]
    page.goto(f"{server.url}/ui/trials/default/{trial['metadata']['name']}")
    page.wait_for_selector("#param-table")
    assert any(v in page.inner_text("#param-table") for v in (evil, img))
    assert page.locator("main img, main script").count() == 0

    # Markup in a refused field comes back in the validation message, shown as text.
    page.goto(server.url + "/ui/create")
    page.fill(
        "#yaml-input",
        experiment_yaml(unique("ui-xss")).replace(
            "algorithmName: random", f"algorithmName: '{evil}'"
        ),
    )
    page.wait_for_selector("#problems li")
    assert evil in page.inner_text("#problems")
    assert page.locator("#problems script, #problems img").count() == 0
    # The page path with markup in it is only ever text, too.
    page.goto(f"{server.url}/ui/experiments/default/{img}")
    page.wait_for_selector("#page-error .notice")
    assert page.inner_text("#exp-name") == img
    assert img in page.title()
    assert page.locator("main img").count() == 0
    screenshot(page, artifacts, "escaping")
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_token_login(tmp_path: Path, page: Any, artifacts: Path) -> None:
    token = "s3cret-" + uuid.uuid4().hex
    s = start_server(tmp_path, token=token)
    try:
        name = unique("ui-token")
        s.create(experiment_yaml(name, max_trials=2))
        response = page.goto(s.url + "/")
        # The server answers 401 with a link to the login page (or sends the browser there).
        if "/ui/login" not in page.url:
            assert response.status == 401
            page.click("a[href^='/ui/login']")
        page.wait_for_selector("#token")
        page.fill("#token", "wrong")
        page.click("#sign-in")
        assert "not right" in page.inner_text("#login-error")
        screenshot(page, artifacts, "login")
        page.fill("#token", token)
        page.click("#sign-in")
        page.wait_for_url(s.url + "/")
        page.locator(f"tr[data-experiment='default/{name}']").wait_for()
        assert page.context.cookies()[0]["httpOnly"] is True
        page.goto(f"{s.url}/ui/experiments/default/{name}")
        page.wait_for_selector("#page-body:not(.hidden)")
        assert page.inner_text("#exp-name") == name
        assert page.console_errors == []
    finally:
        stop_server(s)


def test_static_files_headers_and_login_redirects(server: Server, tmp_path: Path) -> None:
    """No browser: what the pages rely on from the server (gzip, caching, CSP, no traversal)."""

    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        req = urllib.request.Request(server.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, exc.read()

    import plotly

    status, headers, body = get(
        f"/ui/static/plotly.min.js?v={plotly.__version__}", {"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert "immutable" in headers["Cache-Control"]
    assert 1_000_000 < len(body) < 2_500_000  # about 1.4 MB instead of 4.8 MB
    status, headers, body = get("/ui/static/common.js")
    assert status == 200 and "Content-Encoding" not in headers and b"textContent" in body
    assert get("/ui/static/common.js", {"If-None-Match": headers["Etag"]})[0] == 304
    for path in ("/ui/static/../ui.py", "/ui/static/%2e%2e/ui.py", "/ui/static/nope.js"):
        assert get(path)[0] == 404, path
    status, headers, body = get("/")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    assert b"<script>" not in body  # no inline script anywhere
    # Without a token configured, the login page just sends you on, never off-site.
    opener = urllib.request.build_opener(NoRedirect)
    for target, expected in (
        ("/ui/create", "/ui/create"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
    ):
        req = urllib.request.Request(f"{server.url}/ui/login?next={urllib.parse.quote(target)}")
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(req, timeout=30)
        with redirect.value as answer:
            assert answer.code == 303 and answer.headers["Location"] == expected


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
