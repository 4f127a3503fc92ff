"""The committed protobuf stubs are exactly what scripts/generate_stubs.py produces."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "katib" / "apis"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_stubs", ROOT / "scripts" / "generate_stubs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("grpc_tools")
    out = tmp_path_factory.mktemp("apis")
    _generator().generate_all(out)
    return out


STUBS = [
    ("v1beta1", "api_pb2.py"),
    ("v1beta1", "api_pb2.pyi"),
    ("v1beta1", "api_pb2_grpc.py"),
    ("tfevent", "katib_tfevent_pb2.py"),
    ("tfevent", "katib_tfevent_pb2.pyi"),
]


@pytest.mark.parametrize(("sub", "name"), STUBS, ids=[f"{s}/{n}" for s, n in STUBS])
def test_stubs_match_proto(fresh: Path, sub: str, name: str) -> None:
    assert (fresh / sub / name).read_bytes() == (COMMITTED / sub / name).read_bytes(), (
        f"katib/apis/{sub}/{name} is stale: run python scripts/generate_stubs.py"
    )


def test_every_generated_file_is_checked(fresh: Path) -> None:
    files = [p for p in fresh.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    generated = {(p.parent.name, p.name) for p in files}
    assert generated == set(STUBS)
    assert set(_generator().GENERATED) == {s for s, _ in STUBS}
