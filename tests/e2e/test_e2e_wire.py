"""Envoy's own CheckRequests take the fast path: `authz/check/wire.py` reads every one of them from
its bytes, exactly as protobuf's parse reads it, and a repeated request gets the same decision
key although Envoy gives each its own request id.

A capturing Check server (the real gRPC stack, answering OK) stands in for Mandate, so the
bytes are those Envoy sends; the MCP SDK client and a plain HTTPS client make the requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2, status_pb2

from authz.check.decision_cache import decision_key
from authz.check.pipeline import Authorizer
from authz.check.request import from_check_request, from_wire
from authz.check.wire import read_wire
from authz.policy.compiled import PolicySet
from authz.serve.grpc_server import CheckServer
from tests.harness.clients import mcp_client, raw_client, run_async
from tests.harness.envoy import EnvoyProcess, mesh_envoy_config
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import GITHUB_HOST, STATUS_HOST
from tests.harness.upstreams import Upstream

ALLOW = CheckResponse(status=status_pb2.Status(code=code_pb2.OK)).SerializeToString()


@pytest.fixture
def captured(
    pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream, echo_upstream: Upstream, tmp_path: Path
) -> Iterator[tuple[list[bytes], EnvoyProcess]]:
    payloads: list[bytes] = []

    def check(payload: bytes) -> bytes:
        payloads.append(payload)
        return ALLOW

    server = CheckServer(check, "127.0.0.1:0")
    server.start()
    server.set_serving(True)
    upstreams = {GITHUB_HOST: mcp_upstream.port, "*": echo_upstream.port}
    envoy = EnvoyProcess(mesh_envoy_config(pki, server.port, upstreams), tmp_path).start()
    try:
        yield payloads, envoy
    finally:
        envoy.stop()
        server.stop(1.0)


def test_envoys_check_requests_are_read_from_their_bytes_as_protobuf_reads_them(
    captured: tuple[list[bytes], EnvoyProcess], pki: MeshPKI, support_cert: CertPair, example_policy: PolicySet
) -> None:
    payloads, envoy = captured
    with raw_client(envoy, pki, support_cert, STATUS_HOST) as client:
        for _ in range(2):
            assert client.get("/status/health").status_code == 200
    gets = list(payloads)

    async def scenario() -> None:
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST) as session:
            await session.call_tool("get_me", {})

    run_async(scenario())
    assert len(payloads) >= 4  # two GETs, then MCP's initialize, its notification, the call ...
    bodies = []
    for payload in payloads:
        wire = read_wire(payload)
        assert wire is not None, CheckRequest.FromString(payload)
        assert from_wire(wire, None) == from_check_request(CheckRequest.FromString(payload))
        bodies.append(wire.raw_body or wire.body)
    assert any(b'"tools/call"' in body for body in bodies)

    cache = Authorizer(example_policy)._snapshot.cache
    first, second = (read_wire(payload) for payload in gets)
    assert gets[0] != gets[1]  # Envoy's request id, time and the client's port differ ...
    assert first is not None and second is not None
    first_key, second_key = (decision_key(wire, cache.headers, 4096, cache.length_at)[0] for wire in (first, second))
    assert first_key == second_key is not None  # ... the key does not
    call = next(read_wire(payload) for payload, body in zip(payloads, bodies) if b'"tools/call"' in body)
    assert (
        call is not None and decision_key(call, cache.headers, 4096, cache.length_at)[1] is not None
    )  # its id is left out
