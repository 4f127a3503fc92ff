"""examples/notebooks/tune_sklearn.ipynb runs end to end in a real kernel (nbclient).

The kernel is the venv's own interpreter (ipykernel's built-in `python3` spec, which
runs sys.executable); Jupyter's runtime, data and IPython directories and the katib
data directory point into tmp_path, so nothing is written under the user's home.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("sklearn")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "tune_sklearn.ipynb"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _texts(outputs: list[Any]) -> str:
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        else:
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return _ANSI.sub("", "".join(parts))


@pytest.mark.slow
def test_tuning_notebook_runs_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, sub in (
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_CONFIG_DIR", "config"),
        ("IPYTHONDIR", "ipython"),
        ("KATIB_DATA_DIR", "katib"),
    ):
        monkeypatch.setenv(variable, str(tmp_path / sub))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    code = [c for c in notebook.cells if c.cell_type == "code"]
    printed = "".join(_texts(c.outputs) for c in code)
    match = re.search(r"best accuracy: ([0-9.]+) with \{'C': ([0-9.e+-]+), 'gamma'", printed)
    assert match, printed
    assert 0.8 <= float(match.group(1)) <= 1.0
    assert 0.1 <= float(match.group(2)) <= 100.0

    html = [
        o["data"]["text/html"]
        for c in code
        for o in c.outputs
        if "text/html" in o.get("data", {}) and "katib-tune-result" in o["data"]["text/html"]
    ]
    assert html and "digits-svc" in html[0]

    figures = [
        o["data"]["application/vnd.plotly.v1+json"]
        for c in code
        for o in c.outputs
        if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    kinds = [fig["data"][0]["type"] for fig in figures]
    assert kinds == ["scatter", "parcoords", "bar"], kinds
    history = figures[0]["data"]
    assert len(history[0]["y"]) == 12  # one point per trial

    # the experiment is stored where the notebook's kernel was told (KATIB_DATA_DIR)
    from katib.storage.sql import SQLStorage

    storage = SQLStorage(f"sqlite:///{tmp_path / 'katib' / 'katib.db'}")
    try:
        assert len(storage.list_trials("digits-svc", "default")) == 12
    finally:
        storage.close()
