"""Delegation chains end to end (SPEC §5): real Envoy (mTLS), `mandate serve --redis
--chain-key`, real redis-server, real MCP server and A2A agents, real SDK clients.

Topology (own Mandate and Envoy; the suite's `mandate`/`envoy` fixtures are not used):

    test client --mTLS--> Envoy --ext_authz--> mandate serve --redis--> redis-server
                            |-- github-mcp.tools...          --> MCP server (get_me, list_issues, create_issue)
                            |-- admin-agent.admin...         --> DelegatingAgent: calls MCP tools through Envoy
                            |                                    with ITS OWN cert, propagating the chain header
                            |-- <agent>.<ns>.svc...          --> one A2A EchoAgent per other agent profile
                            `-- api.github.com (egress)      --> HTTP echo

A hop the test plays (admin-agent, the relays) uses that workload's certificate and the
token its upstream actually received, as the agent's application would.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from mcp import MCPError
from mcp.types import CallToolResult

from authz.chains.tokens import ChainKeys
from tests.harness.chain_policies import (
    ADMIN_HOST,
    AGENT_PROFILES,
    EGRESS_HOST,
    GITHUB_HOST,
    agent_host,
    identity,
    write_chain_policy_set,
)
from tests.harness.clients import a2a_http_client, a2a_send_text, mcp_client, raw_client, run_async
from tests.harness.delegating_agent import DelegatingAgent
from tests.harness.envoy import EnvoyProcess, mesh_envoy_config
from tests.harness.pki import CertPair, MeshPKI, spiffe_id
from tests.harness.processes import MandateProcess, wait_until
from tests.harness.redis import RedisServer
from tests.harness.upstreams import Upstream, a2a_agent, echo, mcp_server, serve_upstream

CHAIN = "x-delegation-chain"
A2A_HEADERS = {"a2a-version": "1.0", "content-type": "application/json"}
MCP_HEADERS = {
    "mcp-protocol-version": "2026-07-28",
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
}
MCP_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
TOKEN_SHAPE = r"^[0-9a-f]{36}\.[A-Za-z0-9_-]{43}$"


# --- the mesh -------------------------------------------------------------------------------


@dataclass
class Mesh:
    """One Mandate + Envoy pair and the upstreams behind it; `cert(profile)` is that workload's SVID."""

    pki: MeshPKI
    mandate: MandateProcess
    envoy: EnvoyProcess
    agents: dict[str, Upstream]  # agent profile -> its A2A upstream
    admin: DelegatingAgent
    github: Upstream
    egress: Upstream

    def cert(self, profile: str) -> CertPair:
        return self.pki.client_cert(*identity(profile))


def _start_envoy(pki: MeshPKI, mandate: MandateProcess, upstreams: dict[str, int], workdir: Path) -> EnvoyProcess:
    return EnvoyProcess(mesh_envoy_config(pki, mandate.grpc_port, upstreams), workdir).start()


@pytest.fixture(scope="module")
def mesh(
    pki: MeshPKI, redis_server: RedisServer, chain_key_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    """The module's own Mandate (session Redis, shared key) and Envoy, with every upstream behind it."""
    policies = write_chain_policy_set(tmp_path_factory.mktemp("chain-policies"))
    mandate = MandateProcess(
        policies, tmp_path_factory.mktemp("chain-mandate"), redis_url=redis_server.url, chain_key=chain_key_file
    )
    started: list[Any] = []
    try:
        github = serve_upstream("github-mcp", mcp_server.build_app())
        egress = serve_upstream("egress-echo", echo.build_app())
        started += [github, egress]
        admin = DelegatingAgent("admin-agent")
        cards: dict[str, a2a_agent.EchoAgent] = {"admin-agent": admin}
        agents = {"admin-agent": serve_upstream("admin-agent", admin.app)}
        started.append(agents["admin-agent"])
        for profile in AGENT_PROFILES:
            if profile not in agents:
                cards[profile] = a2a_agent.EchoAgent(profile)
                agents[profile] = serve_upstream(profile, cards[profile].app)
                started.append(agents[profile])
        mandate.start()
        started.append(mandate)
        routes = {
            GITHUB_HOST: github.port,
            EGRESS_HOST: egress.port,
            **{agent_host(p): agents[p].port for p in agents},
            "*": egress.port,
        }
        envoy = _start_envoy(pki, mandate, routes, tmp_path_factory.mktemp("chain-envoy"))
        started.append(envoy)
        for card in cards.values():
            card.public_url = envoy.url("/")  # SDK clients must come back through Envoy
        admin.outbound.envoy, admin.outbound.pki, admin.outbound.mcp_host = envoy, pki, GITHUB_HOST
        admin.outbound.cert = pki.client_cert(*identity("admin-agent"))
        yield Mesh(pki, mandate, envoy, agents, admin, github, egress)
    finally:
        for thing in started:  # ask every uvicorn to exit first, so they wind down in parallel
            if isinstance(thing, Upstream):
                thing.server.server.should_exit = True
        for thing in reversed(started):
            thing.stop()


@pytest.fixture(scope="module")
def short_ttl(
    mesh: Mesh, redis_server: RedisServer, chain_key_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    """A second replica (same Redis, same key, same upstreams) whose policy sets chainTTL 1s.

    Only raw clients use it: the agents' cards still send SDK clients to the first Envoy."""
    policies = write_chain_policy_set(tmp_path_factory.mktemp("chain-policies-ttl"), chain_ttl="1s")
    mandate = MandateProcess(
        policies, tmp_path_factory.mktemp("chain-mandate-ttl"), redis_url=redis_server.url, chain_key=chain_key_file
    ).start()
    try:
        routes = {
            GITHUB_HOST: mesh.github.port,
            EGRESS_HOST: mesh.egress.port,
            **{agent_host(p): u.port for p, u in mesh.agents.items()},
        }
        envoy = _start_envoy(mesh.pki, mandate, routes, tmp_path_factory.mktemp("chain-envoy-ttl"))
        try:
            yield Mesh(mesh.pki, mandate, envoy, mesh.agents, mesh.admin, mesh.github, mesh.egress)
        finally:
            envoy.stop()
    finally:
        mandate.stop()


# --- helpers --------------------------------------------------------------------------------


def send_message(mesh: Mesh, caller: str, callee: str, token: str | None = None, text: str = "hello") -> httpx.Response:
    """A raw A2A v1.0 JSON-RPC SendMessage from `caller`'s workload to `callee`'s host."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": text}]}},
    }
    headers = {**A2A_HEADERS, **({CHAIN: token} if token is not None else {})}
    with raw_client(mesh.envoy, mesh.pki, mesh.cert(caller), agent_host(callee)) as client:
        return client.post("/", content=json.dumps(body), headers=headers)


def received_tokens(upstream: Upstream, mark: int) -> list[list[str]]:
    """The chain header values of each request that reached `upstream` since `mark`."""
    return [seen.header_values(CHAIN) for seen in upstream.recorder.since(mark)]


def delegate(mesh: Mesh, caller: str, callee: str, token: str | None = None) -> str:
    """`caller` messages `callee` (allowed); the one token `callee`'s upstream received."""
    upstream = mesh.agents[callee]
    mark = upstream.recorder.mark()
    response = send_message(mesh, caller, callee, token)
    assert response.status_code == 200, response.text
    [[minted]] = received_tokens(upstream, mark)
    assert minted != token
    return minted


def call_tool(
    mesh: Mesh, caller: str, tool: str, token: str | list[str] | None = None, **arguments: Any
) -> httpx.Response:
    """A raw MCP tools/call from `caller`'s workload; a list of tokens sends the header repeatedly."""
    params = {"name": tool, "arguments": arguments, "_meta": MCP_META}
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}
    headers: list[tuple[str, str]] = [*MCP_HEADERS.items(), ("mcp-method", "tools/call"), ("mcp-name", tool)]
    for value in [token] if isinstance(token, str) else token or []:
        headers.append((CHAIN, value))
    with raw_client(mesh.envoy, mesh.pki, mesh.cert(caller), GITHUB_HOST) as client:
        return client.post("/mcp", content=json.dumps(body), headers=headers)


def tool_calls(upstream: Upstream, mark: int) -> list[str | None]:
    return [seen.jsonrpc_name for seen in upstream.recorder.since(mark) if seen.jsonrpc_method == "tools/call"]


def assert_denied(response: httpx.Response, reason: str, hop: str | None = None) -> dict[str, Any]:
    """403 with Mandate's decision header and a deny body naming `reason` (JSON-RPC or plain)."""
    assert response.status_code == 403, response.text
    answer = response.json()
    data = answer["error"]["data"] if "jsonrpc" in answer else answer
    assert data["reason"] == reason, answer
    assert data["decision_id"] == response.headers["x-mandate-decision-id"]
    if hop is not None and "jsonrpc" in answer:
        assert data["hop"] == hop, answer
    elif hop is not None:  # the plain JSON body has no `hop` field (SPEC §6); its message names the hop
        assert f"{hop!r}" in answer["error"], answer
    return dict(answer)


def chain_id(token: str) -> str:
    return token.split(".", 1)[0]


def stored_hops(redis_server: RedisServer, token: str) -> list[str]:
    """The profiles of the chain record Mandate wrote to Redis for `token`."""
    raw = redis.Redis.from_url(redis_server.url).get("mandate:chain:" + chain_id(token))
    assert raw is not None, f"no record for {token}"
    return [profile for profile, _principal in json.loads(raw)["hops"]]


def flip(text: str, index: int) -> str:
    """`text` with one base64url character changed (still well-formed)."""
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def mandate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MandateProcess.command(), *args], capture_output=True, text=True, timeout=20, check=False)


# --- 1. minting on the forwarded request ----------------------------------------------------


def test_sdk_message_to_admin_agent_carries_a_fresh_token(mesh: Mesh, redis_server: RedisServer) -> None:
    """frontdesk -> admin-agent with the real a2a-sdk: both the card GET and SendMessage reach
    admin-agent with exactly one chain header, a token whose record is [frontdesk, admin-agent]."""
    upstream = mesh.agents["admin-agent"]
    mark = upstream.recorder.mark()

    async def scenario() -> str:
        async with a2a_http_client(mesh.pki, mesh.cert("frontdesk"), ADMIN_HOST) as http:
            return await a2a_send_text(mesh.envoy, http, "status?")

    assert run_async(scenario()) == "echo: status?"
    seen = upstream.recorder.since(mark)
    assert [(s.method, s.jsonrpc_method) for s in seen] == [("GET", None), ("POST", "SendMessage")]
    for request in seen:
        [token] = request.header_values(CHAIN)
        assert re.match(TOKEN_SHAPE, token), token
        assert request.header_values("x-caller-identity") == [spiffe_id(*identity("frontdesk"))]
        assert stored_hops(redis_server, token) == ["frontdesk", "admin-agent"]


def test_client_supplied_chain_header_is_overwritten(mesh: Mesh, redis_server: RedisServer) -> None:
    """relay-b holds a genuine token for [relay-a, relay-b] and sends it along with the SDK to
    relay-c: relay-c receives one header, the child token [relay-a, relay-b, relay-c], not
    what relay-b sent."""
    held = delegate(mesh, "relay-a", "relay-b")
    upstream = mesh.agents["relay-c"]
    mark = upstream.recorder.mark()

    async def scenario() -> str:
        headers = {"Host": agent_host("relay-c"), CHAIN: held}
        async with httpx.AsyncClient(
            verify=mesh.pki.ssl_context(mesh.cert("relay-b")), headers=headers, timeout=10.0
        ) as http:
            return await a2a_send_text(mesh.envoy, http, "pass it on")

    assert run_async(scenario()) == "echo: pass it on"
    values = received_tokens(upstream, mark)
    assert len(values) == 2 and all(len(v) == 1 for v in values), values  # card GET + SendMessage
    child = values[-1][0]
    assert child != held
    assert stored_hops(redis_server, child) == ["relay-a", "relay-b", "relay-c"]


# --- 2. the callee acting under a chain, with the real MCP SDK ------------------------------


def _admin_mcp(
    mesh: Mesh, token: str | None, tools: list[tuple[str, dict[str, Any]]], mode: str = "2026-07-28"
) -> list[CallToolResult | MCPError]:
    """admin-agent's own MCP session (its cert), presenting `token`; each call's result or MCPError."""
    headers = {CHAIN: token} if token else {}

    async def scenario() -> list[CallToolResult | MCPError]:
        outcomes: list[CallToolResult | MCPError] = []
        async with mcp_client(
            mesh.envoy, mesh.pki, mesh.cert("admin-agent"), GITHUB_HOST, mode=mode, headers=headers
        ) as client:
            for name, arguments in tools:
                try:
                    outcomes.append(await client.call_tool(name, arguments))
                except MCPError as error:
                    outcomes.append(error)
        return outcomes

    return run_async(scenario())


def _refused(outcome: CallToolResult | MCPError, reason: str, hop: str) -> MCPError:
    assert isinstance(outcome, MCPError), outcome
    assert isinstance(outcome.data, dict) and outcome.data["reason"] == reason and outcome.data["hop"] == hop, (
        outcome.data
    )
    return outcome


ISSUE = {"repo": "acme/web", "title": "rotate keys"}


def test_admin_acting_for_frontdesk_is_held_to_frontdesk_rules(mesh: Mesh) -> None:
    token = delegate(mesh, "frontdesk", "admin-agent")
    mark = mesh.github.recorder.mark()
    create, listed = _admin_mcp(
        mesh, token, [("create_issue", ISSUE), ("list_issues", {"repo": "acme/web"})], mode="auto"
    )
    error = _refused(create, "tool_not_allowed", "frontdesk")
    assert "create_issue" in error.message and "frontdesk" in error.message
    assert isinstance(listed, CallToolResult) and not listed.is_error
    assert tool_calls(mesh.github, mark) == ["list_issues"]  # create_issue never reached the server


def test_admin_acting_for_orchestrator_has_exactly_the_grant(mesh: Mesh) -> None:
    token = delegate(mesh, "orchestrator", "admin-agent")
    mark = mesh.github.recorder.mark()
    create, me = _admin_mcp(mesh, token, [("create_issue", ISSUE), ("get_me", {})])
    assert isinstance(create, CallToolResult) and create.structured_content == {**ISSUE, "number": 2, "created": True}
    _refused(me, "tool_not_allowed", "orchestrator")  # admin may get_me itself; the grant does not
    assert tool_calls(mesh.github, mark) == ["create_issue"]


def test_admin_without_token_acts_on_its_own_rights(mesh: Mesh) -> None:
    mark = mesh.github.recorder.mark()
    [create] = _admin_mcp(mesh, None, [("create_issue", ISSUE)])
    assert (
        isinstance(create, CallToolResult)
        and create.structured_content is not None
        and create.structured_content["created"]
    )
    assert tool_calls(mesh.github, mark) == ["create_issue"]


def test_calling_another_agent_is_narrowed_too(mesh: Mesh, redis_server: RedisServer) -> None:
    """admin-agent may call relay-a itself, but neither frontdesk's rules nor orchestrator's
    grant include that call, so acting for either it may not delegate onward."""
    relay = mesh.agents["relay-a"]
    mark = relay.recorder.mark()
    for delegator in ("frontdesk", "orchestrator"):
        token = delegate(mesh, delegator, "admin-agent")
        answer = assert_denied(send_message(mesh, "admin-agent", "relay-a", token), "agent_not_allowed", hop=delegator)
        assert "relay-a" in answer["error"]["message"]
    assert relay.recorder.since(mark) == []
    assert stored_hops(redis_server, delegate(mesh, "admin-agent", "relay-a")) == ["admin-agent", "relay-a"]


# --- 3. real delegation: the agent propagates the header itself -----------------------------


def _ask_admin(mesh: Mesh, caller: str, text: str) -> str:
    async def scenario() -> str:
        async with a2a_http_client(mesh.pki, mesh.cert(caller), ADMIN_HOST) as http:
            return await a2a_send_text(mesh.envoy, http, text)

    return run_async(scenario())


def test_real_delegation_narrows_to_the_delegators_scope(mesh: Mesh) -> None:
    """The destructive call frontdesk talks admin-agent into is refused at admin-agent's own
    MCP call; the same request delegated by orchestrator (which grants it) goes through."""
    outbound = mesh.admin.outbound
    mark, sent = mesh.github.recorder.mark(), len(outbound.propagated)
    assert (
        _ask_admin(mesh, "frontdesk", "call create_issue " + json.dumps(ISSUE))
        == "denied: tool_not_allowed hop=frontdesk"
    )
    assert tool_calls(mesh.github, mark) == []
    assert _ask_admin(mesh, "frontdesk", 'call list_issues {"repo": "acme/web"}').startswith("result: ")
    granted = _ask_admin(mesh, "orchestrator", "call create_issue " + json.dumps(ISSUE))
    assert json.loads(granted.removeprefix("result: ")) == {**ISSUE, "number": 2, "created": True}
    assert _ask_admin(mesh, "orchestrator", "call get_me {}") == "denied: tool_not_allowed hop=orchestrator"
    assert tool_calls(mesh.github, mark) == ["list_issues", "create_issue"]
    propagated = outbound.propagated[sent:]
    assert len(propagated) == 4 and all(propagated), "admin-agent must have received (and passed on) a token every time"
    assert propagated[0] != propagated[2]  # one chain per delegator


# --- 4. adversarial tokens ------------------------------------------------------------------


@pytest.fixture(scope="module")
def frontdesk_token(mesh: Mesh) -> str:
    return delegate(mesh, "frontdesk", "admin-agent")


def _mangled(token: str, how: str) -> str | list[str]:
    ident, mac = token.split(".")
    variants: dict[str, str | list[str]] = {
        "mac-flipped": f"{ident}.{flip(mac, 20)}",
        "id-flipped": f"{flip(ident, 5)}.{mac}",
        "garbage": "hello",
        "duplicate": [token, token],
        "bare-id": ident,
        "bearer-prefix": f"Bearer {token}",
        "empty": "",
    }
    return variants[how]


@pytest.mark.parametrize(
    "how", ["mac-flipped", "id-flipped", "garbage", "duplicate", "bare-id", "bearer-prefix", "empty"]
)
def test_forged_token_is_refused(how: str, mesh: Mesh, frontdesk_token: str) -> None:
    """Any token whose MAC does not verify (including the same token sent twice, which Envoy
    joins into one value) is chain_forged, on an MCP call and on an A2A call that would mint."""
    token = _mangled(frontdesk_token, how)
    mark = mesh.github.recorder.mark()
    assert_denied(call_tool(mesh, "admin-agent", "list_issues", token, repo="acme/web"), "chain_forged")
    assert mesh.github.recorder.since(mark) == []
    if isinstance(token, str):
        relay = mesh.agents["relay-a"]
        mark = relay.recorder.mark()
        assert_denied(send_message(mesh, "admin-agent", "relay-a", token), "chain_forged")
        assert relay.recorder.since(mark) == []


def test_token_presented_by_another_agent_is_not_held(mesh: Mesh, frontdesk_token: str) -> None:
    """outsider replays the token handed to admin-agent: refused, though outsider may get_me."""
    mark = mesh.github.recorder.mark()
    assert_denied(call_tool(mesh, "outsider", "get_me", frontdesk_token), "chain_not_held")
    # nor may the delegator use the token its call caused to be minted
    assert_denied(call_tool(mesh, "frontdesk", "get_me", frontdesk_token), "chain_not_held")
    assert mesh.github.recorder.since(mark) == []
    assert call_tool(mesh, "outsider", "get_me").status_code == 200  # on its own behalf it may


def test_well_signed_unknown_token_is_refused(mesh: Mesh, chain_key_file: Path) -> None:
    """A valid MAC over an id that was never minted: chain_unknown (the key alone mints nothing)."""
    keys = ChainKeys.from_file(chain_key_file)
    forged = keys.sign(keys.new_id())
    mark = mesh.github.recorder.mark()
    assert_denied(call_tool(mesh, "admin-agent", "get_me", forged), "chain_unknown")
    assert mesh.github.recorder.since(mark) == []


def test_token_from_another_replica_is_honoured_and_expires(mesh: Mesh, short_ttl: Mesh) -> None:
    """Replicas share Redis and the key: a token minted behind one Envoy is verified behind
    another. The short-TTL replica's own tokens stop working once chainTTL (1s) passes."""
    assert (
        call_tool(
            short_ttl, "admin-agent", "list_issues", delegate(mesh, "frontdesk", "admin-agent"), repo="acme/web"
        ).status_code
        == 200
    )
    token = delegate(short_ttl, "frontdesk", "admin-agent")
    assert call_tool(short_ttl, "admin-agent", "list_issues", token, repo="acme/web").status_code == 200
    wait_until(
        lambda: call_tool(short_ttl, "admin-agent", "list_issues", token, repo="acme/web").status_code == 403,
        4.0,
        "chain expiry",
    )
    mark = mesh.github.recorder.mark()
    assert_denied(call_tool(short_ttl, "admin-agent", "list_issues", token, repo="acme/web"), "chain_unknown")
    assert_denied(
        call_tool(mesh, "admin-agent", "list_issues", token, repo="acme/web"), "chain_unknown"
    )  # expired everywhere
    assert mesh.github.recorder.since(mark) == []


def test_revocation_denies_chain_and_descendants_within_a_second(
    mesh: Mesh, short_ttl: Mesh, redis_server: RedisServer
) -> None:
    """`mandate chain revoke` on [relay-d, relay-c]: it and its child [relay-d, relay-c, relay-b]
    are refused on both replicas within 1 s of the command returning (it publishes before it
    exits); a new delegation on the same edge gets a new chain, not the revoked one again."""
    parent = delegate(mesh, "relay-d", "relay-c")
    child = delegate(mesh, "relay-c", "relay-b", parent)
    assert call_tool(mesh, "relay-b", "get_me", child).status_code == 200
    assert call_tool(short_ttl, "relay-b", "get_me", child).status_code == 200  # the other replica has it cached

    before = [replica.mandate.chain_outcomes().get("revoked", 0) for replica in (mesh, short_ttl)]
    revoked = mandate_cli("chain", "revoke", parent, "--redis", redis_server.url)
    started = time.monotonic()
    assert revoked.returncode == 0, revoked.stderr
    for replica in (mesh, short_ttl):

        def refused(replica: Mesh = replica) -> bool:
            return call_tool(replica, "relay-b", "get_me", child).status_code == 403

        wait_until(refused, 1.0 - (time.monotonic() - started), "revocation on every replica within 1 s")
    mark = mesh.github.recorder.mark()
    for replica in (mesh, short_ttl):
        assert_denied(call_tool(replica, "relay-b", "get_me", child), "chain_revoked")
        assert_denied(call_tool(replica, "relay-c", "get_me", parent), "chain_revoked")
    assert mesh.github.recorder.since(mark) == []
    relay = mesh.agents["relay-a"]
    mark = relay.recorder.mark()
    assert_denied(send_message(mesh, "relay-b", "relay-a", child), "chain_revoked")  # no delegating onward either
    assert relay.recorder.since(mark) == []
    assert mesh.mandate.chain_outcomes()["revoked"] - before[0] >= 3
    assert short_ttl.mandate.chain_outcomes()["revoked"] - before[1] >= 2
    fresh = delegate(mesh, "relay-d", "relay-c")
    assert chain_id(fresh) != chain_id(parent)
    assert call_tool(mesh, "relay-c", "get_me", fresh).status_code == 200
    shown = mandate_cli("chain", "show", parent, "--redis", redis_server.url)
    assert "revoked: yes" in shown.stdout, shown.stdout + shown.stderr


# --- 5. shape of a chain: depth, re-entry, acceptFrom, requireChain -------------------------


def test_chain_at_max_depth_is_allowed_one_deeper_is_refused(mesh: Mesh, redis_server: RedisServer) -> None:
    """relay-d caps its chains at 3 hops: [b, c, d] is minted, [a, b, c, d] is refused at the
    call that would create it, and relay-d never sees that call."""
    three = delegate(mesh, "relay-c", "relay-d", delegate(mesh, "relay-b", "relay-c"))
    assert stored_hops(redis_server, three) == ["relay-b", "relay-c", "relay-d"]
    at_c = delegate(mesh, "relay-b", "relay-c", delegate(mesh, "relay-a", "relay-b"))
    relay = mesh.agents["relay-d"]
    mark = relay.recorder.mark()
    answer = assert_denied(send_message(mesh, "relay-c", "relay-d", at_c), "chain_too_deep")
    assert "relay-d" in answer["error"]["message"]
    assert relay.recorder.since(mark) == []


def test_global_max_depth(mesh: Mesh) -> None:
    """Settings maxDepth 5: [reentrant, a, b, c, reentrant] is the longest; one more hop is refused."""
    token = None
    for caller, callee in [
        ("reentrant", "relay-a"),
        ("relay-a", "relay-b"),
        ("relay-b", "relay-c"),
        ("relay-c", "reentrant"),
    ]:
        token = delegate(mesh, caller, callee, token)
    relay = mesh.agents["reentrant"]
    mark = relay.recorder.mark()
    answer = assert_denied(send_message(mesh, "reentrant", "reentrant", token), "chain_too_deep")
    assert "global maxDepth" in answer["error"]["message"]
    assert relay.recorder.since(mark) == []


def test_reentry_needs_allow_reentry(mesh: Mesh, redis_server: RedisServer) -> None:
    relay = mesh.agents["relay-a"]
    mark = relay.recorder.mark()
    assert_denied(send_message(mesh, "relay-b", "relay-a", delegate(mesh, "relay-a", "relay-b")), "chain_reentry")
    assert relay.recorder.since(mark) == []
    back = delegate(mesh, "relay-b", "reentrant", delegate(mesh, "reentrant", "relay-b"))
    assert stored_hops(redis_server, back) == ["reentrant", "relay-b", "reentrant"]


def test_accept_from_and_require_chain(mesh: Mesh) -> None:
    """vault-agent serves only orchestrator (acceptFrom) and only when delegated (requireChain);
    while delegated it has orchestrator's grant (get_me), not its own list_issues."""
    vault = mesh.agents["vault-agent"]
    mark = vault.recorder.mark()
    assert_denied(
        send_message(mesh, "frontdesk", "vault-agent", text="open up"), "caller_not_accepted", hop="vault-agent"
    )
    assert vault.recorder.since(mark) == []
    token = delegate(mesh, "orchestrator", "vault-agent")

    mark = mesh.github.recorder.mark()
    assert_denied(call_tool(mesh, "vault-agent", "get_me"), "chain_required")
    assert_denied(
        call_tool(mesh, "vault-agent", "list_issues", token, repo="acme/web"), "tool_not_allowed", hop="orchestrator"
    )
    assert tool_calls(mesh.github, mark) == []
    assert call_tool(mesh, "vault-agent", "get_me", token).status_code == 200
    assert tool_calls(mesh.github, mark) == ["get_me"]


# --- 6. audit, access log, metrics ----------------------------------------------------------


def test_audit_access_log_and_metrics_name_the_chain(mesh: Mesh, chain_key_file: Path) -> None:
    before = mesh.mandate.chain_outcomes()
    upstream = mesh.agents["admin-agent"]
    mark = upstream.recorder.mark()
    assert send_message(mesh, "outsider", "admin-agent", text="audit me").status_code == 200
    [seen] = upstream.recorder.since(mark)
    [token], [minting_id] = seen.header_values(CHAIN), seen.header_values("x-mandate-decision-id")
    minted_audit = mesh.mandate.wait_audit(minting_id)
    assert (minted_audit["minted_chain_id"], minted_audit["chain_depth"], minted_audit["hops"]) == (
        chain_id(token),
        1,
        ["outsider"],
    )
    assert minted_audit["chain_id"] is None and minted_audit["chain_events"] == ["minted"]

    denied = call_tool(mesh, "admin-agent", "create_issue", token, **ISSUE)
    assert_denied(denied, "tool_not_allowed", hop="outsider")
    audit = mesh.mandate.wait_audit(denied.headers["x-mandate-decision-id"])
    assert (audit["chain_id"], audit["chain_depth"], audit["hops"], audit["hop"]) == (
        chain_id(token),
        2,
        ["outsider", "admin-agent"],
        "outsider",
    )
    assert "verified" in audit["chain_events"]
    entries = mesh.envoy.wait_access_log(
        lambda e: (e.get("authz") or {}).get("decision_id") == denied.headers["x-mandate-decision-id"]
    )
    assert entries and entries[0]["authz"]["chain_id"] == chain_id(token) and entries[0]["status"] == 403
    minted_entries = mesh.envoy.wait_access_log(
        lambda e: (e.get("authz") or {}).get("minted_chain_id") == chain_id(token)
    )
    assert minted_entries and minted_entries[0]["status"] == 200

    keys = ChainKeys.from_file(chain_key_file)
    assert_denied(call_tool(mesh, "admin-agent", "get_me", "garbage"), "chain_forged")
    assert_denied(call_tool(mesh, "admin-agent", "get_me", keys.sign(keys.new_id())), "chain_unknown")
    assert_denied(call_tool(mesh, "frontdesk", "get_me", token), "chain_not_held")
    after = mesh.mandate.chain_outcomes()
    delta = {outcome: after.get(outcome, 0) - before.get(outcome, 0) for outcome in after}
    assert delta.get("minted", 0) + delta.get("reused", 0) >= 1
    assert delta.get("verified", 0) >= 1
    assert (delta.get("forged"), delta.get("unknown"), delta.get("not_held")) == (1, 1, 1), delta


# --- 7. egress strips the chain -------------------------------------------------------------


def test_egress_call_leaves_the_mesh_without_the_chain_header(mesh: Mesh) -> None:
    token = delegate(mesh, "orchestrator", "admin-agent")
    mark = mesh.egress.recorder.mark()
    with raw_client(mesh.envoy, mesh.pki, mesh.cert("admin-agent"), EGRESS_HOST) as client:
        allowed = client.get("/zen", headers={CHAIN: token})
        assert allowed.status_code == 200, allowed.text
        assert_denied(client.get("/repos/acme/web", headers={CHAIN: token}), "egress_not_allowed", hop="orchestrator")
    [seen] = mesh.egress.recorder.since(mark)
    assert seen.path == "/zen"
    assert seen.header_values(CHAIN) == []
    assert seen.header_values("x-caller-identity") == [spiffe_id(*identity("admin-agent"))]
