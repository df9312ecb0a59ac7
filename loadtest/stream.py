"""A stream of distinct CheckRequests: the traffic SPEC §8 measures Mandate on.

Agents do not resend one request: every MCP `tools/call` carries its own JSON-RPC id and
arguments, every A2A message its own id and text. A single request resent is answered from
Mandate's decision cache from the second time on; this stream is not. It is drawn from a seeded
generator (the same seed gives the same bytes) to a mix of what the example policies
(`policies/`) see:

- several callers (support-agent, billing-agent, orchestrator, triage bots, strangers) and
  servers (github, billing-db, two agents, api.github.com, a status page);
- MCP `tools/call` whose arguments a CEL `when` reads (repositories drawn from a skewed pool, so
  values repeat partially as a real agent's do; issue numbers, states and pages that vary),
  under JSON-RPC ids that count up per session, both MCP revisions (with and without the
  routing headers);
- MCP session plumbing (initialize, notifications/initialized, tools/list, ping) under new
  session ids; A2A `SendMessage` / v0.3 `message/send` with new message ids and text, `GetTask`,
  the agent card; egress GETs and an HTTP target;
- about a quarter denied: tools outside the mission, arguments failing the `when`, unknown and
  untrusted callers, agents and A2A methods no rule names, egress outside the rules, a chain
  token presented by an agent it was not handed to;
- chained calls carrying `x-delegation-chain` tokens that the server under test minted
  (`mint_tokens`: one per delegation edge, sent before the file is written); without tokens
  (a server that mints none) the chained scenarios are left out.

Every request carries the verdict Mandate must give it. On disk: `NAME.grpc`, the gRPC-framed
messages back to back (a 0 byte, the length as 4 bytes big-endian, the CheckRequest), which
loadtest/h2grpc cycles through, and `NAME.json`, the scenarios and which one each request is.

    python -m loadtest.stream --out /tmp/stream [--count 40000] [--seed 17] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.check.request import AuthzInput
from loadtest.requests import (
    BILLING,
    BILLING_AGENT,
    BILLING_DB_MCP,
    GITHUB_MCP,
    MCP_VERSION,
    ORCHESTRATOR,
    SUPPORT,
    SUPPORT_AGENT,
    Send,
    a2a_post,
    chain_token_of,
    grpc_frame,
    http_request,
    mcp_post,
    serialize,
    verdict_of,
)

DEFAULT_COUNT = 40_000
DEFAULT_SEED = 17
FORMAT = 1
OLD_MCP_VERSION = "2025-11-25"
TRIAGE = "spiffe://cluster.local/ns/triage/sa/bot-{}"
STRANGER = "spiffe://cluster.local/ns/elsewhere/sa/stranger-{}"
UNTRUSTED = "spiffe://partner.example/ns/agents/sa/agent-{}"
STATUS_PAGE = "status-page.ops.svc.cluster.local"
# Repositories the `when` allows (acme/...), drawn with Zipf-like weights, and those it refuses.
ACME_REPOS = tuple(
    f"acme/{name}"
    for name in [
        "web",
        "api",
        "infra",
        "docs",
        "mobile",
        "billing",
        "auth",
        "search",
        "payments",
        "gateway",
        "ui",
        "cli",
        "sdk-python",
        "sdk-go",
        "terraform",
        "helm-charts",
        "design-system",
        "analytics",
        "notifications",
        "data-pipeline",
    ]
)
FOREIGN_REPOS = ("evil/exfil", "acme-corp/web", "github/docs", "someone/acme", "ACME/web")
# (caller, server) pairs whose MCP sessions the plumbing belongs to
SESSIONS = ((SUPPORT, GITHUB_MCP), (SUPPORT, GITHUB_MCP), (BILLING, BILLING_DB_MCP), (TRIAGE.format(0), GITHUB_MCP))
ISSUE_TEXT = (
    "Customer {c} says invoice INV-{n} was charged twice; can you check?",
    "Refund invoice INV-{n} for customer {c}?",
    "Ticket #{n}: {c} cannot log in since the last release.",
    "What is the status of order {n} for {c}?",
)


@dataclass(frozen=True)
class Tokens:
    """`x-delegation-chain` tokens the server under test handed out, one per delegation edge."""

    support_to_billing: str  # billing-agent acting for support-agent
    orchestrator_to_support: str  # support-agent acting for the orchestrator
    orchestrator_to_billing: str  # billing-agent acting for the orchestrator


class Draw:
    """The seeded generator behind one stream: values, ids and MCP sessions."""

    def __init__(self, seed: int, tokens: Tokens | None) -> None:
        self.rng = random.Random(seed)
        self.tokens = tokens
        self.sessions: dict[tuple[str, str], list[list[Any]]] = {}  # (caller, host) -> [[session id, next id]]
        self.serial = itertools.count(1)

    def hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def request_id(self) -> str:
        return f"{self.hex(32)}-{self.hex(16)}-4{self.hex(12)}-a{self.hex(12)}-{self.hex(48)}"

    def skewed(self, values: Sequence[Any]) -> Any:
        """A value with Zipf-like odds (the first most often), so values repeat, but not all."""
        return values[min(int(self.rng.paretovariate(1.1)) - 1, len(values) - 1)]

    def session(self, caller: str, host: str) -> tuple[str, int]:
        """One of a few live sessions of `caller` on `host` and its next JSON-RPC id; now and then
        a session ends and a new one (new id, ids from 1) takes its place."""
        live = self.sessions.setdefault((caller, host), [])
        if len(live) < 4 or self.rng.random() < 0.02:
            if len(live) >= 4:
                live.pop(self.rng.randrange(len(live)))
            live.append([self.hex(128), 1])
        chosen = self.rng.choice(live)
        chosen[1] += 1
        return chosen[0], chosen[1]

    def mcp(
        self, caller: str, host: str, method: str, params: dict[str, Any] | None, chain: str | None = None
    ) -> AuthzInput:
        """An MCP POST within one of the caller's sessions; a notification carries no id,
        `initialize` no session yet."""
        session, next_id = self.session(caller, host)
        version = MCP_VERSION if self.rng.random() < 0.5 else OLD_MCP_VERSION
        return mcp_post(
            caller,
            host,
            method,
            params,
            chain=chain,
            id_=None if method.startswith("notifications/") else next_id,
            session=None if method == "initialize" else session,
            version=version,
            request_id=self.request_id(),
        )

    def tool(
        self, caller: str, host: str, name: str, arguments: dict[str, Any], chain: str | None = None
    ) -> AuthzInput:
        return self.mcp(caller, host, "tools/call", {"name": name, "arguments": arguments}, chain)

    def message(self, caller: str, host: str, chain: str | None = None) -> AuthzInput:
        """An A2A message with a new id and text, as v1.0 `SendMessage` or v0.3 `message/send`."""
        text = self.rng.choice(ISSUE_TEXT).format(
            c=f"cus_{self.rng.randrange(10_000):04d}", n=self.rng.randrange(99_999)
        )
        if self.rng.random() < 0.7:
            message = {"role": "ROLE_USER", "messageId": self.hex(128), "parts": [{"text": text}]}
            method = "SendMessage"
        else:
            message = {
                "role": "user",
                "messageId": self.hex(128),
                "kind": "message",
                "parts": [{"kind": "text", "text": text}],
            }
            method = "message/send"
        return a2a_post(caller, host, method, {"message": message}, next(self.serial), self.request_id(), chain)

    def a2a(self, caller: str, host: str, method: str, params: dict[str, Any]) -> AuthzInput:
        return a2a_post(caller, host, method, params, next(self.serial), self.request_id())

    def get(self, caller: str, host: str, path: str, method: str = "GET") -> AuthzInput:
        return http_request(
            caller, host, path, method, self.request_id(), traceparent=f"00-{self.hex(128)}-{self.hex(64)}-01"
        )

    def token(self, name: str) -> str:
        assert self.tokens is not None  # scenarios that need a token are left out without tokens
        return str(getattr(self.tokens, name))

    # argument values a `when` or a rule reads

    def repo(self) -> str:
        return str(self.skewed(ACME_REPOS))

    def issue(self) -> int:
        return int(self.skewed(range(1, 5_000))) if self.rng.random() < 0.6 else self.rng.randrange(1, 5_000)

    def list_arguments(self, repo: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {"repo": repo, "state": self.rng.choice(("open", "open", "closed", "all"))}
        if self.rng.random() < 0.3:
            arguments["page"] = self.rng.randrange(1, 20)
        if self.rng.random() < 0.2:
            arguments["labels"] = self.rng.sample(["bug", "billing", "p1", "customer", "ui"], 2)
        return arguments


@dataclass(frozen=True)
class Scenario:
    """One kind of request in the stream: how often, how it is built, what Mandate must answer."""

    name: str
    kind: str  # mcp | mcp-plumbing | a2a | chained | egress | http | identity
    weight: int
    build: Callable[[Draw], AuthzInput]
    expect_allow: bool
    expect_reason: str
    needs_token: bool = False


s, deny = Scenario, False
# The mix (weights out of 100): about three quarters allowed (dry-run counts as allowed), a quarter denied.
SCENARIOS = (
    # MCP tool calls whose arguments the `when` reads
    s(
        "mcp support list_issues",
        "mcp",
        14,
        lambda d: d.tool(SUPPORT, GITHUB_MCP, "list_issues", d.list_arguments(d.repo())),
        True,
        "allowed",
    ),
    s(
        "mcp support get_issue",
        "mcp",
        7,
        lambda d: d.tool(SUPPORT, GITHUB_MCP, "get_issue", {"repo": d.repo(), "number": d.issue()}),
        True,
        "allowed",
    ),
    s("mcp support get_me", "mcp", 2, lambda d: d.tool(SUPPORT, GITHUB_MCP, "get_me", {}), True, "allowed"),
    s(
        "mcp support list_issues foreign repo (when)",
        "mcp",
        7,
        lambda d: d.tool(SUPPORT, GITHUB_MCP, "list_issues", d.list_arguments(d.rng.choice(FOREIGN_REPOS))),
        deny,
        "tool_not_allowed",
    ),
    s(
        "mcp support tool outside the mission",
        "mcp",
        6,
        lambda d: d.tool(
            SUPPORT,
            GITHUB_MCP,
            d.rng.choice(("create_issue", "merge_pull_request", "delete_repository")),
            {"repo": d.repo(), "title": f"issue {d.issue()}"},
        ),
        deny,
        "tool_not_allowed",
    ),
    s(
        "mcp billing lookup_invoice",
        "mcp",
        5,
        lambda d: d.tool(BILLING, BILLING_DB_MCP, "lookup_invoice", {"invoice": d.issue()}),
        True,
        "allowed",
    ),
    s(
        "mcp billing refund",
        "mcp",
        2,
        lambda d: d.tool(
            BILLING, BILLING_DB_MCP, "refund", {"invoice": d.issue(), "amount_cents": d.rng.randrange(100, 50_000)}
        ),
        True,
        "allowed",
    ),
    s(
        "mcp triage list_issues",
        "mcp",
        2,
        lambda d: d.tool(TRIAGE.format(d.rng.randrange(5)), GITHUB_MCP, "list_issues", d.list_arguments(d.repo())),
        True,
        "allowed",
    ),
    s(
        "mcp triage add_label",
        "mcp",
        1,
        lambda d: d.tool(
            TRIAGE.format(d.rng.randrange(5)),
            GITHUB_MCP,
            "add_label",
            {"repo": d.repo(), "number": d.issue(), "label": "triaged"},
        ),
        True,
        "allowed",
    ),
    s(
        "mcp triage create_issue (dry-run)",
        "mcp",
        1,
        lambda d: d.tool(
            TRIAGE.format(d.rng.randrange(5)), GITHUB_MCP, "create_issue", {"repo": d.repo(), "title": "dup"}
        ),
        True,
        "tool_not_allowed",
    ),
    # MCP session plumbing
    s(
        "mcp initialize",
        "mcp-plumbing",
        3,
        lambda d: d.mcp(
            *d.rng.choice(SESSIONS),
            "initialize",
            {"protocolVersion": MCP_VERSION, "capabilities": {}, "clientInfo": {"name": "agent", "version": "1.4"}},
        ),
        True,
        "allowed",
    ),
    s(
        "mcp notifications/initialized",
        "mcp-plumbing",
        3,
        lambda d: d.mcp(*d.rng.choice(SESSIONS), "notifications/initialized", None),
        True,
        "allowed",
    ),
    s(
        "mcp tools/list",
        "mcp-plumbing",
        6,
        lambda d: d.mcp(*d.rng.choice(SESSIONS), "tools/list", {}),
        True,
        "allowed",
    ),
    s("mcp ping", "mcp-plumbing", 2, lambda d: d.mcp(*d.rng.choice(SESSIONS), "ping", None), True, "allowed"),
    s(
        "mcp support tools/list on billing-db",
        "mcp-plumbing",
        1,
        lambda d: d.mcp(SUPPORT, BILLING_DB_MCP, "tools/list", {}),
        deny,
        "server_not_allowed",
    ),
    # A2A
    s(
        "a2a support->billing message (mints)",
        "a2a",
        6,
        lambda d: d.message(SUPPORT, BILLING_AGENT),
        True,
        "allowed",
    ),
    s(
        "a2a support->billing GetTask",
        "a2a",
        2,
        lambda d: d.a2a(SUPPORT, BILLING_AGENT, "GetTask", {"id": f"task-{d.issue()}"}),
        True,
        "allowed",
    ),
    s(
        "a2a orchestrator->support message (mints)",
        "a2a",
        2,
        lambda d: d.message(ORCHESTRATOR, SUPPORT_AGENT),
        True,
        "allowed",
    ),
    s(
        "a2a orchestrator->billing message (mints)",
        "a2a",
        1,
        lambda d: d.message(ORCHESTRATOR, BILLING_AGENT),
        True,
        "allowed",
    ),
    s(
        "a2a support agent card",
        "a2a",
        1,
        lambda d: d.get(SUPPORT, BILLING_AGENT, "/.well-known/agent-card.json"),
        True,
        "allowed",
    ),
    s(
        "a2a billing->support message",
        "a2a",
        1,
        lambda d: d.message(BILLING, SUPPORT_AGENT),
        deny,
        "agent_not_allowed",
    ),
    s(
        "a2a support->billing CancelTask",
        "a2a",
        1,
        lambda d: d.a2a(SUPPORT, BILLING_AGENT, "CancelTask", {"id": f"task-{d.issue()}"}),
        deny,
        "a2a_method_not_allowed",
    ),
    # chained calls, with tokens the server under test minted
    s(
        "chained billing lookup_invoice for support",
        "chained",
        5,
        lambda d: d.tool(
            BILLING, BILLING_DB_MCP, "lookup_invoice", {"invoice": d.issue()}, d.token("support_to_billing")
        ),
        True,
        "allowed",
        True,
    ),
    s(
        "chained billing refund for support (hop scope)",
        "chained",
        2,
        lambda d: d.tool(BILLING, BILLING_DB_MCP, "refund", {"invoice": d.issue()}, d.token("support_to_billing")),
        deny,
        "tool_not_allowed",
        True,
    ),
    s(
        "chained support list_issues for orchestrator",
        "chained",
        2,
        lambda d: d.tool(
            SUPPORT, GITHUB_MCP, "list_issues", d.list_arguments(d.repo()), d.token("orchestrator_to_support")
        ),
        True,
        "allowed",
        True,
    ),
    s(
        "chained support message to billing for orchestrator (mints)",
        "chained",
        1,
        lambda d: d.message(SUPPORT, BILLING_AGENT, d.token("orchestrator_to_support")),
        True,
        "allowed",
        True,
    ),
    s(
        "chained billing refund for orchestrator",
        "chained",
        1,
        lambda d: d.tool(BILLING, BILLING_DB_MCP, "refund", {"invoice": d.issue()}, d.token("orchestrator_to_billing")),
        True,
        "allowed",
        True,
    ),
    s(
        "chained token presented by another agent",
        "chained",
        1,
        lambda d: d.tool(SUPPORT, GITHUB_MCP, "get_me", {}, d.token("support_to_billing")),
        deny,
        "chain_not_held",
        True,
    ),
    # egress and HTTP
    s(
        "egress support GET",
        "egress",
        4,
        lambda d: d.get(
            SUPPORT,
            "api.github.com",
            d.rng.choice(
                (
                    "/zen",
                    f"/repos/{d.repo()}/issues?state=open&page={d.rng.randrange(1, 9)}",
                    f"/repos/{d.repo()}/pulls/{d.issue()}",
                )
            ),
        ),
        True,
        "allowed",
    ),
    s(
        "egress support outside the rules",
        "egress",
        2,
        lambda d: (
            d.get(SUPPORT, "api.github.com", f"/repos/{d.repo()}", d.rng.choice(("DELETE", "PATCH")))
            if d.rng.random() < 0.5
            else d.get(SUPPORT, "api.github.com", f"/orgs/acme/members?page={d.issue()}")
        ),
        deny,
        "egress_not_allowed",
    ),
    s(
        "http support GET status page",
        "http",
        1,
        lambda d: d.get(SUPPORT, STATUS_PAGE, f"/api/components/{d.issue()}"),
        True,
        "allowed",
    ),
    s(
        "http support POST status page",
        "http",
        1,
        lambda d: d.get(SUPPORT, STATUS_PAGE, "/api/incidents", "POST"),
        deny,
        "http_not_allowed",
    ),
    # identity
    s(
        "unknown caller",
        "identity",
        3,
        lambda d: d.tool(STRANGER.format(d.rng.randrange(50)), GITHUB_MCP, "list_issues", d.list_arguments(d.repo())),
        deny,
        "unknown_caller",
    ),
    s(
        "untrusted trust domain",
        "identity",
        1,
        lambda d: d.tool(UNTRUSTED.format(d.rng.randrange(5)), GITHUB_MCP, "list_issues", {"repo": d.repo()}),
        deny,
        "untrusted_trust_domain",
    ),
)


@dataclass(frozen=True)
class Stream:
    """The requests (serialized CheckRequests, in order) and, for each, its scenario's index."""

    payloads: list[bytes]
    index: list[int]
    scenarios: tuple[Scenario, ...]
    seed: int

    def expected(self, position: int) -> tuple[bool, str]:
        scenario = self.scenarios[self.index[position]]
        return scenario.expect_allow, scenario.expect_reason

    def shares(self) -> dict[str, float]:
        """The fraction of requests of each kind, and denied."""
        counts = Counter(self.scenarios[i].kind for i in self.index)
        denied = sum(not self.scenarios[i].expect_allow for i in self.index)
        total = len(self.index) or 1
        return {**{kind: n / total for kind, n in sorted(counts.items())}, "denied": denied / total}


def generate(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED, tokens: Tokens | None = None) -> Stream:
    """`count` requests drawn from the mix; without `tokens`, the chained scenarios are left out."""
    draw = Draw(seed, tokens)
    scenarios = tuple(s for s in SCENARIOS if tokens is not None or not s.needs_token)
    cumulative = list(itertools.accumulate(s.weight for s in scenarios))
    index, payloads = [], []
    for _ in range(count):
        chosen = bisect.bisect_right(cumulative, draw.rng.random() * cumulative[-1])
        index.append(chosen)
        payloads.append(serialize(scenarios[chosen].build(draw)))
    return Stream(payloads, index, scenarios, seed)


def write(stream: Stream, base: Path) -> Path:
    """`base`.grpc (the frames) and `base`.json (the expectations); returns the frames' path."""
    frames = base.with_suffix(".grpc")
    frames.write_bytes(b"".join(grpc_frame(payload) for payload in stream.payloads))
    meta = {
        "format": FORMAT,
        "seed": stream.seed,
        "count": len(stream.payloads),
        "bytes": frames.stat().st_size,
        "shares": stream.shares(),
        "scenarios": [
            {"name": s.name, "kind": s.kind, "weight": s.weight, "allow": s.expect_allow, "reason": s.expect_reason}
            for s in stream.scenarios
        ],
        "index": stream.index,
    }
    base.with_suffix(".json").write_text(json.dumps(meta, separators=(",", ":")) + "\n", encoding="utf-8")
    return frames


def read_frames(path: Path) -> list[bytes]:
    """The messages of a file of gRPC frames (refuses a compressed or cut frame)."""
    data, payloads, offset = path.read_bytes(), [], 0
    while offset < len(data):
        if data[offset] != 0 or offset + 5 > len(data):
            raise ValueError(f"{path}: no uncompressed gRPC frame at byte {offset}")
        length = int.from_bytes(data[offset + 1 : offset + 5], "big")
        if offset + 5 + length > len(data):
            raise ValueError(f"{path}: the frame at byte {offset} is cut short")
        payloads.append(data[offset + 5 : offset + 5 + length])
        offset += 5 + length
    return payloads


def check(send: Send, stream: Stream, every: int = 1) -> list[str]:
    """Send every `every`-th request; one line per request whose verdict is not the expected one."""
    problems = []
    for position in range(0, len(stream.payloads), every):
        allowed, reason = verdict_of(send(stream.payloads[position]))
        expect_allow, expect_reason = stream.expected(position)
        if allowed != expect_allow or reason != expect_reason:
            name = stream.scenarios[stream.index[position]].name
            problems.append(
                f"#{position} {name}: expected {'allow' if expect_allow else 'deny'} ({expect_reason}), "
                f"got {'allow' if allowed else 'deny'} ({reason or 'no reason'})"
            )
    return problems


def mint_tokens(send: Send) -> Tokens:
    """One token per delegation edge, from the server behind `send` (the A2A messages that mint
    them); raises if it hands none out (the floor mints nothing: give it no tokens)."""
    draw = Draw(0, None)
    edges = {
        "support_to_billing": draw.message(SUPPORT, BILLING_AGENT),
        "orchestrator_to_support": draw.message(ORCHESTRATOR, SUPPORT_AGENT),
        "orchestrator_to_billing": draw.message(ORCHESTRATOR, BILLING_AGENT),
    }
    found = {name: chain_token_of(send(serialize(request))) for name, request in edges.items()}
    missing = [name for name, token in found.items() if not token]
    if missing:
        raise RuntimeError(f"the server handed out no x-delegation-chain token for {', '.join(missing)}")
    return Tokens(**{name: str(token) for name, token in found.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.stream", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.grpc and OUT.json")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--address", help="mint the chain tokens at this Mandate (else: no chained calls)")
    args = parser.parse_args(argv)
    tokens = None
    if args.address:
        from loadtest.requests import grpc_sender

        send, close = grpc_sender(args.address)
        try:
            tokens = mint_tokens(send)
        finally:
            close()
    stream = generate(args.count, args.seed, tokens)
    frames = write(stream, args.out)
    shares = ", ".join(f"{kind} {share * 100:.0f} %" for kind, share in stream.shares().items())
    print(f"{frames}: {len(stream.payloads):,} requests, {frames.stat().st_size:,} bytes; {shares}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
