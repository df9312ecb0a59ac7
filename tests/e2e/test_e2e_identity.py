"""Who the caller is comes from the mTLS peer certificate, and only from there.

Covers: a forged `x-caller-identity` is overwritten; TLS failures never reach Mandate or an
upstream; a valid mesh identity that no profile governs is refused with a readable reason.
"""

from __future__ import annotations

import ssl

import httpx
import httpx2
import pytest
from a2a.client import AgentCardResolutionError
from mcp import MCPError
from mcp.types import CallToolResult

from tests.harness.clients import a2a_http_client, a2a_send_text, mcp_client, raw_client, run_async
from tests.harness.envoy import EnvoyProcess
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import BILLING_HOST, GITHUB_HOST, STATUS_HOST, SUPPORT_ID
from tests.harness.processes import MandateProcess, wait_until
from tests.harness.upstreams import Upstream

FORGED = "spiffe://cluster.local/ns/kube-system/sa/cluster-admin"
NOBODY_ID = "spiffe://cluster.local/ns/unknown/sa/nobody"


def leaf_exceptions(error: BaseException) -> list[BaseException]:
    """Flatten (nested) ExceptionGroups, as anyio task groups raise them."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaf_exceptions(inner)]
    return [error]


def is_tls_rejection(error: BaseException | None, transport_error: type[Exception]) -> bool:
    """The client saw the handshake fail: the HTTP library's transport error or, rarely, a
    bare ssl.SSLError (httpcore's anyio backend leaves an alert read mid-response unmapped, and
    the a2a SDK then does not wrap it: about 1 in 300 runs with the untrusted CA)."""
    return isinstance(error, (transport_error, ssl.SSLError))


def test_forged_caller_identity_is_overwritten_mcp(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream
) -> None:
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> CallToolResult:
        headers = {"x-caller-identity": FORGED}
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode="legacy", headers=headers) as client:
            return await client.call_tool("get_me", {})

    assert run_async(scenario()).structured_content == {"login": "alice", "id": 1}
    seen = mcp_upstream.recorder.since(mark)
    assert {request.method for request in seen} >= {"POST", "DELETE"}  # initialize ... session end (GET races)
    for request in seen:
        assert request.header_values("x-caller-identity") == [SUPPORT_ID], (request.method, request.jsonrpc_method)


def test_forged_caller_identity_is_overwritten_http(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, echo_upstream: Upstream
) -> None:
    mark = echo_upstream.recorder.mark()
    forged = {"x-caller-identity": FORGED, "x-forwarded-client-cert": f"URI={FORGED}"}
    with raw_client(envoy, pki, support_cert, STATUS_HOST, **forged) as client:
        response = client.get("/api/health")
    assert response.status_code == 200, response.text
    [seen] = echo_upstream.recorder.since(mark)
    assert seen.header_values("x-caller-identity") == [SUPPORT_ID]
    [xfcc] = seen.header_values("x-forwarded-client-cert")  # Envoy sanitises and sets XFCC from the peer cert
    assert f"URI={SUPPORT_ID}" in xfcc and FORGED not in xfcc


@pytest.mark.parametrize("client_cert", ["untrusted-ca", "no-cert"])
def test_tls_failure_reaches_neither_mandate_nor_upstream(
    client_cert: str,
    envoy: EnvoyProcess,
    pki: MeshPKI,
    untrusted_cert: CertPair,
    mandate: MandateProcess,
    mcp_upstream: Upstream,
    a2a_upstream: Upstream,
    echo_upstream: Upstream,
) -> None:
    cert = untrusted_cert if client_cert == "untrusted-ca" else None
    upstreams = (mcp_upstream, a2a_upstream, echo_upstream)
    marks = [upstream.recorder.mark() for upstream in upstreams]
    decisions_before = mandate.decision_count()
    stat = "ssl.fail_verify_error" if cert else "ssl.fail_verify_no_cert"

    def ssl_failures() -> int:
        return sum(value for name, value in envoy.stats("ssl.").items() if name.endswith(stat))

    stat_before = ssl_failures()

    # raw httpx: the handshake fails on first read
    # (which check failed is asserted below through Envoy's ssl stats, not the alert text)
    with raw_client(envoy, pki, cert, STATUS_HOST) as client, pytest.raises(httpx.TransportError):
        client.get("/api/health")

    # the MCP SDK: an httpx2 transport error, wrapped in the transport's ExceptionGroups
    async def mcp_scenario() -> None:
        async with mcp_client(envoy, pki, cert, GITHUB_HOST, mode="2026-07-28") as client:
            await client.call_tool("get_me", {})

    with pytest.raises(BaseException) as mcp_error:
        run_async(mcp_scenario())
    leaves = leaf_exceptions(mcp_error.value)
    assert leaves and all(is_tls_rejection(leaf, httpx2.TransportError) for leaf in leaves), leaves

    # the A2A SDK: the card cannot be fetched, and there is no HTTP status at all
    async def a2a_scenario() -> str:
        async with a2a_http_client(pki, cert, BILLING_HOST) as http:
            return await a2a_send_text(envoy, http, "hello?")

    with pytest.raises((AgentCardResolutionError, ssl.SSLError)) as a2a_error:
        run_async(a2a_scenario())
    if isinstance(a2a_error.value, AgentCardResolutionError):
        assert a2a_error.value.status_code is None
        assert is_tls_rejection(a2a_error.value.__cause__, httpx.TransportError)
    else:
        assert is_tls_rejection(a2a_error.value, httpx.TransportError)

    assert [upstream.recorder.since(mark) for upstream, mark in zip(upstreams, marks, strict=True)] == [[], [], []]
    assert mandate.decision_count() == decisions_before  # Envoy never asked Mandate
    wait_until(lambda: ssl_failures() >= stat_before + 3, 5.0, f"Envoy to count three {stat}")


def test_unknown_caller_gets_jsonrpc_403(
    envoy: EnvoyProcess, pki: MeshPKI, nobody_cert: CertPair, mcp_upstream: Upstream
) -> None:
    mark = mcp_upstream.recorder.mark()
    body = {"jsonrpc": "2.0", "id": "req-17", "method": "tools/call", "params": {"name": "get_me", "arguments": {}}}
    with raw_client(envoy, pki, nobody_cert, GITHUB_HOST) as client:
        response = client.post("/mcp", json=body, headers={"accept": "application/json, text/event-stream"})
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] == "req-17"
    assert answer["error"]["data"]["reason"] == "unknown_caller"
    assert answer["error"]["data"]["decision_id"] == response.headers["x-mandate-decision-id"]
    assert NOBODY_ID in answer["error"]["message"]
    assert mcp_upstream.recorder.since(mark) == []


def test_unknown_caller_via_mcp_sdk(
    envoy: EnvoyProcess, pki: MeshPKI, nobody_cert: CertPair, mcp_upstream: Upstream
) -> None:
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> MCPError:
        async with mcp_client(envoy, pki, nobody_cert, GITHUB_HOST, mode="2026-07-28") as client:
            with pytest.raises(MCPError) as denied:
                await client.call_tool("get_me", {})
            return denied.value

    error = run_async(scenario())
    assert isinstance(error.data, dict) and error.data["reason"] == "unknown_caller"
    assert NOBODY_ID in error.message
    assert mcp_upstream.recorder.since(mark) == []


def test_unknown_caller_plain_http_gets_json_403(
    envoy: EnvoyProcess, pki: MeshPKI, nobody_cert: CertPair, echo_upstream: Upstream
) -> None:
    """Not JSON-RPC: the deny body is `{"error", "reason", "decision_id"}`."""
    mark = echo_upstream.recorder.mark()
    with raw_client(envoy, pki, nobody_cert, STATUS_HOST) as client:
        response = client.get("/api/health")
    assert response.status_code == 403
    answer = response.json()
    assert set(answer) == {"error", "reason", "decision_id"}
    assert answer["reason"] == "unknown_caller"
    assert answer["decision_id"] == response.headers["x-mandate-decision-id"]
    assert echo_upstream.recorder.since(mark) == []
