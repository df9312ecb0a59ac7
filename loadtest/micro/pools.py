"""The request pools: parsed requests (`AuthzInput`) the generated profiles send, built before
any timing so that the timed region holds the decision alone.

Requests look like what Envoy forwards (request ids, traceparent, MCP session and routing
headers, bodies with JSON-RPC ids), and are drawn in fixed proportions so that every size
meets the same mix.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import orjson

from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput
from authz.check.response import build_response
from loadtest.micro.policyset import (
    CHAIN_HEADER,
    COMMON_TOOL,
    EGRESS_GATEWAY,
    MCP_SERVERS,
    SERVERS_BY_NAME,
    EgressHost,
    GeneratedProfile,
    GeneratedSet,
    McpServer,
)


class Ids:
    """Request ids, trace ids, session ids and JSON-RPC ids from one seeded generator, so a pool is
    the same on every run and no two of its requests share an id."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.count = 0

    def hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def jsonrpc(self) -> int:
        self.count += 1
        return self.count

    def common_headers(self, method: str, path: str, host: str, user_agent: str) -> dict[str, str]:
        request_id = f"{self.hex(32)}-{self.hex(16)}-4{self.hex(12)}-a{self.hex(12)}-{self.hex(48)}"
        return {
            ":method": method,
            ":path": path,
            ":authority": host,
            ":scheme": "https",
            "user-agent": user_agent,
            "x-request-id": request_id,
            "traceparent": f"00-{self.hex(128)}-{self.hex(64)}-01",
            "x-forwarded-proto": "https",
            "x-envoy-attempt-count": "1",
        }


def _mcp_request(
    ids: Ids, caller: GeneratedProfile, server: McpServer, method: str, params: dict[str, Any] | None, token: str = ""
) -> AuthzInput:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": ids.jsonrpc(), "method": method}
    if params is not None:
        message["params"] = params
    body = orjson.dumps(message)
    headers = ids.common_headers("POST", "/mcp", server.host, "mcp-python-sdk/2.3.0 python-httpx/0.28.1")
    headers.update(
        {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "content-length": str(len(body)),
            "mcp-session-id": ids.hex(128),
        }
    )
    if ids.rng.random() < 0.5:  # the 2026-07-28 revision adds routing headers that must match the body
        headers["mcp-protocol-version"] = "2026-07-28"
        headers["mcp-method"] = method
        if params is not None and "name" in params:
            headers["mcp-name"] = params["name"]
    else:
        headers["mcp-protocol-version"] = "2025-11-25"
    if token:
        headers[CHAIN_HEADER] = token
    return AuthzInput(
        method="POST",
        path="/mcp",
        host=server.host,
        headers=headers,
        body=body,
        source_principal=caller.principal,
        destination_principal=server.principal,
        request_id=headers["x-request-id"],
    )


def tool_call(
    ids: Ids,
    caller: GeneratedProfile,
    server_name: str,
    tool: str,
    arguments: dict[str, Any] | None = None,
    token: str = "",
) -> AuthzInput:
    server = SERVERS_BY_NAME[server_name]
    params = {"name": tool, "arguments": dict(server.arguments if arguments is None else arguments)}
    return _mcp_request(ids, caller, server, "tools/call", params, token)


def a2a_send(ids: Ids, caller: GeneratedProfile, callee: GeneratedProfile) -> AuthzInput:
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": ids.jsonrpc(),
            "method": "SendMessage",
            "params": {
                "message": {
                    "role": "ROLE_USER",
                    "messageId": f"m-{ids.hex(64)}",
                    "parts": [
                        {"text": "Customer cus_8842 asks why invoice INV-20417 was charged twice; please check."}
                    ],
                }
            },
        }
    )
    headers = ids.common_headers("POST", "/", callee.host, "a2a-python-sdk/1.3.0 python-httpx/0.28.1")
    headers.update(
        {
            "content-type": "application/json",
            "accept": "application/json",
            "a2a-version": "1.0",
            "content-length": str(len(body)),
        }
    )
    return AuthzInput(
        method="POST",
        path="/",
        host=callee.host,
        headers=headers,
        body=body,
        source_principal=caller.principal,
        destination_principal=callee.principal,
        request_id=headers["x-request-id"],
    )


def egress_get(ids: Ids, caller: GeneratedProfile, host: EgressHost, path: str) -> AuthzInput:
    full = f"{path}?per_page=50" if ids.rng.random() < 0.5 else path
    headers = ids.common_headers("GET", full, host.host, "python-httpx/0.28.1")
    headers.update({"accept": "application/json", "authorization": f"Bearer {ids.hex(160)}"})
    return AuthzInput(
        method="GET",
        path=full,
        host=host.host,
        headers=headers,
        body=b"",
        source_principal=caller.principal,
        destination_principal=EGRESS_GATEWAY,
        request_id=headers["x-request-id"],
    )


@dataclass
class Edge:
    caller: GeneratedProfile
    callee: GeneratedProfile
    server: str  # a tool the callee may call within the caller's scope for it
    tool: str
    granted: bool


def chain_edges(generated: GeneratedSet) -> list[Edge]:
    """Every agents edge, with a tool call the callee may make while acting for the caller."""
    edges = []
    for caller in generated.profiles:
        for callee_name, rule in caller.agents.items():
            callee = generated.by_name[callee_name]
            if rule.granted:
                server, tool = rule.granted[0]
            else:  # no grant: the caller's own rules bound the callee; both may search
                server, tool = COMMON_TOOL
            edges.append(Edge(caller, callee, server, tool, rule.granted is not None))
    return edges


@dataclass
class Pools:
    mcp_call_allowed: list[AuthzInput]
    mcp_call_denied: list[AuthzInput]
    mcp_tools_list: list[AuthzInput]
    egress_get: list[AuthzInput]
    a2a_send: list[AuthzInput]
    edges: list[Edge]


def first_callers(generated: GeneratedSet, callers: int | None) -> GeneratedSet:
    """The set as request pools see it when only its first `callers` profiles send requests
    (None: every profile). Those profiles' own rules are the same at every size, so the pools
    hold the same kinds of requests from the same agents whatever the policy set's size."""
    return generated if callers is None else dataclasses.replace(generated, profiles=generated.profiles[:callers])


def build_pools(generated: GeneratedSet, pool: int, seed: int = 1) -> Pools:
    """`pool` requests per kind from random callers, in the same proportions at every size:
    60 % of allowed calls meet a `when`; denials are a third each tool / server / false `when`;
    half the A2A edges carry a grant. One generator draws them all, in this order."""
    rng = random.Random(seed * 7_919 + len(generated.profiles))
    ids = Ids(rng)
    profiles = generated.profiles
    allowed = _allowed_calls(ids, profiles, pool)
    denied = _denied_calls(ids, profiles, pool)
    plumbing = []
    for _ in range(pool):
        caller = rng.choice(profiles)
        mcp_server = SERVERS_BY_NAME[rng.choice(list(caller.mcp))]
        plumbing.append(_mcp_request(ids, caller, mcp_server, "tools/list", {} if rng.random() < 0.5 else None))
    egress = []
    for _ in range(pool):
        caller = rng.choice(profiles)
        host, path = rng.choice(caller.egress)
        egress.append(egress_get(ids, caller, host, path))
    every_edge = chain_edges(generated)
    granted = [edge for edge in every_edge if edge.granted]
    plain = [edge for edge in every_edge if not edge.granted]
    edges = []
    if every_edge:
        edges = [rng.choice((granted if index % 2 else plain) or every_edge) for index in range(pool)]
    a2a = [a2a_send(ids, edge.caller, edge.callee) for edge in edges]
    return Pools(allowed, denied, plumbing, egress, a2a, edges)


def _allowed_calls(ids: Ids, profiles: list[GeneratedProfile], pool: int) -> list[AuthzInput]:
    """Tool calls the caller's mission allows, three in five on a rule with a `when`."""
    rng = ids.rng
    with_when = [(p, s) for p in profiles for s in p.mcp if p.when[s]]
    without_when = [(p, s) for p in profiles for s in p.mcp if not p.when[s]]
    allowed = []
    for index in range(pool):
        caller, server = rng.choice(with_when if index % 5 < 3 and with_when else without_when)
        allowed.append(tool_call(ids, caller, server, rng.choice(caller.mcp[server])))
    return allowed


def _denied_calls(ids: Ids, profiles: list[GeneratedProfile], pool: int) -> list[AuthzInput]:
    """Tool calls refused, a third each for the three reasons a call is refused, from enforcing
    profiles only (a dry-run profile's refusal is an allow)."""
    rng = ids.rng
    enforced = [p for p in profiles if not p.dry_run] or profiles
    enforced_when = [(p, s) for p in enforced for s in p.mcp if p.when[s]]
    enforced_partial = [(p, s) for p in enforced for s in p.mcp if len(p.mcp[s]) < len(SERVERS_BY_NAME[s].tools)]
    denied = []
    for index in range(pool):
        kind = index % 3
        if kind == 2 and enforced_when:  # a `when` that is false
            caller, server = rng.choice(enforced_when)
            bad = SERVERS_BY_NAME[server].bad_arguments
            denied.append(tool_call(ids, caller, server, rng.choice(caller.mcp[server]), bad))
        elif kind == 1:  # a server outside the mission (a profile has at most four of six)
            caller = rng.choice(enforced)
            server = rng.choice([s.name for s in MCP_SERVERS if s.name not in caller.mcp])
            denied.append(tool_call(ids, caller, server, SERVERS_BY_NAME[server].tools[0]))
        else:  # a tool the rule does not list
            caller, server = rng.choice(enforced_partial)
            missing = [t for t in SERVERS_BY_NAME[server].tools if t not in caller.mcp[server]]
            denied.append(tool_call(ids, caller, server, rng.choice(missing)))
    return denied


def chained_calls(authorizer: Authorizer, pools: Pools, seed: int = 1) -> list[AuthzInput]:
    """Mint a token for each edge through `authorizer` (an allowed SendMessage), then the
    callee's tool call carrying it."""
    ids = Ids(random.Random(seed * 31 + len(pools.edges)))
    header = authorizer.policy.settings.chain_header
    calls = []
    for edge, send in zip(pools.edges, pools.a2a_send, strict=True):
        decision = authorizer.decide(send)
        if not decision.minted_token:
            raise RuntimeError(f"minting {edge.caller.name} -> {edge.callee.name} failed: {decision.verdict}")
        build_response(decision, header)
        calls.append(tool_call(ids, edge.callee, edge.server, edge.tool, token=decision.minted_token))
    return calls
