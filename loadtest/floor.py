"""The floor: a `Check` server that answers OK without looking at the request, in any of
grpcio's flavours, so that Mandate is held against the fastest no-op server grpcio offers.

It is plain grpcio, sharing no code with `mandate serve` (authz/serve): a change to Mandate's
server moves Mandate's figures, never the floor's. The one exception is `core`, the no-op on
Mandate's own loop (authz/serve/core_server.py): it is not a server grpcio offers, so it is
never the floor SPEC §8 holds Mandate against; the benchmark reports Mandate against it beside
the floor, to show what Mandate's own steps cost on the loop it runs on. Like Mandate it serves the gRPC health
service on the same port (the runner waits for SERVING) and takes the message as bytes, with
no (de)serializer. `python -m loadtest.floor --listen 127.0.0.1:9292 --grpc-server uvloop`.

- `threads`: grpcio's synchronous server, the handler on a pool of `--threads` threads;
- `asyncio`: grpc.aio on an asyncio event loop, the handler a coroutine on the loop;
- `uvloop`: the same on uvloop's event loop;
- `core`: Mandate's loop on grpc-core's completion queue, `min(--threads, 4)` threads polling.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

FLAVOURS = ("threads", "asyncio", "uvloop")  # grpcio's servers: the floor is the fastest of these
OWN_LOOP = "core"
SERVICE = "envoy.service.auth.v3.Authorization"
_OK = CheckResponse(status=status_pb2.Status(code=code_pb2.OK)).SerializeToString()


def allow_everything(payload: bytes, context: Any) -> bytes:
    return _OK


async def allow_everything_async(payload: bytes, context: Any) -> bytes:
    return _OK


def _check_handler(behaviour: Any) -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler(SERVICE, {"Check": method})


def serve_threads(listen: str, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    server.add_generic_rpc_handlers([_check_handler(allow_everything)])
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _serve_until_signalled(server, health_servicer.set, listen)


def serve_core(listen: str, threads: int) -> None:
    """Mandate's own loop answering with the no-op (see the module's docstring)."""
    from authz.serve.core_server import LOOPS, CoreServer

    server = CoreServer(lambda payload: _OK, [("grpc.so_reuseport", 0)], min(threads, LOOPS), None)
    _serve_until_signalled(server, server.set, listen)


def _serve_until_signalled(server: Any, set_health: Any, listen: str) -> None:
    """Listen, say SERVING, and stop on SIGTERM or SIGINT: a grpc.Server or a CoreServer."""
    if not server.add_insecure_port(listen):
        raise SystemExit(f"loadtest.floor: cannot listen on {listen}")
    server.start()
    for service in ("", SERVICE):
        set_health(service, health_pb2.HealthCheckResponse.SERVING)
    _until_signalled()
    server.stop(1.0).wait()


def _until_signalled() -> None:
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    while not stopped.wait(0.1):  # signal handlers run on the main thread once it wakes
        pass


async def serve_aio(listen: str) -> None:
    """grpc.aio on the running loop (this thread's), until SIGTERM or SIGINT."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_check_handler(allow_everything_async)])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if not server.add_insecure_port(listen):
        raise SystemExit(f"loadtest.floor: cannot listen on {listen}")
    await server.start()
    for service in ("", SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.floor", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:9292")
    parser.add_argument("--grpc-server", choices=(*FLAVOURS, OWN_LOOP), default="threads")
    parser.add_argument("--threads", type=int, default=16, help="the threads flavour's pool (mandate serve's)")
    args = parser.parse_args(argv)
    if args.grpc_server == "threads":
        serve_threads(args.listen, args.threads)
    elif args.grpc_server == "core":
        serve_core(args.listen, args.threads)
    elif args.grpc_server == "uvloop":
        import uvloop

        uvloop.run(serve_aio(args.listen))
    else:
        asyncio.run(serve_aio(args.listen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
