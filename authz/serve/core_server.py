"""The `core` flavour: Mandate's own serving loop on grpc-core's completion queue.

grpcio's servers spend more of a Check's time in their own Python than Mandate spends
deciding it (ANALYSIS.md, "The core loop"): each call crosses from a poller thread to a pool
thread and back under locks, conditions and futures. Here a few threads poll one completion
queue and each answers the event it polled, start to finish. grpc-core still does all of
HTTP/2 and gRPC's framing, limits and deadlines; this module only routes finished messages.

Rules:
1. A Check or a health Check is answered by the thread that polled its message: no hand-off.
2. Exactly three methods are served (Check, health Check, and ext_proc's Process given a
   ListService); any other, health's Watch included, is UNIMPLEMENTED.
3. A handler that raises answers INTERNAL with a reason; no call is left without a status.
4. An ext_proc answer, which may filter a long list, runs on a pool of `lists.streams`
   threads, so list answers never hold the threads Checks need.
5. `stop(grace)` refuses new calls, cancels those still open after `grace`, and returns once
   every polling thread has left; the queue closes only after that (grpc-core aborts the
   process on a batch started against a closed queue).

It uses grpcio's Cython layer (`grpc._cython.cygrpc`), the API grpcio's own servers are
written on; tests/unit/test_grpc_server.py runs every flavour through the same cases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import TYPE_CHECKING, Any

from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest
from google.protobuf.message import DecodeError
from grpc._cython import cygrpc
from grpc_health.v1 import health_pb2

if TYPE_CHECKING:
    from authz.listing.service import ListService
    from authz.listing.stream import ListStream

CHECK = b"/envoy.service.auth.v3.Authorization/Check"
HEALTH_CHECK = b"/grpc.health.v1.Health/Check"
PROCESS = b"/envoy.service.ext_proc.v3.ExternalProcessor/Process"
LOOPS = 4  # threads polling the queue: ANALYSIS.md, "The core loop"
POLL_SECONDS = 0.2  # how soon an idle loop notices that the server has stopped
JOIN_SECONDS = 10
OK = cygrpc.StatusCode.ok
ONE_MESSAGE = b"a unary call carries exactly one request message"
BUSY = "Mandate is filtering as many list answers as it may at once; this one is refused (fail closed)"
_LOG = logging.getLogger("mandate.grpc")


def _finish(call: Any, code: int, details: bytes, body: bytes | None = None) -> None:
    """Send the whole answer in one batch; the tag keeps the call alive until it is sent."""
    ops = [cygrpc.SendInitialMetadataOperation(None, 0), cygrpc.SendStatusFromServerOperation(None, code, details, 0)]
    if body is not None:
        ops.append(cygrpc.SendMessageOperation(body, 0))
    call.start_server_batch(ops, _Sent(call))


class Refused(Exception):
    """A unary handler's way to answer with a status other than OK."""

    def __init__(self, code: int, details: bytes) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _Sent:
    """The tag of a batch whose completion needs nothing done."""

    __slots__ = ("call",)

    def __init__(self, call: Any) -> None:
        self.call = call

    def __call__(self, event: Any) -> None:
        pass


class _Unary:
    """One Check or health Check: its message arrives, its answer leaves on the same thread."""

    __slots__ = ("answer", "call")

    def __init__(self, call: Any, answer: Callable[[bytes], bytes]) -> None:
        self.call, self.answer = call, answer
        call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), self)

    def __call__(self, event: Any) -> None:
        if not event.success:
            return  # cancelled or its connection gone: grpc-core has already ended the call
        message = event.batch_operations[0].message()
        if message is None:
            _finish(self.call, cygrpc.StatusCode.unimplemented, ONE_MESSAGE)
            return
        try:
            body = self.answer(message)
        except Refused as refusal:
            _finish(self.call, refusal.code, refusal.details)
            return
        except Exception:  # noqa: BLE001 - rule 3: the caller gets a status, the log the traceback
            _LOG.exception("a gRPC handler failed; answered INTERNAL")
            _finish(self.call, cygrpc.StatusCode.internal, b"Mandate failed to answer (fail closed); see its log")
            return
        _finish(self.call, OK, b"", body)


class _Process:
    """One ext_proc stream: receive a message, answer it on the pool, send, receive the next."""

    __slots__ = ("began", "call", "pool", "service", "stream")

    def __init__(self, call: Any, stream: ListStream, service: ListService, pool: futures.Executor) -> None:
        self.call, self.stream, self.service, self.pool = call, stream, service, pool
        self.began = False
        self._receive()

    def _receive(self) -> None:
        self.call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), self._received)

    def _received(self, event: Any) -> None:
        message = event.batch_operations[0].message() if event.success else None
        if message is None:
            self._close(OK if event.success else None)  # the client's half-close ends the stream
            return
        self.pool.submit(self._answer, message)

    def _answer(self, message: bytes) -> None:
        try:
            body = self.stream.answer(ProcessingRequest.FromString(message)).SerializeToString()
        except DecodeError:
            self._close(cygrpc.StatusCode.invalid_argument, b"not an ext_proc ProcessingRequest (fail closed)")
            return
        except Exception:  # noqa: BLE001 - rule 3
            _LOG.exception("an ext_proc message could not be answered; the stream ends INTERNAL")
            self._close(cygrpc.StatusCode.internal, b"Mandate failed to answer this ext_proc message (fail closed)")
            return
        ops = [cygrpc.SendMessageOperation(body, 0)]
        if not self.began:
            ops.insert(0, cygrpc.SendInitialMetadataOperation(None, 0))
            self.began = True
        self.call.start_server_batch(ops, self._sent)

    def _sent(self, event: Any) -> None:
        if event.success:
            self._receive()
        else:
            self._close(None)

    def _close(self, code: int | None, details: bytes = b"") -> None:
        """Give the stream's slot back; with a code, end the call with that status."""
        self.service.close(self.stream)
        if code is None:
            return
        ops = [cygrpc.SendStatusFromServerOperation(None, code, details, 0)]
        if not self.began:
            ops.insert(0, cygrpc.SendInitialMetadataOperation(None, 0))
        self.call.start_server_batch(ops, _Sent(self.call))


class CoreServer:
    """The loop (rules above), with grpc.Server's shape where CheckServer uses it:
    `add_insecure_port`, `start`, `stop(grace) -> Event`, and health's `set(service, status)`."""

    def __init__(
        self, check: Callable[[bytes], bytes], options: list[tuple[str, Any]], loops: int, lists: ListService | None
    ) -> None:
        self._server = cygrpc.Server(tuple(options), False)
        self._queue = cygrpc.CompletionQueue()
        self._server.register_completion_queue(self._queue)
        self._routes: Mapping[bytes, Callable[[bytes], bytes]] = {CHECK: check, HEALTH_CHECK: self._health}
        self._lists = lists
        self._pool = futures.ThreadPoolExecutor(lists.streams, "ext-proc") if lists is not None else None
        self._statuses: dict[str, int] = {}
        self._loops = [threading.Thread(target=self._poll, name=f"grpc-core-{n}", daemon=True) for n in range(loops)]
        self._stopping = False
        self._drained_all, self._stopped = threading.Event(), threading.Event()

    def add_insecure_port(self, address: str) -> int:
        return int(self._server.add_http2_port(address.encode()))

    def set(self, service: str, status: int) -> None:
        self._statuses[service] = status

    def start(self) -> None:
        self._server.start()
        for loop in self._loops:
            self._server.request_call(self._queue, self._queue, self._accept)
            loop.start()

    def stop(self, grace: float) -> threading.Event:
        if not self._stopping:
            self._stopping = True
            self._server.shutdown(self._queue, self._drained)
            if not self._drained_all.wait(grace):
                self._server.cancel_all_calls()
            self._close()
        return self._stopped

    def _poll(self) -> None:
        queue, complete, drained = self._queue, cygrpc.CompletionType.operation_complete, self._drained_all
        while not drained.is_set():
            event = queue.poll(time.time() + POLL_SECONDS)
            if event.completion_type == complete:
                try:
                    event.tag(event)
                except Exception:  # noqa: BLE001 - a call that broke must not take its loop with it
                    _LOG.exception("a gRPC call could not be finished")

    def _drained(self, event: Any) -> None:
        """Every call has ended (or was cancelled) after `stop`: the loops may leave."""
        self._drained_all.set()

    def _close(self) -> None:
        """Close the queue once nothing can start a batch on it any more: grpc-core aborts the
        process on a batch started against a closed queue (a handler still running, say)."""
        for loop in self._loops:
            loop.join(JOIN_SECONDS)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._stopped.set()
        if any(loop.is_alive() for loop in self._loops):
            _LOG.warning("a Check outlived the stop by %d s; the gRPC queue is left open", JOIN_SECONDS)
            return
        self._queue.shutdown()
        while self._queue.poll().completion_type != cygrpc.CompletionType.queue_shutdown:
            pass  # what is left are the failed completions of the cancelled calls
        self._server.destroy()

    def _accept(self, event: Any) -> None:
        if not event.success:
            return  # the server is shutting down: no call came
        if not self._stopping:
            self._server.request_call(self._queue, self._queue, self._accept)
        call, method = event.call, event.call_details.method
        answer = self._routes.get(method)
        if answer is not None:
            _Unary(call, answer)
        elif method == PROCESS and self._lists is not None and self._pool is not None:
            self._open_stream(call, self._lists, self._pool)
        else:
            _finish(call, cygrpc.StatusCode.unimplemented, b"Mandate does not serve " + method)

    def _open_stream(self, call: Any, lists: ListService, pool: futures.Executor) -> None:
        stream = lists.open()
        if stream is None:
            _finish(call, cygrpc.StatusCode.resource_exhausted, BUSY.encode())
            return
        _Process(call, stream, lists, pool)

    def _health(self, message: bytes) -> bytes:
        try:
            service = health_pb2.HealthCheckRequest.FromString(message).service
        except DecodeError:
            raise Refused(cygrpc.StatusCode.invalid_argument, b"not a HealthCheckRequest") from None
        status = self._statuses.get(service)
        if status is None:
            raise Refused(cygrpc.StatusCode.not_found, b"unknown service")
        return health_pb2.HealthCheckResponse(status=status).SerializeToString()  # type: ignore[arg-type]
