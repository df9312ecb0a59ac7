"""Cache ≡ fresh: the decision cache gives every byte string the answer deciding it afresh gives.

Three Authorizers share one policy set, chain step, store and clock; two keep answers (one
large cache, one of four entries, so eviction is exercised), one decides every request. Long
generated streams go to all three: every protocol and reason, JSON-RPC ids of every JSON type,
repeated calls under new ids, chains minted and presented, revocation, expiry (the clock
moves), policy reloads, the store unreachable and back or reconnected, users (SPEC §10: valid,
expiring, forged and foreign tokens, API keys, claims Envoy verified, chains minted for a user
and presented with another's token), and CheckRequests mutated below protobuf (unknown,
repeated and malformed fields, bad UTF-8, truncation). Any difference in status, reason,
headers, body or metadata fails.

The size is set by MANDATE_EQUIVALENCE_EXAMPLES (CI: the default; BENCHMARKS.md: ten times it).
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.chains.tokens import ChainKeys
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, to_check_request
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from tests.harness.chain_doubles import Clock, SwitchableStore
from tests.harness.protowire import field, inject, varint
from tests.harness.users import ISSUER, Idp, jwt_authn_metadata, unsigned

EXAMPLES = int(os.environ.get("MANDATE_EQUIVALENCE_EXAMPLES", "600"))
CHAIN = "x-delegation-chain"
TOOLS, WEB = "tools.local", "api.example.com"
CALLERS = ("alice", "bob", "carol", "dave", "team-x", "evil", "", "bad-newline", "other-domain")

PROFILES = """
apiVersion: mandate.dev/v1alpha1
kind: Settings
metadata: {name: default}
spec:
  users:
    issuers: [{issuer: "%(issuer)s", audiences: [mandate], jwksFile: "%(jwks)s"}]
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: tools}
spec: {kind: mcp, hosts: [tools.local], pathPrefix: /mcp}
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: web}
spec: {kind: egress, hosts: [api.example.com]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: alice}
spec:
  mission: reads and writes acme's repositories
  principals: [spiffe://cluster.local/ns/alice/sa/alice]
  hosts: [alice.agents.local]
  mode: %(alice_mode)s
  mcp:
    - {server: tools, tools: [read], resources: ["repo://acme/*"], prompts: [triage]}
    - server: tools
      tools: [write]
      when: 'mcp.tool.arguments.repo.startsWith("acme/") && request.headers["x-tenant"] == "a"'
    - {server: tools, tools: [admin], users: {groups: [ops]}, when: 'user.claims.level > 2'}
    - {server: tools, tools: [delete], users: {subjects: [ann]}}
  agents: %(alice_agents)s
  egress: [{host: api.example.com, paths: ["/zen"], methods: [GET]}]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: bob}
spec:
  mission: bob in the equivalence test
  principals: [spiffe://cluster.local/ns/bob/sa/bob]
  hosts: [bob.agents.local]
  mode: dry-run
  mcp: [{server: tools, tools: [read, delete]}]
  agents: [{agent: carol}]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: carol}
spec:
  mission: carol in the equivalence test
  principals: [spiffe://cluster.local/ns/carol/sa/carol]
  hosts: [carol.agents.local]
  mcp: [{server: tools, tools: [read, write, delete, admin]}]
  delegation: {maxDepth: 3}
  agents: [{agent: dave, grant: {users: {groups: [ops]}, mcp: [{server: tools, tools: [read]}]}}]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: dave}
spec:
  mission: dave in the equivalence test
  principals: [spiffe://cluster.local/ns/dave/sa/dave]
  hosts: [dave.agents.local]
  mcp: [{server: tools, tools: [read], users: {groups: [ops, dev]}}]
  agents: [{agent: alice, methods: [SendMessage]}]
  delegation: {requireChain: %(dave_requires)s}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: team}
spec:
  mission: team in the equivalence test
  principals: [spiffe://cluster.local/ns/team/sa/*]
  mcp: [{server: tools, tools: [read]}]
  agents: [{agent: carol, methods: [GetTask]}]
"""
VARIANTS = (
    {
        "alice_mode": "enforce",
        "alice_agents": "[{agent: bob}, {agent: carol, grant: {mcp: [{server: tools, tools: [read, delete]}]}}]",
        "dave_requires": "false",
    },
    {"alice_mode": "dry-run", "alice_agents": "[{agent: carol}]", "dave_requires": "true"},
)


def principal(name: str) -> str:
    special = {
        "team-x": "spiffe://cluster.local/ns/team/sa/x",
        "evil": "spiffe://cluster.local/ns/evil/sa/evil",
        "": "",
        "bad-newline": "spiffe://cluster.local/ns/alice/sa/alice\n",
        "other-domain": "spiffe://other.td/ns/alice/sa/alice",
    }
    return special.get(name, f"spiffe://cluster.local/ns/{name}/sa/{name}")


class Variants(list[PolicySet]):
    def __repr__(self) -> str:
        return f"<{len(self)} policy variants>"


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Variants:
    compiled = Variants()
    jwks = IDP.write_jwks(tmp_path_factory.mktemp("jwks") / "jwks.json")
    for index, variant in enumerate(VARIANTS):
        directory = tmp_path_factory.mktemp(f"variant-{index}")
        (directory / "policy.yaml").write_text(PROFILES % {**variant, "issuer": ISSUER, "jwks": jwks})
        compiled.append(compile_directory(directory))
    return compiled


# Users: tokens made once (exp a little ahead, so the stream's ticks pass it), by the configured
# issuer and by a stranger, forged, and claims Envoy verified.
IDP = Idp()


def _user_values() -> tuple[list[str], list[bytes]]:
    now = int(IDP.now)
    ann = IDP.token("ann", ["ops"], level=3, exp=now + 40)
    good = [
        ann,
        IDP.token("ben", ["dev"], level=1, exp=now + 40, key=IDP.keys[1]),
        IDP.token("cat", ["ops"], level=5, exp=now + 1000),
        IDP.token("ann", ["ops"], level=1, exp=now + 1000),
    ]
    bad = [
        ann[:-4] + ("AAAA" if not ann.endswith("AAAA") else "BBBB"),  # a forged signature
        IDP.token("ann", ["ops"], aud="elsewhere"),
        Idp("https://stranger", [IDP.keys[0]]).token("ann", ["ops"]),  # an issuer not configured: no user
        unsigned({"iss": ISSUER, "sub": "ann", "aud": "mandate", "exp": now + 100, "groups": ["ops"]}),
    ]
    odd = ["sk-api-key", f"Bearer {good[0]},Bearer x.y.z"]
    headers = [f"Bearer {token}" for token in good * 4 + bad] + odd  # mostly users, so rules about them decide
    claims = {"iss": ISSUER, "aud": "mandate", "groups": ["ops"], "level": 4}
    metadata = [
        jwt_authn_metadata({**claims, "sub": "ann", "exp": now + 40}),
        jwt_authn_metadata({**claims, "sub": "dan"}, "payload"),
        jwt_authn_metadata({**claims, "sub": "eve", "aud": "elsewhere"}),
    ]
    return headers, metadata


AUTHORIZATIONS, VERIFIED_CLAIMS = _user_values()


# --- what a stream is made of --------------------------------------------------------------

# JSON-RPC ids as their JSON text: every JSON type, numbers past 64 bits and past a double, escapes, a lone surrogate.
IDS = st.sampled_from(
    [
        b"1",
        b"2",
        b"7",
        b"-3",
        b"9007199254740993",
        b"1180591620717411303424",
        b"1.5",
        b"0.0",
        b"1e400",
        b'"a"',
        b'"call-7"',
        b'"\\u00e9"',
        b'"\\ud800"',
        b"null",
        b"true",
        b"[]",
        b"{}",
        b"",
    ]
)
ARGUMENTS = st.sampled_from([{}, {"repo": "acme/x"}, {"repo": "evil/x"}, {"repo": 5}, {"id": 7}])


@st.composite
def mcp_body(draw: Any) -> bytes:
    kind = draw(
        st.sampled_from(["call", "call", "read", "init", "note", "list", "batch", "empty-batch", "garbage", "dup"])
    )
    request_id = draw(IDS)
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": "tools/call"}
    if kind == "call":
        message["params"] = {
            "name": draw(st.sampled_from(["read", "write", "delete", "admin", "admin"])),
            "arguments": draw(ARGUMENTS),
        }
    elif kind == "read":
        message.update(
            method="resources/read", params={"uri": draw(st.sampled_from(["repo://acme/a", "repo://other/b"]))}
        )
    elif kind in ("init", "list", "note"):
        message.update(
            method={"init": "initialize", "list": "tools/list", "note": "notifications/initialized"}[kind], params={}
        )
    elif kind == "garbage":
        return draw(st.sampled_from([b"{", b"[1,", b'"x"', b"", b"\xff\xfe"]))
    if kind != "note" and request_id:
        message["id"] = "<id>"
    text = orjson.dumps(message).replace(b'"<id>"', request_id)
    if kind == "dup":
        return text[:-1] + b',"method":"tools/call"}'
    if kind == "batch":
        return b"[" + text + b"," + text + b"]"
    return b"[]" if kind == "empty-batch" else text


@st.composite
def request(draw: Any, tokens: list[str]) -> AuthzInput:
    caller = draw(st.sampled_from(CALLERS))
    where = draw(st.sampled_from(["mcp", "mcp", "mcp", "agent", "egress"]))
    headers: dict[str, str] = {}
    if where == "mcp":
        body, method, path, host = (
            draw(mcp_body()),
            "POST",
            draw(st.sampled_from(["/mcp", "/mcp/", "/other", "/mcp/%2e%2e/x"])),
            TOOLS,
        )
        headers["mcp-method"] = draw(st.sampled_from(["", "tools/call", "tools/list", "=?base64?é?="]))
        headers["x-tenant"] = draw(st.sampled_from(["", "a", "b"]))
    elif where == "agent":
        method_name = draw(st.sampled_from(["SendMessage", "GetTask", "CancelTask", "message/send", "Nope"]))
        body = orjson.dumps(
            {"jsonrpc": "2.0", "id": draw(st.sampled_from([1, "x"])), "method": method_name, "params": {}}
        )
        method, path = "POST", draw(st.sampled_from(["/", "/", "/tasks/t:1:cancel"]))
        host = f"{draw(st.sampled_from(['alice', 'bob', 'carol', 'dave']))}.agents.local"
    else:
        body, method, host = b"", draw(st.sampled_from(["GET", "POST"])), WEB
        path = draw(st.sampled_from(["/zen", "/zen?x=1", "/other", "/%7Azen"]))
    length = draw(st.sampled_from(["exact", "exact", "cut", "²", "none"]))
    if length != "none":
        headers["content-length"] = {"exact": str(len(body)), "cut": str(len(body) + 5), "²": "²"}[length]
    token = draw(st.sampled_from(["none", "none", "held", "forged", "junk"]))
    if token == "held" and tokens:
        headers[CHAIN] = tokens[draw(st.integers(0, len(tokens) - 1))]
    elif token in ("forged", "junk"):
        headers[CHAIN] = "0" * 36 + "." + "A" * 43 if token == "forged" else "junk\n"
    if draw(st.booleans()):
        headers["x-forwarded-client-cert"] = f"URI=spiffe://cluster.local/ns/evil/sa/{draw(st.integers(0, 3))}"
    if draw(st.integers(0, 2)):
        headers["authorization"] = draw(st.sampled_from(AUTHORIZATIONS))
    headers = {name: value for name, value in headers.items() if value}
    claims = draw(st.sampled_from([*[b""] * 12, *VERIFIED_CLAIMS]))
    return AuthzInput(method, path, host, headers, body, principal(caller), jwt_authn=claims)


MUTATIONS = ("none", "none", "none", "unknown", "repeat-path", "tls-field-0", "bad-scheme", "truncate")


def encode(check: CheckRequest, mutation: str) -> bytes:
    """The CheckRequest as Envoy sends it, or altered below protobuf."""
    payload = check.SerializeToString()
    if mutation == "unknown":
        return payload + varint(15 << 3) + varint(9)  # an unknown varint field: protobuf keeps it aside
    if mutation == "repeat-path":
        return inject(check, ("attributes", "request", "http"), field(4, b"/mcp"))  # the last copy wins
    if mutation == "tls-field-0":
        check.attributes.tls_session.sni = "x"
        return inject(check, ("attributes", "tls_session"), b"\x02\x00")
    if mutation == "bad-scheme":
        return inject(check, ("attributes", "request", "http"), field(6, b"\xff"))
    return payload[:-3] if mutation == "truncate" else payload


@st.composite
def stream(draw: Any) -> list[tuple[Any, ...]]:
    """Actions; a request names the tokens minted so far by position, so it is drawn as it runs."""
    kinds = st.sampled_from(["send"] * 8 + ["tick", "revoke", "down", "up", "reconnect", "reload"])
    return [(kind, draw(st.integers(0, 10**6))) for kind in draw(st.lists(kinds, min_size=5, max_size=40))]


# --- running it --------------------------------------------------------------------------------


def seen(response: bytes) -> tuple[object, ...]:
    """What Envoy and the agent see, with the decision id (random per answer) blanked."""
    answer = CheckResponse.FromString(response)
    metadata = {key: value.string_value or value.number_value for key, value in answer.dynamic_metadata.fields.items()}
    decision_id = str(metadata.pop("decision_id"))
    part = answer.ok_response if answer.HasField("ok_response") else answer.denied_response
    headers = sorted((h.header.key, h.header.value.replace(decision_id, "<id>"), h.append_action) for h in part.headers)
    body = answer.denied_response.body.replace(decision_id, "<id>")
    return (
        answer.status.code,
        answer.status.message,
        answer.denied_response.status.code,
        tuple(headers),
        tuple(answer.ok_response.headers_to_remove),
        body,
        tuple(sorted(metadata.items())),
    )


class Stream:
    """Three Authorizers over one chain step: two caching (large, tiny), one deciding afresh."""

    def __init__(self, policies: list[PolicySet], requests: Any = None) -> None:
        self.clock = Clock()
        self.store = SwitchableStore(self.clock)
        chains = ChainStep(self.store, ChainKeys.ephemeral(), clock=self.clock)
        self.policies = policies
        self.cached = Authorizer(policies[0], chains=chains, decision_cache=10_000)
        self.tiny = Authorizer(policies[0], chains=chains, decision_cache=4)
        self.fresh = Authorizer(policies[0], chains=chains, decision_cache=0)
        self.tokens: list[str] = []
        self.requests = requests  # a strategy of requests, given the tokens minted so far

    def act(self, kind: str, value: int, data: Any) -> None:
        if kind == "send":
            self.send(data.draw((self.requests or request)(self.tokens)), data.draw(st.sampled_from(MUTATIONS)))
        elif kind == "tick":
            self.clock.now += (1, 29, 31, 15 * 60 + 1)[value % 4]
        elif kind == "revoke" and self.tokens:
            self.store.revoke(self.tokens[value % len(self.tokens)].split(".")[0])
        elif kind in ("down", "up"):
            self.store.up = kind == "up"
        elif kind == "reconnect":
            self.store.generation += 1
        elif kind == "reload":
            policy = self.policies[value % len(self.policies)]
            for authorizer in (self.cached, self.tiny, self.fresh):
                authorizer.policy = policy

    def send(self, described: AuthzInput, mutation: str) -> None:
        payload = encode(to_check_request(described), mutation)
        for _ in range(2):  # the second time, the caching ones may answer from their caches
            answers = [seen(authorizer.check_bytes(payload)) for authorizer in (self.cached, self.tiny, self.fresh)]
            assert answers[0] == answers[2] and answers[1] == answers[2], (described, mutation, answers)
        minted = CheckResponse.FromString(self.fresh.check_bytes(payload)).ok_response.headers
        self.tokens.extend(
            h.header.value for h in minted if h.header.key == CHAIN and h.header.value not in self.tokens
        )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(actions=stream(), data=st.data())
def test_every_answer_from_the_cache_is_the_answer_deciding_afresh_gives(policies, actions, data):
    run = Stream(policies)
    for kind, value in actions:
        run.act(kind, value, data)


@st.composite
def user_request(draw: Any, tokens: list[str]) -> AuthzInput:
    """Requests that reach the rules about users: governed callers, well-formed calls, a user's
    token or claims, and chains minted for users (or for none) presented with another's token."""
    caller = draw(st.sampled_from(["alice", "bob", "carol", "dave"]))
    headers = {"x-tenant": "a"}
    if draw(st.booleans()):
        body = orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": draw(st.integers(0, 3)),
                "method": "tools/call",
                "params": {"name": draw(st.sampled_from(["read", "delete", "admin"])), "arguments": {}},
            }
        )
        host, path = TOOLS, "/mcp"
    else:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}})
        host, path = f"{draw(st.sampled_from(['bob', 'carol', 'dave']))}.agents.local", "/"
    if tokens and draw(st.booleans()):
        headers[CHAIN] = tokens[draw(st.integers(0, len(tokens) - 1))]
    if draw(st.integers(0, 3)):
        headers["authorization"] = draw(st.sampled_from(AUTHORIZATIONS))
    claims = draw(st.sampled_from([*[b""] * 6, *VERIFIED_CLAIMS]))
    return AuthzInput("POST", path, host, headers, body, principal(caller), jwt_authn=claims)


@settings(
    max_examples=EXAMPLES // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(actions=stream(), data=st.data())
def test_every_answer_about_users_from_the_cache_is_the_answer_deciding_afresh_gives(policies, actions, data):
    run = Stream(policies, user_request)
    for kind, value in actions:
        run.act(kind, value, data)
