"""A Check server that answers some requests with a gRPC error, for the load driver's tests.

An HTTP/2 load generator that only reads the HTTP status (h2load) sees these answers as
successes: each is an HTTP 200. This server counts what it sent, so a test can hold the
driver's error counts to it exactly. Two shapes of gRPC error, both real grpcio behaviour:
`abort` (a Trailers-Only answer: `grpc-status` in the only HEADERS frame) and a status set
beside a returned message (`grpc-status` in the trailers).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc

from tests.harness.processes import AUTHORIZATION_SERVICE

ABORTED = grpc.StatusCode.INTERNAL  # every `abort_every`-th request
TRAILED = grpc.StatusCode.NOT_FOUND  # every `trail_every`-th request not aborted


class FailingCheck:
    """Answers OK (an empty CheckResponse) but for every `abort_every`-th request, aborted, and
    every `trail_every`-th of the rest, answered with a message and then a non-OK status."""

    def __init__(self, abort_every: int, trail_every: int) -> None:
        self.abort_every, self.trail_every = abort_every, trail_every
        self.sent: Counter[str] = Counter()  # "OK", "INTERNAL", "NOT_FOUND"
        self._lock = threading.Lock()

    def check(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            number = sum(self.sent.values()) + 1
            code = (
                ABORTED
                if number % self.abort_every == 0
                else TRAILED
                if number % self.trail_every == 0
                else grpc.StatusCode.OK
            )
            self.sent[code.name] += 1
        if code is ABORTED:
            context.abort(code, "failing on purpose")
        if code is TRAILED:
            context.set_code(code)
            context.set_details("failing on purpose, after a message")
        return b""


@contextmanager
def failing_check_server(abort_every: int = 7, trail_every: int = 5) -> Iterator[tuple[str, FailingCheck]]:
    """(address, servicer) of a grpcio Check server on a free loopback port, stopped on exit."""
    servicer = FailingCheck(abort_every, trail_every)
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(servicer.check)  # bytes in, bytes out: no (de)serializers
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(AUTHORIZATION_SERVICE, {"Check": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)
