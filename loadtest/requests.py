"""Realistic serialized CheckRequests for the load tests, built from the example policies.

A weighted mix of what a mesh of agents sends Envoy's ext_authz, and so Mandate:

- MCP tool calls to the GitHub server, allowed and denied (a tool outside the mission, a
  repository outside the `when`), and MCP session plumbing (initialize, tools/list, ...);
- A2A calls that mint delegation chains (support-agent -> billing-agent SendMessage,
  orchestrator -> support-agent);
- chained MCP calls: billing-agent calling billing-db with the `x-delegation-chain` token
  the *running server* handed out for the A2A call (so the token is real: its MAC verifies
  and its record is in that server's store), one allowed by support-agent's grant
  (lookup_invoice), one refused by it (refund);
- egress GETs to api.github.com, allowed and denied, and an unknown caller.

`representative()` is the single request the 1-in-flight comparison sends (the README's
`examples/list-issues.yaml`: an allowed MCP tool call whose rule has a CEL `when`).

Every sample carries the verdict Mandate must give it (`expect_allow`, `expect_reason`);
`verify()` sends each one to a running server and reports any difference, and
`decide_in_process()` does the same against an in-process Authorizer (no server).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from authz.check.request import AuthzInput, to_check_request
from authz.explain import read_request_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
POLICIES = ROOT / "policies"
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
CHAIN_HEADER = "x-delegation-chain"
# Sent where a chained sample needs a token but the server hands none out (the floor):
# well-formed, so the request is the same size; Mandate would refuse it as chain_forged.
PLACEHOLDER_TOKEN = "0" * 36 + "." + "0" * 43

SUPPORT = "spiffe://cluster.local/ns/support/sa/support-agent"
BILLING = "spiffe://cluster.local/ns/billing/sa/billing-agent"
ORCHESTRATOR = "spiffe://cluster.local/ns/agents/sa/orchestrator"
STRANGER = "spiffe://cluster.local/ns/elsewhere/sa/stranger"
GITHUB_MCP = "github-mcp.tools.svc.cluster.local"
BILLING_DB_MCP = "billing-db-mcp.billing.svc.cluster.local"
BILLING_AGENT = "billing-agent.billing.svc.cluster.local"
SUPPORT_AGENT = "support-agent.support.svc.cluster.local"
MCP_VERSION = "2026-07-28"


@dataclass(frozen=True)
class Sample:
    """One request of the mix: its name (the locust stats name), weight, serialized
    CheckRequest and the verdict Mandate must give it."""

    name: str
    kind: str  # mcp | mcp-plumbing | a2a | chained | egress | identity
    weight: int
    payload: bytes
    expect_allow: bool
    expect_reason: str  # "allowed" or the deny reason

    @property
    def frame(self) -> bytes:
        """The gRPC length-prefixed message (uncompressed), as sent on the wire."""
        return grpc_frame(self.payload)


def grpc_frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def serialize(request: AuthzInput) -> bytes:
    return to_check_request(request).SerializeToString()


def _post(
    source: str, host: str, body: dict[str, Any], path: str = "/mcp", request_id: str = "0" * 32, **headers: str
) -> AuthzInput:
    raw = orjson.dumps(body)
    all_headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "content-length": str(len(raw)),
        "user-agent": "loadtest",
        "x-request-id": request_id,
    }
    all_headers.update({key.replace("_", "-"): value for key, value in headers.items()})
    return AuthzInput(method="POST", path=path, host=host, headers=all_headers, body=raw, source_principal=source)


def mcp_post(
    source: str,
    host: str,
    method: str,
    params: dict[str, Any] | None,
    chain: str | None = None,
    id_: int | str | None = 1,
    session: str | None = "5f1c0e0b6a3d4a52",
    version: str = MCP_VERSION,
    request_id: str = "0" * 32,
) -> AuthzInput:
    """An MCP Streamable HTTP POST. Under the 2026-07-28 revision it carries the routing headers
    (`Mcp-Method`, `Mcp-Name`) that must agree with the body; under earlier ones it does not."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        body["id"] = id_
    if params is not None:
        body["params"] = params
    headers = {"mcp-protocol-version": version}
    if version == MCP_VERSION:
        headers["mcp-method"] = method
        if method == "tools/call" and params:
            headers["mcp-name"] = params["name"]
    if session is not None:
        headers["mcp-session-id"] = session
    if chain:
        headers[CHAIN_HEADER] = chain
    return _post(source, host, body, request_id=request_id, **headers)


def _tool(source: str, host: str, tool: str, arguments: dict[str, Any], chain: str | None = None) -> AuthzInput:
    return mcp_post(source, host, "tools/call", {"name": tool, "arguments": arguments}, chain)


def a2a_post(
    source: str,
    host: str,
    method: str,
    params: dict[str, Any],
    id_: int | str = 3,
    request_id: str = "0" * 32,
    chain: str | None = None,
) -> AuthzInput:
    """An A2A JSON-RPC call (v1.0 or v0.3 method names) to the agent's endpoint, `/`."""
    headers = {"a2a_version": "1.0" if method[:1].isupper() else "0.3"}
    if chain:
        headers[CHAIN_HEADER] = chain
    body = {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}
    return _post(source, host, body, path="/", request_id=request_id, **headers)


def http_request(
    source: str, host: str, path: str, method: str = "GET", request_id: str = "0" * 32, **headers: str
) -> AuthzInput:
    """A plain HTTP request without a body (egress, http targets, an agent card)."""
    all_headers = {"accept": "application/vnd.github+json", "user-agent": "loadtest", "x-request-id": request_id}
    all_headers.update({key.replace("_", "-"): value for key, value in headers.items()})
    return AuthzInput(method=method, path=path, host=host, headers=all_headers, source_principal=source)


def send_message_to_billing() -> AuthzInput:
    """support-agent asks billing-agent over A2A: allowed, and mints [support-agent, billing-agent]."""
    message = {"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": "Refund invoice 7?"}]}
    return a2a_post(SUPPORT, BILLING_AGENT, "SendMessage", {"message": message})


def representative() -> Sample:
    """The 1-in-flight request: examples/list-issues.yaml, an allowed MCP tools/call with a CEL `when`."""
    request = read_request_file(str(EXAMPLES / "list-issues.yaml")).input
    return Sample("mcp list_issues (representative)", "mcp", 1, serialize(request), True, "allowed")


# name, kind, weight, builder(token) -> request, expect_allow, expect_reason
_MIX: list[tuple[str, str, int, Callable[[str], AuthzInput], bool, str]] = [
    (
        "mcp list_issues",
        "mcp",
        20,
        lambda t: _tool(SUPPORT, GITHUB_MCP, "list_issues", {"repo": "acme/web", "state": "open"}),
        True,
        "allowed",
    ),
    (
        "mcp get_issue",
        "mcp",
        8,
        lambda t: _tool(SUPPORT, GITHUB_MCP, "get_issue", {"repo": "acme/api", "number": 42}),
        True,
        "allowed",
    ),
    (
        "mcp create_issue (deny)",
        "mcp",
        8,
        lambda t: _tool(SUPPORT, GITHUB_MCP, "create_issue", {"repo": "acme/web", "title": "hi"}),
        False,
        "tool_not_allowed",
    ),
    (
        "mcp list_issues foreign repo (deny, when)",
        "mcp",
        4,
        lambda t: _tool(SUPPORT, GITHUB_MCP, "list_issues", {"repo": "evil/x"}),
        False,
        "tool_not_allowed",
    ),
    (
        "mcp initialize",
        "mcp-plumbing",
        4,
        lambda t: mcp_post(
            SUPPORT,
            GITHUB_MCP,
            "initialize",
            {
                "protocolVersion": MCP_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "support-agent", "version": "1.0"},
            },
        ),
        True,
        "allowed",
    ),
    ("mcp tools/list", "mcp-plumbing", 6, lambda t: mcp_post(SUPPORT, GITHUB_MCP, "tools/list", {}), True, "allowed"),
    (
        "mcp notifications/initialized",
        "mcp-plumbing",
        3,
        lambda t: mcp_post(SUPPORT, GITHUB_MCP, "notifications/initialized", None, id_=None),
        True,
        "allowed",
    ),
    ("a2a SendMessage support->billing (mints)", "a2a", 10, lambda t: send_message_to_billing(), True, "allowed"),
    (
        "a2a GetTask support->billing",
        "a2a",
        4,
        lambda t: a2a_post(SUPPORT, BILLING_AGENT, "GetTask", {"id": "task-7"}),
        True,
        "allowed",
    ),
    (
        "a2a SendMessage orchestrator->support (mints)",
        "a2a",
        3,
        lambda t: a2a_post(
            ORCHESTRATOR,
            SUPPORT_AGENT,
            "SendMessage",
            {"message": {"role": "ROLE_USER", "messageId": "m-2", "parts": [{"text": "Answer ticket 12"}]}},
        ),
        True,
        "allowed",
    ),
    (
        "chained lookup_invoice",
        "chained",
        12,
        lambda t: _tool(BILLING, BILLING_DB_MCP, "lookup_invoice", {"invoice": 7}, chain=t),
        True,
        "allowed",
    ),
    (
        "chained refund (deny, hop scope)",
        "chained",
        4,
        lambda t: _tool(BILLING, BILLING_DB_MCP, "refund", {"invoice": 7}, chain=t),
        False,
        "tool_not_allowed",
    ),
    (
        "mcp refund, billing on its own",
        "mcp",
        2,
        lambda t: _tool(BILLING, BILLING_DB_MCP, "refund", {"invoice": 8}),
        True,
        "allowed",
    ),
    ("egress GET /zen", "egress", 5, lambda t: http_request(SUPPORT, "api.github.com", "/zen"), True, "allowed"),
    (
        "egress GET /repos/acme/web/issues",
        "egress",
        3,
        lambda t: http_request(SUPPORT, "api.github.com", "/repos/acme/web/issues?state=open"),
        True,
        "allowed",
    ),
    (
        "egress DELETE /repos/acme/web (deny)",
        "egress",
        2,
        lambda t: http_request(SUPPORT, "api.github.com", "/repos/acme/web", "DELETE"),
        False,
        "egress_not_allowed",
    ),
    (
        "unknown caller (deny)",
        "identity",
        2,
        lambda t: _tool(STRANGER, GITHUB_MCP, "list_issues", {"repo": "acme/web"}),
        False,
        "unknown_caller",
    ),
]


def build_mix(chain_token: str | None) -> list[Sample]:
    """The weighted mix; chained samples carry `chain_token` (or a placeholder for the floor)."""
    token = chain_token or PLACEHOLDER_TOKEN
    return [
        Sample(name, kind, weight, serialize(build(token)), allow, reason)
        for name, kind, weight, build, allow, reason in _MIX
    ]


def schedule(samples: Sequence[Sample], length: int = 1000, seed: int = 1) -> list[Sample]:
    """A shuffled sequence with each sample in proportion to its weight, to cycle through
    (cheaper per call than a weighted random draw, and the same mix every run)."""
    total = sum(sample.weight for sample in samples)
    sequence = [sample for sample in samples for _ in range(round(length * sample.weight / total))]
    random.Random(seed).shuffle(sequence)
    return sequence


# --- talking to a server ------------------------------------------------------------------


def verdict_of(response: bytes) -> tuple[bool, str]:
    """(allowed, reason) from a serialized CheckResponse; the reason is Mandate's dynamic
    metadata `reason` ("" from a server that sets none, such as the floor)."""
    from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

    message = CheckResponse.FromString(response)
    reason = (
        message.dynamic_metadata.fields["reason"].string_value if "reason" in message.dynamic_metadata.fields else ""
    )
    return message.HasField("ok_response") or (
        message.status.code == 0 and not message.HasField("denied_response")
    ), reason


def chain_token_of(response: bytes) -> str | None:
    """The `x-delegation-chain` token an allowed CheckResponse sets on the forwarded request."""
    from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

    message = CheckResponse.FromString(response)
    for option in message.ok_response.headers:
        if option.header.key.lower() == CHAIN_HEADER:
            return option.header.value
    return None


Send = Callable[[bytes], bytes]


def grpc_sender(address: str, timeout: float = 5.0) -> tuple[Send, Callable[[], None]]:
    """A plain grpcio client: (send(payload) -> response bytes, close). Raises grpc.RpcError
    on anything but gRPC status OK."""
    import grpc

    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(CHECK_METHOD, request_serializer=None, response_deserializer=None)

    def send(payload: bytes) -> bytes:
        response, state = call.with_call(payload, timeout=timeout)
        if state.code() != grpc.StatusCode.OK:  # with_call raises for any other code; belt and braces
            raise RuntimeError(f"gRPC status {state.code().name}")
        return response

    return send, channel.close


def mint_chain_token(send: Send) -> str | None:
    """Send support-agent's A2A SendMessage to billing-agent and read the token the server
    hands billing-agent; None from a server that mints none (the floor)."""
    return chain_token_of(send(serialize(send_message_to_billing())))


def mix_for(address: str) -> list[Sample]:
    """The mix with a real chain token obtained from the server at `address`."""
    send, close = grpc_sender(address)
    try:
        return build_mix(mint_chain_token(send))
    finally:
        close()


def check_verdicts(send: Send, samples: Sequence[Sample]) -> list[str]:
    """Send every sample once; one line per sample whose verdict differs from the expected one."""
    problems = []
    for sample in samples:
        allowed, reason = verdict_of(send(sample.payload))
        if allowed != sample.expect_allow or (reason and reason != sample.expect_reason):
            expected = "allow" if sample.expect_allow else f"deny ({sample.expect_reason})"
            problems.append(
                f"{sample.name}: expected {expected}, got {'allow' if allowed else 'deny'} ({reason or 'no reason'})"
            )
    return problems


def verify(address: str, samples: Sequence[Sample] | None = None) -> list[str]:
    """Send the representative request and every sample of the mix (with a real token from
    this server) to Mandate at `address`; [] when every verdict is the expected one."""
    send, close = grpc_sender(address)
    try:
        if samples is not None:
            return check_verdicts(send, samples)
        return _check_whole_mix(send)
    finally:
        close()


def _check_whole_mix(send: Send) -> list[str]:
    token = mint_chain_token(send)
    missing = [] if token else ["a2a SendMessage support->billing: no x-delegation-chain token handed out"]
    return missing + check_verdicts(send, [representative(), *build_mix(token)])


def decide_in_process(policies: Path = POLICIES) -> list[str]:
    """The same check against an in-process Authorizer on `policies` (no server, no gRPC)."""
    from authz.check.pipeline import Authorizer
    from authz.policy.compiler import compile_directory

    authorizer = Authorizer(compile_directory(str(policies)))

    return _check_whole_mix(authorizer.check_bytes)


if __name__ == "__main__":  # python -m loadtest.requests [ADDRESS]: print each sample's verdict
    import sys

    if len(sys.argv) > 1:
        problems = verify(sys.argv[1])
    else:
        problems = decide_in_process()
    for line in problems:
        print(line)
    print(f"{len(problems)} unexpected verdict(s) over {len(_MIX) + 1} samples")
    raise SystemExit(1 if problems else 0)
