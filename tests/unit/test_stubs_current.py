"""The committed gRPC stubs are exactly what scripts/generate_stubs.py produces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "katib" / "apis" / "v1beta1"


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("generate_stubs", ROOT / "scripts" /
                                                  "generate_stubs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"])
def test_stubs_match_proto(tmp_path: Path, name: str) -> None:
    pytest.importorskip("grpc_tools")
    _generator().generate(tmp_path)  # type: ignore[attr-defined]
    fresh = (tmp_path / name).read_bytes()
    assert fresh == (COMMITTED / name).read_bytes(), (
        f"katib/apis/v1beta1/{name} is stale: run python scripts/generate_stubs.py"
    )
