"""Regenerate the committed gRPC stubs from proto/ (run after editing the .proto).

Usage: python scripts/generate_stubs.py [OUTPUT_DIR]
The default output is katib/apis/v1beta1; tests pass a temporary directory and diff.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "api" / "v1beta1"
DEFAULT_OUT = ROOT / "katib" / "apis" / "v1beta1"


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_DIR / "api.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    grpc_file = out_dir / "api_pb2_grpc.py"
    # protoc writes a top-level import; the stubs live inside a package.
    text = re.sub(
        r"^import api_pb2 as", "from . import api_pb2 as", grpc_file.read_text(), flags=re.M
    )
    grpc_file.write_text(text)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
