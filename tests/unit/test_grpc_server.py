"""Every gRPC flavour serves Check and health the same way, and shares its port (SO_REUSEPORT)
only when told to: a lone server on a busy port is a ListenError, never a silent share."""

from __future__ import annotations

import socket

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
