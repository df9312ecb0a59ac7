"""The floor: a `Check` server that answers OK without looking at the request.

It is built by the same `authz.serve.service` code, with the same gRPC flavour, thread count and
socket options as `mandate serve`, so the only difference between the two is Mandate's
own work. `python -m loadtest.floor --listen 127.0.0.1:9292 --grpc-server threads`.
"""

from __future__ import annotations

import argparse

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc import code_pb2, status_pb2

from authz.serve.grpc_server import GRPC_SERVERS, run_check_server

_OK = CheckResponse(status=status_pb2.Status(code=code_pb2.OK)).SerializeToString()


def allow_everything(payload: bytes) -> bytes:
    return _OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.floor", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:9292")
    parser.add_argument("--grpc-server", choices=GRPC_SERVERS, default="threads")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    run_check_server(allow_everything, args.listen, args.grpc_server, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
