"""Web UI page weight and time-to-plot, measured in Chromium against a real `katib server`.

    python bench/ui_weight.py [--trials 40]

Starts `katib server --port 0` on a temporary SQLite database, runs one experiment
to completion, then loads each page in Debian's Chromium (headless, via Playwright):
cold (empty cache) and warm (the same browser context again). For each page it
reports the bytes of HTML+JS+CSS as transferred (gzip when the server compresses)
and uncompressed, the same without plotly.min.js, the API JSON the page fetched on
its first render, and the time from navigation to the first plot's SVG.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
KATIB = Path(sys.executable).with_name("katib")
LISTENING = re.compile(r"katib server listening on (http://\S+)")
ASSETS = {"document", "script", "stylesheet"}

TRIAL = (
    "import sys; x, y, k = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]; "
    "print(f'loss={(x - 1) ** 2 + y / 10 + (k == \"b\")} acc={1 / (1 + abs(x))}')"
)


def experiment(name: str, trials: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "objective": {
                "type": "minimize",
                "objectiveMetricName": "loss",
                "additionalMetricNames": ["acc"],
            },
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 4,
            "maxTrialCount": trials,
            "parameters": [
                {
                    "name": "x",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "-3", "max": "3"},
                },
                {"name": "y", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "9"}},
                {
                    "name": "kind",
                    "parameterType": "categorical",
                    "feasibleSpace": {"list": ["a", "b", "c"]},
                },
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": n, "reference": n} for n in ("x", "y", "kind")],
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
                                            TRIAL,
                                            "${trialParameters.x}",
                                            "${trialParameters.y}",
                                            "${trialParameters.kind}",
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


def api(url: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {url}: {exc.code} {exc.read().decode()}") from None


def start_server(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            str(KATIB),
            "server",
            "--port",
            "0",
            "--db",
            f"sqlite:///{tmp / 'k.db'}",
            "--data-dir",
            str(tmp / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    stream = process.stdout
    for line in stream:
        match = LISTENING.search(line)
        if match:
            threading.Thread(target=stream.read, daemon=True).start()  # drain
            return process, match.group(1)
    raise SystemExit("katib server did not start")


#: Records, in the page, when each plot's first SVG appears (ms since navigation start):
#: Playwright's own wait_for_selector is late while WebGL drawing blocks the main thread.
MARKS = """
window.__plotMarks = {};
new MutationObserver(() => {
  for (const node of document.querySelectorAll('.js-plotly-plot')) {
    if (!(node.id in window.__plotMarks) && node.querySelector('.main-svg'))
      window.__plotMarks[node.id] = performance.now();
  }
}).observe(document, {subtree: true, childList: true});
"""


def measure(page: Any, url: str, plots: list[str]) -> dict[str, float]:
    responses: list[Any] = []

    def seen(response: Any) -> None:
        responses.append(response)

    page.on("response", seen)
    page.goto(url)
    for element_id in plots:
        page.wait_for_selector(f"#{element_id} .main-svg", state="attached", timeout=60_000)
    marks = page.evaluate("window.__plotMarks") if plots else {}
    first_ms = min((marks[i] for i in plots), default=float("nan"))
    all_ms = max((marks[i] for i in plots), default=float("nan"))
    page.wait_for_load_state("networkidle")
    page.remove_listener("response", seen)
    out = {
        "wire": 0.0,
        "raw": 0.0,
        "wire_np": 0.0,
        "raw_np": 0.0,
        "api": 0.0,
        "requests": 0.0,
        "first_ms": first_ms,
        "all_ms": all_ms,
    }
    for response in responses:
        kind = response.request.resource_type
        if response.status == 304 or response.from_service_worker:
            continue
        try:
            raw = len(response.body())
        except Exception:  # a body the browser served from its cache
            continue
        wire = response.request.sizes()["responseBodySize"] or raw
        out["requests"] += 1
        if kind in ASSETS:
            out["wire"] += wire
            out["raw"] += raw
            if "plotly.min.js" not in response.url:
                out["wire_np"] += wire
                out["raw_np"] += raw
        elif kind in ("fetch", "xhr"):
            out["api"] += wire
    return out


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_server(Path(tmp))
        try:
            api(base + "/api/v1/experiments", "POST", experiment("weight", args.trials))
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                exp = api(base + "/api/v1/namespaces/default/experiments/weight")
                conditions = exp.get("status", {}).get("conditions", [])
                if conditions and conditions[-1]["type"] in ("Succeeded", "Failed"):
                    break
                time.sleep(0.5)
            best = exp["status"]["currentOptimalTrial"]["bestTrialName"]
            pages = [
                ("experiments list", "/", []),
                (
                    f"experiment ({args.trials} trials)",
                    "/ui/experiments/default/weight",
                    ["plot-history", "plot-parallel", "plot-importance"],
                ),
                ("trial", f"/ui/trials/default/{best}", ["plot-metrics"]),
                ("create", "/ui/create", []),
            ]
            rows = []
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                for label, path, selector in pages:
                    context = browser.new_context(viewport={"width": 1360, "height": 900})
                    page = context.new_page()
                    page.add_init_script(MARKS)
                    cold = measure(page, base + path, selector)
                    warm = measure(page, base + path, selector)
                    context.close()
                    rows.append((label, cold, warm))
                browser.close()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    def kb(n: float) -> str:
        return f"{n / 1024:,.1f}"

    def ms(n: float) -> str:
        return "—" if n != n else f"{n:,.0f}"

    lines = [
        "| page | HTML+JS+CSS transferred kB | uncompressed kB | without plotly.min.js: "
        "transferred / uncompressed kB | API JSON kB | requests | first plot cold / warm ms "
        "| all plots cold / warm ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, cold, warm in rows:
        lines.append(
            f"| {label} | {kb(cold['wire'])} | {kb(cold['raw'])} | "
            f"{kb(cold['wire_np'])} / {kb(cold['raw_np'])} | {kb(cold['api'])} | "
            f"{cold['requests']:.0f} | {ms(cold['first_ms'])} / {ms(warm['first_ms'])} | "
            f"{ms(cold['all_ms'])} / {ms(warm['all_ms'])} |"
        )
    lines.append("")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines.append(
        f"Times are ms from navigation start to the plot's SVG, in the page; load average "
        f"during the run {load} on {os.cpu_count()} cores (software WebGL, no GPU)."
    )
    lines.append(
        f"Warm loads transfer {kb(max(r[2]['wire'] for r in rows))} kB of assets at most "
        "(plotly.min.js is cached for a year under a versioned URL; others revalidate "
        "by ETag)."
    )
    for line in lines:
        print(line, flush=True)
    return lines


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
