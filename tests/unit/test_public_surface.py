"""The curated public surface resolves, and importing `katib` stays light."""

from __future__ import annotations

import subprocess
import sys

import katib


def test_every_export_resolves() -> None:
    for name in katib.__all__:
        assert getattr(katib, name) is not None


def test_import_is_light() -> None:
    code = (
        "import sys, katib; "
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'sqlalchemy', 'grpc'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
