"""Write the admin API's Python stubs from proto/ (`python -m authz.admin.generate [OUT]`).

The stubs are checked in rather than generated at install: a fresh clone, the image's
wheels-only build and `pip install -e .` then need no protobuf compiler, and the grpcio-tools
release that wrote them is the one pinned in the `test` extra, whose version checks the stubs
carry (they need grpcio and protobuf at least as new). tests/unit/test_admin_stubs.py runs
this into a temporary directory and fails when the checked-in files differ.

protoc places the stubs by the .proto file's path: it is mapped to authz/admin/v1alpha1/, so
the generated service module imports the messages as `authz.admin.v1alpha1.admin_pb2`.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO = Path("proto/mandate/admin/v1alpha1/admin.proto")
PACKAGE = Path("authz/admin/v1alpha1")
STUBS = ("admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Run grpcio-tools' protoc; the stubs' paths under `out`."""
    from grpc_tools import protoc  # the test extra: only whoever regenerates needs it

    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PACKAGE}={REPO / PROTO.parent}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(REPO / PROTO),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}: {' '.join(args)}")
    return [out / PACKAGE / name for name in STUBS]


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    for path in generate(out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
