"""The gRPC side of `mandate serve`: Check and gRPC health on one port, in one of four
flavours, so the choice can be made by measurement (BENCHMARKS.md) rather than by taste.

- `core` (the default): Mandate's own loop on grpc-core's completion queue (core_server.py),
  each Check answered by the thread that polled it;
- `threads`: grpcio's synchronous server, a thread pool running the handler;
- `asyncio`: grpc.aio on an asyncio event loop in a background thread;
- `uvloop`: the same on uvloop's event loop.

The handler is a plain function, serialized CheckRequest bytes in, serialized
CheckResponse bytes out: no (de)serializer runs before Mandate's own parse, as in the
benchmark's no-op floor (loadtest/floor.py, plain grpcio in the same flavours).
Given a ListService, the same port also serves Envoy's ExternalProcessor (the response path,
authz/listing/): one bidirectional stream per list answer, a thread each in the `threads`
flavour (the pool grows by the service's bound on streams, so Checks keep their threads) and
a pool of their own in `core`.

A server shares its port (SO_REUSEPORT) only when told to: `--workers` children, whose
supervisor proved the port free and holds it (workers.py). Any other server on a busy port is a
ListenError, which `mandate serve` prints as one line: sharing by accident would let the kernel
split Envoy's connections between an old policy and a new one.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest, ProcessingResponse
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz.serve.core_server import BUSY, LOOPS, CoreServer

if TYPE_CHECKING:
    from authz.listing.service import ListService

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
GRPC_SERVERS = ("core", "threads", "asyncio", "uvloop")
HEALTH_SERVICES = ("", AUTHORIZATION_SERVICE, EXT_PROC_SERVICE)
Check = Callable[[bytes], bytes]


class ListenError(RuntimeError):
    """A port this process cannot listen on; the message is the whole story, one line."""


def listen_error(address: str, what: str, exc: OSError | None = None) -> ListenError:
    """The one line an operator sees; a busy port says who is likely to hold it."""
    if exc is None:
        reason = "the port is taken or the address is not this host's"
    elif exc.errno == errno.EADDRINUSE:
        reason = "address already in use (another mandate serve, or another program, listens there)"
    else:
        reason = exc.strerror or str(exc)
    return ListenError(f"cannot listen on {address} for {what}: {reason}")


def split_address(address: str, what: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as bind() wants it; an empty host is every IPv4 address."""
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]") or "0.0.0.0", int(port)
    except ValueError:
        raise ListenError(f"cannot listen on {address!r} for {what}: expected host:port") from None


def claim_port(address: str, what: str, reuse_address: bool = True) -> socket.socket:
    """Bind `address` as gRPC and http.server do (SO_REUSEADDR, which forgives the last run's
    TIME_WAIT connections but not a listener) and without SO_REUSEPORT, so the bind fails if
    anything listens there, sharing sockets included. The caller closes it or holds it."""
    host, port = split_address(address, what)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_address))
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise listen_error(address, what, exc) from None
    return sock


class CheckServer:
    """One port serving Check, health and, given `lists`, ext_proc; `start()` returns once it
    listens, or raises ListenError. `share_port`: set SO_REUSEPORT (grpcio's default, so it is
    always said)."""

    def __init__(
        self,
        check: Check,
        listen: str,
        flavour: str = "core",
        threads: int = 16,
        share_port: bool = False,
        lists: ListService | None = None,
    ) -> None:
        if flavour not in GRPC_SERVERS:
            raise ValueError(f"--grpc-server {flavour!r}: expected one of {', '.join(GRPC_SERVERS)}")
        self.check, self.listen, self.flavour, self.threads = check, listen, flavour, threads
        self.share_port, self.lists = share_port, lists
        self._options = [("grpc.so_reuseport", int(share_port))]
        self.port = 0
        self._error: BaseException | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health: Any = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if not self.share_port:
            claim_port(self.listen, "gRPC").close()  # a busy port in our words, before grpcio logs its own
        if self.flavour == "core":
            self._server = self._health = CoreServer(self.check, self._options, min(self.threads, LOOPS), self.lists)
            self._bind()
            self.set_serving(False)
            self._server.start()
            return
        if self.flavour == "threads":
            self._health = health.HealthServicer()
            streams = self.lists.streams if self.lists is not None else 0
            self._server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=self.threads + streams, thread_name_prefix="check"),
                options=self._options,
            )
            self._server.add_generic_rpc_handlers(
                self._handlers(lambda payload, context: self.check(payload), self._process_in_thread)
            )
            self._finish_setup()
            self._server.start()
            return
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, args=(ready,), name="grpc-aio", daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._server is None:
            raise self._error or RuntimeError(f"gRPC {self.flavour} server did not start on {self.listen}")

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in HEALTH_SERVICES:
            if self._loop is None:
                self._health.set(service, status)
            else:
                asyncio.run_coroutine_threadsafe(self._health.set(service, status), self._loop).result(5)

    def stop(self, grace: float) -> None:
        if self._loop is None:
            self._server.stop(grace).wait()
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(grace + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    # --- building ------------------------------------------------------------------------

    def _handlers(self, behaviour: Callable[..., Any], process: Callable[..., Any]) -> list[grpc.GenericRpcHandler]:
        method = grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=None, response_serializer=None)
        handlers = [grpc.method_handlers_generic_handler(AUTHORIZATION_SERVICE, {"Check": method})]
        if self.lists is not None:
            stream = grpc.stream_stream_rpc_method_handler(
                process,
                request_deserializer=ProcessingRequest.FromString,
                response_serializer=ProcessingResponse.SerializeToString,
            )
            handlers.append(grpc.method_handlers_generic_handler(EXT_PROC_SERVICE, {"Process": stream}))
        return handlers

    def _process_in_thread(self, requests: Iterator[ProcessingRequest], context: Any) -> Iterator[ProcessingResponse]:
        """One ext_proc stream on a pool thread; a stream past the bound is refused at once."""
        lists = self.lists
        assert lists is not None
        stream = lists.open()
        if stream is None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY)
            return
        try:
            for request in requests:
                yield stream.answer(request)
        finally:
            lists.close(stream)

    async def _process_on_loop(
        self, requests: AsyncIterator[ProcessingRequest], context: Any
    ) -> AsyncIterator[ProcessingResponse]:
        """One ext_proc stream on the event loop (each answer is short, CPU-bound work, as a Check is)."""
        lists = self.lists
        assert lists is not None
        stream = lists.open()
        if stream is None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY)
            return
        try:
            async for request in requests:
                yield stream.answer(request)
        finally:
            lists.close(stream)

    def _finish_setup(self) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._bind()
        self.set_serving(False)  # until the caller says policies are loaded

    def _bind(self) -> None:
        """grpcio 1.85 raises RuntimeError on a port it cannot bind, in every flavour (older
        releases returned 0); reached only when the port was taken after `claim_port` said free."""
        try:
            self.port = self._server.add_insecure_port(self.listen)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise listen_error(self.listen, "gRPC")

    def _run_loop(self, ready: threading.Event) -> None:
        if self.flavour == "uvloop":
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        check = self.check

        async def behaviour(payload: bytes, context: Any) -> bytes:
            return check(payload)  # CPU-bound and short; chain store calls have tight timeouts

        async def serve() -> None:
            self._health = health.aio.HealthServicer()
            self._server = grpc.aio.server(options=self._options)
            self._server.add_generic_rpc_handlers(self._handlers(behaviour, self._process_on_loop))
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
            self._bind()
            for service in HEALTH_SERVICES:
                await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            await self._server.start()

        try:
            loop.run_until_complete(serve())
        except Exception as exc:  # noqa: BLE001 - start() raises it in the caller's thread, not as a thread traceback
            self._server, self._error = None, exc
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        loop.run_forever()
        loop.close()
