"""MCP through Envoy with the real SDK v2 client, in each connect mode it offers.

auto: `server/discover` probe, then 2026-07-28; "2026-07-28": pinned, no handshake, with
Mcp-Method/Mcp-Name headers; legacy: initialize + session, SSE GET stream, DELETE, and no
routing headers (Mandate must read the body).
"""

from __future__ import annotations

import re

import pytest
from mcp import MCPError
from mcp.types import CallToolResult, GetPromptResult, ReadResourceResult, TextContent, TextResourceContents

from tests.harness.clients import mcp_client, run_async
from tests.harness.envoy import EnvoyProcess
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import GITHUB_HOST
from tests.harness.processes import MandateProcess
from tests.harness.upstreams import Upstream
from tests.harness.upstreams.mcp_server import README_TEXT

MODES = ["auto", "2026-07-28", "legacy"]
ERA_OPENER = {"auto": "server/discover", "2026-07-28": "tools/call", "legacy": "initialize"}  # first POST
DECISION_ID = re.compile(r"^[0-9a-f]{8,64}$")


def tool_calls(upstream: Upstream, mark: int) -> list[str | None]:
    """Names of the tools/call requests that reached the MCP server since `mark`."""
    return [seen.jsonrpc_name for seen in upstream.recorder.since(mark) if seen.jsonrpc_method == "tools/call"]


def assert_mandate_error(error: MCPError, reason: str) -> str:
    """A Mandate deny as the SDK surfaces it; returns the decision id."""
    assert -32099 <= error.code <= -32000, error  # an implementation-defined server error...
    assert error.code != -32001, "collides with the SDK's own request-timeout code"  # ...that is not a timeout
    assert isinstance(error.data, dict), error.data
    assert error.data["reason"] == reason
    assert DECISION_ID.match(error.data["decision_id"]), error.data
    return str(error.data["decision_id"])


@pytest.mark.parametrize("mode", MODES)
def test_allowed_tool_returns_upstream_result(
    mode: str, envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream
) -> None:
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> CallToolResult:
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode=mode) as client:
            return await client.call_tool("list_issues", {"repo": "acme/web"})

    result = run_async(scenario())
    assert not result.is_error
    assert result.structured_content == {"result": [{"repo": "acme/web", "number": 1, "title": "first issue"}]}
    assert tool_calls(mcp_upstream, mark) == ["list_issues"]
    # the mode really spoke what it should (auto would silently fall back to legacy if discover were refused)
    methods = [seen.jsonrpc_method for seen in mcp_upstream.recorder.since(mark) if seen.method == "POST"]
    assert methods[0] == ERA_OPENER[mode] and ("initialize" in methods) == (mode == "legacy"), methods


@pytest.mark.parametrize("mode", MODES)
def test_denied_tool_raises_mcp_error_and_never_reaches_server(
    mode: str,
    envoy: EnvoyProcess,
    pki: MeshPKI,
    support_cert: CertPair,
    mcp_upstream: Upstream,
    mandate: MandateProcess,
) -> None:
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> tuple[MCPError, CallToolResult]:
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode=mode) as client:
            with pytest.raises(MCPError) as denied:
                await client.call_tool("create_issue", {"repo": "acme/web", "title": "please no"})
            after = await client.call_tool("get_me", {})  # the session survives a deny
        return denied.value, after

    error, after = run_async(scenario())
    decision_id = assert_mandate_error(error, "tool_not_allowed")
    assert "create_issue" in error.message
    assert "github" in error.message
    assert "support-agent" in error.message
    assert after.structured_content == {"login": "alice", "id": 1}
    assert tool_calls(mcp_upstream, mark) == ["get_me"]  # create_issue never arrived
    audit = mandate.wait_audit(decision_id)
    assert (audit["decision"], audit["reason"], audit["gen_ai.tool.name"]) == (
        "deny",
        "tool_not_allowed",
        "create_issue",
    )


@pytest.mark.parametrize("mode", MODES)
def test_allowed_resource_and_prompt(
    mode: str, envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream
) -> None:
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> tuple[ReadResourceResult, GetPromptResult]:
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode=mode) as client:
            resource = await client.read_resource("repo://acme/readme")
            prompt = await client.get_prompt("triage", {"issue": "#42"})
        return resource, prompt

    resource, prompt = run_async(scenario())
    assert len(resource.contents) == 1 and len(prompt.messages) == 1
    assert [c.text for c in resource.contents if isinstance(c, TextResourceContents)] == [README_TEXT]
    assert [m.content.text for m in prompt.messages if isinstance(m.content, TextContent)] == [
        "Please triage issue: #42"
    ]
    reached = [(seen.jsonrpc_method, seen.jsonrpc_name) for seen in mcp_upstream.recorder.since(mark)]
    assert ("resources/read", "repo://acme/readme") in reached
    assert ("prompts/get", "triage") in reached


def test_denied_resource_and_prompt(
    envoy: EnvoyProcess, pki: MeshPKI, intern_cert: CertPair, mcp_upstream: Upstream
) -> None:
    """intern-agent's only github rule names a tool: no resources, no prompts."""
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> tuple[MCPError, MCPError]:
        async with mcp_client(envoy, pki, intern_cert, GITHUB_HOST, mode="2026-07-28") as client:
            with pytest.raises(MCPError) as resource:
                await client.read_resource("repo://acme/readme")
            with pytest.raises(MCPError) as prompt:
                await client.get_prompt("triage", {"issue": "#42"})
        return resource.value, prompt.value

    resource, prompt = run_async(scenario())
    assert_mandate_error(resource, "resource_not_allowed")
    assert "repo://acme/readme" in resource.message
    assert_mandate_error(prompt, "prompt_not_allowed")
    assert "triage" in prompt.message
    assert not [
        seen for seen in mcp_upstream.recorder.since(mark) if seen.jsonrpc_method in ("resources/read", "prompts/get")
    ]


def test_other_profile_tool_is_denied(
    envoy: EnvoyProcess, pki: MeshPKI, intern_cert: CertPair, mcp_upstream: Upstream
) -> None:
    """list_issues is in support-agent's mission, not intern-agent's; get_me is in both."""
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> tuple[CallToolResult, MCPError]:
        async with mcp_client(envoy, pki, intern_cert, GITHUB_HOST) as client:
            me = await client.call_tool("get_me", {})
            with pytest.raises(MCPError) as denied:
                await client.call_tool("list_issues", {"repo": "acme/web"})
        return me, denied.value

    me, error = run_async(scenario())
    assert me.structured_content == {"login": "alice", "id": 1}
    assert_mandate_error(error, "tool_not_allowed")
    assert "list_issues" in error.message and "intern-agent" in error.message
    assert "support-agent" not in error.message  # never another profile's contents
    assert tool_calls(mcp_upstream, mark) == ["get_me"]


def test_when_condition_refuses_arguments(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream
) -> None:
    """support-agent may list issues only in acme/* repositories (a CEL `when` on tool arguments)."""
    mark = mcp_upstream.recorder.mark()

    async def scenario() -> MCPError:
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode="legacy") as client:
            with pytest.raises(MCPError) as denied:
                await client.call_tool("list_issues", {"repo": "evil/secrets"})
            return denied.value

    error = run_async(scenario())
    assert_mandate_error(error, "tool_not_allowed")
    assert "list_issues" in error.message and "when" in error.message
    assert tool_calls(mcp_upstream, mark) == []


def test_a_repeated_call_under_a_new_jsonrpc_id_is_answered_from_the_decision_cache(
    envoy: EnvoyProcess, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream, mandate: MandateProcess
) -> None:
    """The SDK numbers its requests: a call repeated in a session is a new body each time. Once
    decided, the allowed call is answered from the cache under every later id; the denied one is
    decided again per id, and each deny carries the id the SDK waits for (else it would time out)."""

    async def scenario() -> tuple[float, float, list[MCPError]]:
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode="2026-07-28") as client:
            await client.call_tool("list_issues", {"repo": "acme/web"})
            decided, cached = mandate.decision_count(), mandate.cache_answers()
            for _ in range(2):
                result = await client.call_tool("list_issues", {"repo": "acme/web"})
                assert not result.is_error
            repeats = (mandate.decision_count() - decided, mandate.cache_answers() - cached)
            errors = []
            for _ in range(2):
                with pytest.raises(MCPError) as denied:
                    await client.call_tool("list_issues", {"repo": "evil/secrets"})
                errors.append(denied.value)
            return (*repeats, errors)

    mark = mcp_upstream.recorder.mark()
    answered, from_cache, errors = run_async(scenario())
    assert answered >= 2 and from_cache == answered  # every answer after the first call came from the cache
    assert tool_calls(mcp_upstream, mark) == ["list_issues"] * 3
    ids = {assert_mandate_error(error, "tool_not_allowed") for error in errors}
    assert len(ids) == 2
