"""Regenerate every committed protobuf stub from proto/ (run after editing a .proto).

Usage: python scripts/generate_stubs.py [APIS_DIR]
The default output is katib/apis: the Katib gRPC API goes to APIS_DIR/v1beta1 and the
TensorFlow event subset read by the metrics collector to APIS_DIR/tfevent. Tests pass a
temporary directory and diff the result against the committed files byte for byte.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "api" / "v1beta1"
TFEVENT_PROTO_DIR = ROOT / "proto" / "tfevent"
DEFAULT_APIS = ROOT / "katib" / "apis"

#: Sub-directory of APIS_DIR -> the files generated there (what the freshness test diffs).
GENERATED = {
    "v1beta1": ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"),
    "tfevent": ("katib_tfevent_pb2.py", "katib_tfevent_pb2.pyi"),
}


def _protoc(proto_dir: Path, proto: str, out_dir: Path, grpc: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # protoc.main() does not add the well-known types' include path by itself.
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
    ]
    if grpc:
        args.append(f"--grpc_python_out={out_dir}")
    args.append(str(proto_dir / proto))
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {proto}")


def generate(out_dir: Path) -> None:
    """The Katib gRPC API (api.proto) into ``out_dir``."""
    _protoc(PROTO_DIR, "api.proto", out_dir, grpc=True)
    grpc_file = out_dir / "api_pb2_grpc.py"
    # protoc writes a top-level import; the stubs live inside a package.
    text = re.sub(
        r"^import api_pb2 as", "from . import api_pb2 as", grpc_file.read_text(), flags=re.M
    )
    grpc_file.write_text(text)


def generate_tfevent(out_dir: Path) -> None:
    """The TensorFlow event messages (katib_tfevent.proto) into ``out_dir``; no services."""
    _protoc(TFEVENT_PROTO_DIR, "katib_tfevent.proto", out_dir, grpc=False)


def generate_all(apis_dir: Path) -> None:
    """Every stub, laid out under ``apis_dir`` as in katib/apis."""
    generate(apis_dir / "v1beta1")
    generate_tfevent(apis_dir / "tfevent")


if __name__ == "__main__":
    generate_all(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_APIS)
