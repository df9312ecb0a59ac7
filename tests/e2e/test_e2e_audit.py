"""The audit log: `mandate serve` writes one JSON line per decision to stdout, with OTel
attribute names, and never the tool arguments."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from mcp import MCPError

from tests.harness.clients import a2a_http_client, a2a_send_text, mcp_client, raw_client, run_async
from tests.harness.envoy import EnvoyProcess
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import BILLING_HOST, GITHUB_HOST, STATUS_HOST, SUPPORT_ID
from tests.harness.processes import MandateProcess, wait_until
from tests.harness.upstreams import Upstream


def test_mcp_decisions_are_audited_without_arguments(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream, mandate: MandateProcess
) -> None:
    secret_title = f"TOPSECRET-title-{uuid.uuid4().hex}"
    secret_repo = f"acme/classified-{uuid.uuid4().hex}"
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> MCPError:
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode="2026-07-28") as client:
            await client.call_tool("list_issues", {"repo": secret_repo})
            with pytest.raises(MCPError) as denied:
                await client.call_tool("create_issue", {"repo": secret_repo, "title": secret_title})
            return denied.value

    error = run_async(scenario())
    assert isinstance(error.data, dict)
    denied_id = error.data["decision_id"]
    [allowed_call] = [seen for seen in mcp_upstream.recorder.since(mark) if seen.jsonrpc_name == "list_issues"]
    [allowed_id] = allowed_call.header_values("x-mandate-decision-id")  # Mandate tags what it lets through

    denied = mandate.wait_audit(denied_id)
    allowed = mandate.wait_audit(allowed_id)
    common = {
        "caller": SUPPORT_ID,
        "profile": "support-agent",
        "target": "github",
        "protocol": "mcp",
        "mcp.method.name": "tools/call",
    }
    assert denied | common == denied and allowed | common == allowed, (denied, allowed)
    assert (denied["decision"], denied["reason"], denied["gen_ai.tool.name"]) == (
        "deny",
        "tool_not_allowed",
        "create_issue",
    )
    assert (allowed["decision"], allowed["reason"], allowed["gen_ai.tool.name"]) == ("allow", "allowed", "list_issues")
    assert allowed["rule"] and denied["status"] == 403
    for event in (denied, allowed):
        assert isinstance(event["latency_us"], (int, float)) and event["latency_us"] > 0

    log = mandate.stdout_text() + mandate.stderr_path.read_text(errors="replace")
    assert secret_title not in log
    assert secret_repo not in log

    # Envoy's access log carries the same decision id (CheckResponse.dynamic_metadata).
    entries = envoy.wait_access_log(lambda entry: (entry.get("authz") or {}).get("decision_id") == denied_id)
    assert [(entry["status"], entry["flags"], entry["authz"]["reason"]) for entry in entries] == [
        (403, "UAEX", "tool_not_allowed")
    ]


def test_a2a_decision_is_audited(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, a2a_upstream: Upstream, mandate: MandateProcess
) -> None:
    mark = a2a_upstream.recorder.mark()

    async def scenario() -> str:
        async with a2a_http_client(pki, support_cert, BILLING_HOST) as http:
            return await a2a_send_text(envoy, http, "audit me")

    assert run_async(scenario()) == "echo: audit me"
    [message] = [seen for seen in a2a_upstream.recorder.since(mark) if seen.jsonrpc_method == "SendMessage"]
    event = mandate.wait_audit(message.header_values("x-mandate-decision-id")[0])
    assert event["decision"] == "allow"
    assert (event["caller"], event["profile"], event["target"], event["protocol"]) == (
        SUPPORT_ID,
        "support-agent",
        "billing-agent",
        "a2a",
    )
    assert event["a2a.method"] == "SendMessage"
    assert "audit me" not in mandate.stdout_text()  # message bodies are not logged either


def test_one_audit_line_per_decision(
    mandate: MandateProcess, envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair
) -> None:
    """Every decision Mandate counted so far (this session) has exactly one line, and vice versa."""
    with raw_client(envoy, pki, support_cert, STATUS_HOST) as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/admin").status_code == 403

    def caught_up() -> list[dict] | None:  # the audit thread writes every 2 ms
        events = [event for event in mandate.audit_events() if event.get("event") == "decision"]
        return events if len(events) >= mandate.decision_count() else None

    events = wait_until(caught_up, 5.0, "the audit log to catch up with the decision counters")
    per_id = Counter(event["decision_id"] for event in events)
    assert per_id and max(per_id.values()) == 1
    assert len(events) == mandate.decision_count()
    expected = Counter((event["decision"], event["reason"]) for event in events)
    assert expected == Counter({key: int(value) for key, value in mandate.decisions().items() if value})
