"""Every gRPC flavour serves Check and health the same way, and shares its port (SO_REUSEPORT)
only when told to: a lone server on a busy port is a ListenError, never a silent share."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.serve import grpc_server
from authz.serve.grpc_server import AUTHORIZATION_SERVICE, GRPC_SERVERS, CheckServer, ListenError
from tests.harness.processes import free_port

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def answer_with(code: int):
    """A check that echoes the request's path length as a status code, to prove it saw the bytes."""

    def check(payload: bytes) -> bytes:
        request = external_auth_pb2.CheckRequest.FromString(payload)
        response = external_auth_pb2.CheckResponse()
        response.status.code = code
        response.status.message = request.attributes.request.http.path
        return response.SerializeToString()

    return check


def statuses(channel: grpc.Channel) -> set[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    return {
        stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        for service in ("", AUTHORIZATION_SERVICE)
    }


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_flavour_serves_check_and_health(flavour: str) -> None:
    server = CheckServer(answer_with(7), f"127.0.0.1:{free_port()}", flavour, threads=4)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert statuses(channel) == {NOT_SERVING}  # listening, but not yet told it is ready
            server.set_serving(True)
            assert statuses(channel) == {SERVING}
            request = external_auth_pb2.CheckRequest()
            request.attributes.request.http.path = "/mcp"
            reply = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5)
            assert (reply.status.code, reply.status.message) == (7, "/mcp")
    finally:
        server.stop(0)


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_a_lone_server_never_sets_so_reuseport(flavour: str) -> None:
    """Neither a second server nor any SO_REUSEPORT socket gets in beside it."""
    first = CheckServer(answer_with(1), f"127.0.0.1:{free_port()}", flavour, 2)
    first.start()
    try:
        with pytest.raises(ListenError, match=f"127.0.0.1:{first.port} for gRPC: address already in use"):
            CheckServer(answer_with(2), f"127.0.0.1:{first.port}", flavour, 2).start()
        with socket.socket() as sharing, pytest.raises(OSError, match="in use"):
            sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sharing.bind(("127.0.0.1", first.port))
    finally:
        first.stop(0)


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_sharing_servers_share_one_port(flavour: str) -> None:
    """What `--workers` relies on: a second process (here, server) binds the same port."""
    address = f"127.0.0.1:{free_port()}"
    first, second = (CheckServer(answer_with(code), address, flavour, 2, share_port=True) for code in (1, 2))
    first.start()
    try:
        second.start()
        second.stop(0)
    finally:
        first.stop(0)


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_a_bind_lost_after_the_check_is_a_listen_error(flavour: str, monkeypatch, capfd) -> None:
    """A port taken between the free-port check and gRPC's own bind: grpcio 1.85 raises (older
    releases returned 0), and the asyncio flavours raise in their loop's thread; either way the
    caller gets a ListenError it can print as one line, and no thread traceback reaches stderr."""
    monkeypatch.setattr(grpc_server, "claim_port", lambda address, what: socket.socket())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"127.0.0.1:{port} for gRPC"):
            CheckServer(answer_with(0), f"127.0.0.1:{port}", flavour, 2).start()
    assert "Traceback" not in capfd.readouterr().err


def test_unknown_flavour_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="threads, asyncio, uvloop"):
        CheckServer(answer_with(0), "127.0.0.1:0", "gevent")


class Serving:
    """A started server in `flavour` answering with `check`, marked SERVING, and a channel to it."""

    def __init__(self, check, flavour: str) -> None:
        self.server = CheckServer(check, f"127.0.0.1:{free_port()}", flavour, threads=4)

    def __enter__(self) -> grpc.Channel:
        self.server.start()
        self.server.set_serving(True)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        return self.channel

    def __exit__(self, *exc) -> None:
        self.channel.close()
        self.server.stop(0)


def raw(channel: grpc.Channel, method: str, messages: list[bytes]):
    """Call `method` with any number of request messages (a unary method expects one)."""
    return channel.stream_unary(method, request_serializer=None, response_deserializer=None)(iter(messages), timeout=5)


CHECK_PATH = f"/{AUTHORIZATION_SERVICE}/Check"


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
@pytest.mark.parametrize(
    "method",
    [
        f"/{AUTHORIZATION_SERVICE}/check",
        f"/{AUTHORIZATION_SERVICE}/Check/",
        f"{AUTHORIZATION_SERVICE}/Check",
        "/envoy.service.auth.v2.Authorization/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ],
)
def test_only_the_exact_method_names_are_served(flavour: str, method: str) -> None:
    """A path that is almost Check's is not Check: it never reaches the handler."""
    with Serving(answer_with(0), flavour) as channel, pytest.raises(grpc.RpcError) as refused:
        raw(channel, method, [b""])
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_a_check_without_its_message_is_refused(flavour: str) -> None:
    """A client that half-closes before sending the request gets an error, never an answer."""
    with Serving(answer_with(0), flavour) as channel, pytest.raises(grpc.RpcError) as refused:
        raw(channel, CHECK_PATH, [])
    assert refused.value.code() != grpc.StatusCode.OK


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_a_handler_that_raises_fails_the_call_and_the_server_goes_on(flavour: str) -> None:
    def check(payload: bytes) -> bytes:
        if payload == b"boom":
            raise RuntimeError("a bug")
        return answer_with(3)(payload)

    with Serving(check, flavour) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            raw(channel, CHECK_PATH, [b"boom"])
        assert failed.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        answer = external_auth_pb2.CheckResponse.FromString(raw(channel, CHECK_PATH, [b""]))
        assert answer.status.code == 3


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_health_of_an_unknown_service_is_not_found(flavour: str) -> None:
    with Serving(answer_with(0), flavour) as channel, pytest.raises(grpc.RpcError) as refused:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_concurrent_calls_each_get_their_own_answer(flavour: str) -> None:
    """400 Checks at once over one connection: every answer is the one its request asked for."""
    stub_paths = [f"/p/{n}" for n in range(400)]
    with Serving(answer_with(5), flavour) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        calls = []
        for path in stub_paths:
            request = external_auth_pb2.CheckRequest()
            request.attributes.request.http.path = path
            calls.append(stub.Check.future(request, timeout=20))
        assert [call.result().status.message for call in calls] == stub_paths


def test_core_stop_cancels_what_outlives_the_grace_and_frees_its_threads() -> None:
    """`stop(grace)` returns with a call still being answered past it, the call fails for its
    client, and no loop thread is left behind."""
    started = threading.Event()

    def slow(payload: bytes) -> bytes:
        started.set()
        time.sleep(1.5)
        return answer_with(0)(payload)

    server = CheckServer(slow, f"127.0.0.1:{free_port()}", "core", threads=4)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary(CHECK_PATH, request_serializer=None, response_deserializer=None).future(
            b"", timeout=10
        )
        assert started.wait(5)
        server.stop(0.1)
        assert call.exception(5) is not None
    assert not [t for t in threading.enumerate() if t.name.startswith("grpc-core-")]


@pytest.mark.parametrize("flavour", GRPC_SERVERS)
def test_a_health_request_that_is_not_one_is_refused(flavour: str) -> None:
    """grpcio's servers say INTERNAL or UNKNOWN; the core loop INVALID_ARGUMENT, the client's fault."""
    with Serving(answer_with(0), flavour) as channel, pytest.raises(grpc.RpcError) as refused:
        raw(channel, "/grpc.health.v1.Health/Check", [b"\xff\xff\xff"])
    grpcios = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
    assert refused.value.code() in ({grpc.StatusCode.INVALID_ARGUMENT} if flavour == "core" else grpcios)
