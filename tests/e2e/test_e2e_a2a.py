"""A2A through Envoy with the real a2a-sdk client: billing-agent is a MissionProfile, so it
is also a target of kind `agent`, reached by its host.

Delegation chains minted by these calls are tested in test_e2e_chains.py.
"""

from __future__ import annotations

import json

import httpx
import pytest
from a2a.client import A2AClientError, AgentCardResolutionError
from a2a.types.a2a_pb2 import AgentCard

from tests.harness.clients import a2a_fetch_card, a2a_http_client, a2a_send_text, raw_client, run_async
from tests.harness.envoy import EnvoyProcess
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import BILLING_HOST, SUPPORT_ID
from tests.harness.upstreams import Upstream


def test_support_agent_may_message_billing_agent(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, a2a_upstream: Upstream
) -> None:
    mark = a2a_upstream.recorder.mark()

    async def scenario() -> str:
        async with a2a_http_client(pki, support_cert, BILLING_HOST) as http:
            return await a2a_send_text(envoy, http, "refund invoice 7?")

    assert run_async(scenario()) == "echo: refund invoice 7?"
    seen = a2a_upstream.recorder.since(mark)
    assert [(request.method, request.path, request.jsonrpc_method) for request in seen] == [
        ("GET", "/.well-known/agent-card.json", None),
        ("POST", "/", "SendMessage"),
    ]
    assert all(request.header_values("x-caller-identity") == [SUPPORT_ID] for request in seen)


def test_intern_cannot_fetch_billing_agent_card(
    envoy: EnvoyProcess, pki: MeshPKI, intern_cert: CertPair, a2a_upstream: Upstream
) -> None:
    """intern-agent has no `agents` rule: even the card is refused, and the SDK says 403."""
    mark = a2a_upstream.recorder.mark()

    async def scenario() -> str:
        async with a2a_http_client(pki, intern_cert, BILLING_HOST) as http:
            return await a2a_send_text(envoy, http, "hello")

    with pytest.raises(AgentCardResolutionError) as denied:
        run_async(scenario())
    assert denied.value.status_code == 403
    cause = denied.value.__cause__
    assert isinstance(cause, httpx.HTTPStatusError)
    answer = cause.response.json()  # a GET is not JSON-RPC: plain JSON deny body
    assert answer["reason"] == "agent_not_allowed"
    assert "billing-agent" in answer["error"]
    assert answer["decision_id"] == cause.response.headers["x-mandate-decision-id"]
    assert a2a_upstream.recorder.since(mark) == []


def test_intern_message_to_billing_agent_is_denied(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, intern_cert: CertPair, a2a_upstream: Upstream
) -> None:
    """With a card in hand (fetched by someone allowed), the intern's SendMessage is still refused."""

    async def fetch_card() -> AgentCard:
        async with a2a_http_client(pki, support_cert, BILLING_HOST) as http:
            return await a2a_fetch_card(envoy, http)

    async def send_as_intern(card: AgentCard) -> str:
        async with a2a_http_client(pki, intern_cert, BILLING_HOST) as http:
            return await a2a_send_text(envoy, http, "secret intern message", card=card)

    card = run_async(fetch_card())
    mark = a2a_upstream.recorder.mark()
    with pytest.raises(A2AClientError) as denied:
        run_async(send_as_intern(card))
    assert "403" in str(denied.value)
    cause = denied.value.__cause__
    assert isinstance(cause, httpx.HTTPStatusError)
    answer = cause.response.json()  # JSON-RPC error with the SDK's request id
    sent = json.loads(cause.request.content)
    assert sent["method"] == "SendMessage"
    assert answer["jsonrpc"] == "2.0" and answer["id"] == sent["id"]
    assert answer["error"]["data"]["reason"] == "agent_not_allowed"
    assert "billing-agent" in answer["error"]["message"]
    assert "intern-agent" in answer["error"]["message"]
    assert a2a_upstream.recorder.since(mark) == []


def test_method_outside_agents_rule_is_denied(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, a2a_upstream: Upstream
) -> None:
    """support-agent may SendMessage/SendStreamingMessage/GetTask billing-agent, not CancelTask."""
    mark = a2a_upstream.recorder.mark()
    body = {"jsonrpc": "2.0", "id": 41, "method": "CancelTask", "params": {"id": "task-1"}}
    with raw_client(envoy, pki, support_cert, BILLING_HOST, **{"a2a-version": "1.0"}) as client:
        response = client.post("/", json=body)
    assert response.status_code == 403
    answer = response.json()
    assert answer["id"] == 41
    assert answer["error"]["data"]["reason"] == "a2a_method_not_allowed"
    assert "CancelTask" in answer["error"]["message"]
    assert a2a_upstream.recorder.since(mark) == []
