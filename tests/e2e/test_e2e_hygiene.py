"""Request hygiene through a real Envoy, with raw httpx: input a strict reader would question
is refused (400) before any rule looks at it, and never reaches the upstream.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.harness.clients import raw_client
from tests.harness.envoy import EnvoyProcess
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import GITHUB_HOST, STATUS_HOST
from tests.harness.upstreams import Upstream

MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream"}


def call(name: str, request_id: int | str = 7, **arguments: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def post_mcp(
    envoy: EnvoyProcess, pki: MeshPKI, cert: CertPair, content: bytes, path: str = "/mcp", **headers: str
) -> httpx.Response:
    with raw_client(envoy, pki, cert, GITHUB_HOST) as client:
        return client.post(path, content=content, headers={"content-type": "application/json", **MODERN, **headers})


def assert_jsonrpc_deny(response: httpx.Response, status: int, reason: str, request_id: object = ...) -> dict[str, Any]:
    """Status, decision-id header, and a JSON-RPC error body naming `reason`; returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["jsonrpc"] == "2.0"
    if request_id is not ...:
        assert answer["id"] == request_id
    error = answer["error"]
    assert error["data"]["reason"] == reason, error
    assert error["data"]["decision_id"] == response.headers["x-mandate-decision-id"]
    return dict(error)


MALFORMED = [
    pytest.param(
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_me","name":"create_issue"}}',
        {},
        "duplicate_json_key",
        -32700,
        id="duplicate-key",
    ),
    pytest.param(b'{"jsonrpc":"2.0","id":7,"method":"tools/call"', {}, "invalid_json", -32700, id="truncated-json"),
    pytest.param(b"", {}, "missing_body", -32600, id="empty-body"),
    pytest.param(json.dumps({"id": 7, "method": "ping"}).encode(), {}, "invalid_jsonrpc", -32600, id="not-jsonrpc-2.0"),
]


@pytest.mark.parametrize(("content", "headers", "reason", "code"), MALFORMED)
def test_malformed_body_is_400(
    content: bytes,
    headers: dict[str, str],
    reason: str,
    code: int,
    envoy: EnvoyProcess,
    pki: MeshPKI,
    support_cert: CertPair,
    mcp_upstream: Upstream,
) -> None:
    mark = mcp_upstream.recorder.mark()
    error = assert_jsonrpc_deny(post_mcp(envoy, pki, support_cert, content, **headers), 400, reason)
    assert error["code"] == code
    assert mcp_upstream.recorder.since(mark) == []


def test_duplicate_json_key_echoes_request_id(envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair) -> None:
    content = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_me","name":"create_issue"}}'
    assert_jsonrpc_deny(post_mcp(envoy, pki, support_cert, content), 400, "duplicate_json_key", request_id=7)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"mcp-method": "tools/list"}, call("get_me", 3), id="method-header"),
        pytest.param(
            {"mcp-method": "tools/call", "mcp-name": "get_me"},
            call("create_issue", 3, repo="acme/x", title="t"),
            id="name-header",
        ),
    ],
)
def test_routing_header_disagreeing_with_body_is_400(
    headers: dict[str, str],
    body: dict[str, Any],
    envoy: EnvoyProcess,
    pki: MeshPKI,
    support_cert: CertPair,
    mcp_upstream: Upstream,
) -> None:
    """A proxy that routes on Mcp-Method/Mcp-Name must never see a body that says otherwise."""
    mark = mcp_upstream.recorder.mark()
    response = post_mcp(envoy, pki, support_cert, json.dumps(body).encode(), **headers)
    assert_jsonrpc_deny(response, 400, "mcp_header_mismatch", request_id=3)
    assert mcp_upstream.recorder.since(mark) == []


def test_batch_in_2026_07_28_is_400(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream
) -> None:
    mark = mcp_upstream.recorder.mark()
    batch = [call("get_me", 1), {"jsonrpc": "2.0", "id": 2, "method": "ping"}]
    response = post_mcp(envoy, pki, support_cert, json.dumps(batch).encode())
    assert_jsonrpc_deny(response, 400, "batch_not_allowed")
    assert mcp_upstream.recorder.since(mark) == []


def test_batch_in_2025_03_26_is_denied_if_any_element_is(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream
) -> None:
    """2025-03-26 allows batches; one refused element refuses the batch, answering every id."""
    mark = mcp_upstream.recorder.mark()
    batch = [call("get_me", 1), call("create_issue", 2, repo="acme/x", title="t")]
    response = post_mcp(envoy, pki, support_cert, json.dumps(batch).encode(), **{"mcp-protocol-version": "2025-03-26"})
    assert response.status_code == 403
    answers = response.json()
    assert [answer["id"] for answer in answers] == [1, 2]
    assert {answer["error"]["data"]["reason"] for answer in answers} == {"tool_not_allowed"}
    assert {answer["error"]["data"]["decision_id"] for answer in answers} == {response.headers["x-mandate-decision-id"]}
    assert mcp_upstream.recorder.since(mark) == []


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        pytest.param("/mcp/..%2Fadmin", 400, "ambiguous_path", id="encoded-slash"),
        pytest.param("/mcp%5Cadmin", 400, "ambiguous_path", id="encoded-backslash"),
        pytest.param("/mcp/%252e%252e/admin", 400, "ambiguous_path", id="double-encoded"),
        pytest.param("/mcp/%2e%2e/admin", 403, "path_outside_target", id="dot-dot-leaves-prefix"),
    ],
)
def test_ambiguous_or_escaping_path_is_refused(
    path: str,
    status: int,
    reason: str,
    envoy: EnvoyProcess,
    pki: MeshPKI,
    support_cert: CertPair,
    mcp_upstream: Upstream,
) -> None:
    mark = mcp_upstream.recorder.mark()
    response = post_mcp(envoy, pki, support_cert, json.dumps(call("get_me", 8)).encode(), path=path)
    assert_jsonrpc_deny(response, status, reason)
    assert mcp_upstream.recorder.since(mark) == []


def test_body_larger_than_envoy_buffer_is_400(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream
) -> None:
    """Envoy sends only the first 1 MiB to Mandate (allow_partial_message): it must not guess."""
    mark = mcp_upstream.recorder.mark()
    body = json.dumps(call("get_me", 9, padding="x" * (1536 * 1024))).encode()
    response = post_mcp(envoy, pki, support_cert, body)
    assert_jsonrpc_deny(response, 400, "partial_body")
    assert mcp_upstream.recorder.since(mark) == []


def test_plain_http_target_rules(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, echo_upstream: Upstream
) -> None:
    """An `http` Target: path and method rules; denies are plain JSON, not JSON-RPC."""
    mark = echo_upstream.recorder.mark()
    with raw_client(envoy, pki, support_cert, STATUS_HOST) as client:
        allowed = client.get("/api/health?verbose=1")
        wrong_method = client.post("/api/health", json={"jsonrpc": "2.0", "id": 1, "method": "x"})
        wrong_path = client.get("/admin/users")
    assert allowed.status_code == 200 and allowed.json()["path"] == "/api/health"
    for denied in (wrong_method, wrong_path):
        assert denied.status_code == 403
        answer = denied.json()
        assert answer["reason"] == "http_not_allowed"
        assert answer["decision_id"] == denied.headers["x-mandate-decision-id"]
    assert [(seen.method, seen.path) for seen in echo_upstream.recorder.since(mark)] == [
        ("GET", "/api/health?verbose=1")
    ]


def test_unknown_target_host_is_denied(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, echo_upstream: Upstream
) -> None:
    """Envoy routes any Host (catch-all virtual host); Mandate refuses hosts no target claims."""
    mark = echo_upstream.recorder.mark()
    with raw_client(envoy, pki, support_cert, "exfil.example.com") as client:
        response = client.get("/upload")
    assert response.status_code == 403
    assert response.json()["reason"] == "unknown_target"
    assert echo_upstream.recorder.since(mark) == []
