"""Every gRPC flavour serves Envoy's ExternalProcessor beside Check, on the same port: one
bidirectional stream per list answer, and no more at once than the ListService allows."""

from __future__ import annotations

import threading
from typing import Self

import grpc
import orjson
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.check.pipeline import Authorizer
from authz.listing.service import ListService
from authz.serve.grpc_server import EXT_PROC_SERVICE, GRPC_SERVERS, CheckServer
from tests.harness.ext_proc import jsonrpc, request_body, request_headers, response_body, response_headers
from tests.harness.processes import free_port, wait_until

ANSWER = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "get_me"}, {"name": "delete_repo"}]}}


def start(policy, flavour: str, streams: int = 4) -> CheckServer:
    server = CheckServer(
        lambda payload: b"",
        f"127.0.0.1:{free_port()}",
        flavour,
        threads=2,
        lists=ListService(Authorizer(policy), streams=streams),
    )
    server.start()
    server.set_serving(True)
    return server


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_flavour_filters_a_list_answer_over_one_stream(example_policy, flavour: str) -> None:
    server = start(example_policy, flavour)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=EXT_PROC_SERVICE))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            messages = [
                request_headers(),
                request_body(orjson.dumps(jsonrpc("tools/list"))),
                response_headers(200, {"content-type": "application/json"}),
                response_body(orjson.dumps(ANSWER), True),
            ]
            replies = list(
                external_processor_pb2_grpc.ExternalProcessorStub(channel).Process(iter(messages), timeout=10)
            )
        assert [reply.WhichOneof("response") for reply in replies] == [
            "request_headers",
            "request_body",
            "response_headers",
            "response_body",
        ]
        body = orjson.loads(replies[3].response_body.response.body_mutation.body)
        assert body["result"]["tools"] == [{"name": "get_me"}]
    finally:
        server.stop(0)


class Lists:
    """A started server and a stub to its ExternalProcessor; streams held open (`hold`) are let
    go when the block ends, and the server stopped."""

    def __init__(self, policy, flavour: str, streams: int = 4) -> None:
        self.server = start(policy, flavour, streams)
        self.release = threading.Event()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        self.stub = external_processor_pb2_grpc.ExternalProcessorStub(self.channel)
        self.stopped = False

    def hold(self):
        """A stream that has sent its request headers and had them answered, held open."""

        def holding():
            yield request_headers()
            self.release.wait(20)

        stream = self.stub.Process(holding(), timeout=20)
        next(stream)
        return stream

    def served_or_busy(self) -> list[str] | None:
        """One short stream's replies, or None while the service refuses it as busy."""
        try:
            return [reply.WhichOneof("response") for reply in self.stub.Process(iter([request_headers()]), timeout=5)]
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return None
            raise

    def stop(self, grace: float) -> None:
        self.stopped = True
        self.server.stop(grace)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.channel.close()
        if not self.stopped:
            self.server.stop(0)


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_a_stream_past_the_bound_is_refused_at_once(example_policy, flavour: str) -> None:
    """So Envoy answers that agent with an error, while Checks keep their threads."""
    with Lists(example_policy, flavour, streams=1) as lists:
        first = lists.hold()
        with pytest.raises(grpc.RpcError) as refused:
            list(lists.stub.Process(iter([request_headers()]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        lists.release.set()
        list(first)


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_a_stream_its_client_abandons_gives_its_slot_back(example_policy, flavour: str) -> None:
    """Otherwise a client that opens streams and walks away would leave every later list refused."""
    with Lists(example_policy, flavour, streams=1) as lists:
        lists.hold().cancel()
        assert wait_until(lists.served_or_busy, 5, "the slot back") == ["request_headers"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_stopping_ends_an_open_stream(example_policy, flavour: str) -> None:
    with Lists(example_policy, flavour) as lists:
        stream = lists.hold()
        lists.stop(0.1)
        with pytest.raises(grpc.RpcError):
            list(stream)
