"""The human behind the agent (SPEC §10), in process: who the user is, what rules say about them,
and how the user travels along a chain. Real keys (RSA and EC from `cryptography`), tokens
PyJWT signs, a JWKS file; every request goes in as CheckRequest bytes, as Envoy sends it, so the
byte walk and the decision cache take part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from authz.chains.memory import MemoryChainStore
from authz.chains.tokens import ChainKeys
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, to_check_request
from authz.policy.compiler import compile_directory
from authz.reasons import (
    TOKEN_ALGORITHM,
    TOKEN_AUDIENCE,
    TOKEN_EXPIRED,
    TOKEN_ISSUER,
    TOKEN_MALFORMED,
    TOKEN_NOT_YET_VALID,
    TOKEN_SIGNATURE,
    TOKEN_TOO_LARGE,
    TOKEN_UNKNOWN_KEY,
    USER_MISMATCH,
    USER_NOT_ALLOWED,
    USER_REQUIRED,
)
from authz.serve.audit import AuditLog
from tests.harness.answers import header, outcome
from tests.harness.chain_doubles import Clock
from tests.harness.users import (
    ISSUER,
    OTHER_ISSUER,
    USER_PROFILES,
    Idp,
    bearer,
    hmac_signed,
    jwt_authn_metadata,
    principal,
    public_pem,
    rsa_key,
    unsigned,
    users_settings,
)

CHAIN = "x-delegation-chain"


@dataclass
class World:
    authorizer: Authorizer
    idp: Idp
    other: Idp  # a second configured issuer, with keys of its own
    clock: Clock

    def send(self, request: AuthzInput) -> tuple[int, str, CheckResponse]:
        """(HTTP status Envoy answers with, reason, the CheckResponse)."""
        answer = CheckResponse.FromString(self.authorizer.check_bytes(to_check_request(request).SerializeToString()))
        status = answer.denied_response.status.code if answer.HasField("denied_response") else 200
        return status, outcome(answer)[1], answer


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    idp, other = Idp(), Idp(OTHER_ISSUER, [rsa_key("other-rsa")])
    jwks_file = idp.write_jwks(tmp_path / "jwks.json")
    other_file = other.write_jwks(tmp_path / "other-jwks.json")
    settings = users_settings(jwks_file) + (
        f"      - {{issuer: {OTHER_ISSUER}, audiences: [mandate], jwksFile: {other_file}}}\n"
    )
    (tmp_path / "policy.yaml").write_text(settings + "---" + USER_PROFILES)
    clock = Clock()
    idp.now = other.now = clock.now
    chains = ChainStep(MemoryChainStore(clock=clock), ChainKeys.ephemeral(), clock=clock)
    yield World(Authorizer(compile_directory(tmp_path), chains=chains), idp, other, clock)


def tool(caller: str, name: str, headers: dict[str, str] | None = None, **arguments: Any) -> AuthzInput:
    body = orjson.dumps(
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    )
    return AuthzInput("POST", "/mcp", "billing-db.local", headers or {}, body, principal(caller))


def send_message(caller: str, agent: str, headers: dict[str, str] | None = None) -> AuthzInput:
    body = orjson.dumps({"jsonrpc": "2.0", "id": "m", "method": "SendMessage", "params": {}})
    return AuthzInput("POST", "/", f"{agent}.local", headers or {}, body, principal(caller))


def finance(world: World, sub: str = "alice", groups: tuple[str, ...] = ("finance",), **claims: Any) -> str:
    return world.idp.token(sub, list(groups), customer_id="c-1", **claims)


# --- who the user is ------------------------------------------------------------------------


def test_a_finance_user_may_refund_their_own_customer_and_no_other(world):
    token = finance(world)
    assert world.send(tool("billing-agent", "refund", bearer(token), customer="c-1"))[:2] == (200, "allowed")
    assert world.send(tool("billing-agent", "refund", bearer(token), customer="c-2"))[:2] == (403, "tool_not_allowed")


def test_an_ec_signed_token_is_as_good_as_an_rsa_one(world):
    token = world.idp.token("alice", ["finance"], key=world.idp.keys[1], customer_id="c-1")
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert world.send(tool("billing-agent", "refund", bearer(token), customer="c-1"))[:2] == (200, "allowed")


def test_a_rule_with_users_and_no_user_is_401_user_required(world):
    assert world.send(tool("billing-agent", "refund", customer="c-1"))[:2] == (401, USER_REQUIRED)


def test_a_user_the_rule_does_not_name_is_403_user_not_allowed(world):
    bob = world.idp.token("bob", ["engineering"], customer_id="c-1")
    status, reason, answer = world.send(tool("billing-agent", "refund", bearer(bob), customer="c-1"))
    assert (status, reason) == (403, USER_NOT_ALLOWED)
    assert b"finance" not in answer.denied_response.body.encode()  # whom a rule is for stays in the policy


def test_subjects_match_sub_exactly(world):
    assert world.send(tool("billing-agent", "balance", bearer(world.idp.token("alice"))))[0] == 200
    assert world.send(tool("billing-agent", "balance", bearer(world.idp.token("Alice"))))[1] == USER_NOT_ALLOWED


def test_a_rule_without_users_is_for_anyone_and_no_one(world):
    assert world.send(tool("billing-agent", "ping"))[0] == 200
    assert world.send(tool("billing-agent", "ping", bearer(world.idp.token("bob"))))[0] == 200


def test_a_when_reads_the_user_and_an_absent_user_is_an_empty_map(world, tmp_path):
    token = finance(world)
    assert world.send(tool("billing-agent", "refund", bearer(token), customer="c-1"))[0] == 200
    # without a user the rule's users refuse first; the `when` never sees the empty map
    assert world.send(tool("billing-agent", "refund", customer="c-1"))[1] == USER_REQUIRED


# --- what is not a user token is no user, never an error ------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "sk-live-0123456789abcdef",  # an API key
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer sk-live-0123456789",
        "Bearer a.b",
        "Bearer not.json!.sig",
        "Token x.y.z",
    ],
)
def test_any_other_value_of_the_header_is_ignored(world, value):
    assert world.send(tool("billing-agent", "ping", {"authorization": value}))[:2] == (200, "allowed")
    assert world.send(tool("billing-agent", "refund", {"authorization": value}, customer="c-1"))[1] == USER_REQUIRED


def test_a_token_of_an_issuer_not_configured_is_ignored(world):
    stranger = Idp("https://stranger.example.com", [rsa_key("s")], world.clock.now).token("alice", ["finance"])
    assert world.send(tool("billing-agent", "ping", bearer(stranger)))[0] == 200
    assert world.send(tool("billing-agent", "refund", bearer(stranger), customer="c-1"))[1] == USER_REQUIRED


def test_the_bearer_scheme_is_case_insensitive(world):
    token = finance(world)
    assert world.send(tool("billing-agent", "refund", {"authorization": f"bearer  {token} "}, customer="c-1"))[0] == 200


# --- a user token that fails is 401 with a token_ reason, even where no rule needs a user ----------


def bad_tokens(world: World) -> dict[str, tuple[str, str]]:
    idp, now = world.idp, world.clock.now
    good = idp.token("alice")
    head, payload, signature = good.split(".")
    tampered = orjson.loads(jwt.utils.base64url_decode(payload))
    tampered["groups"] = ["finance"]
    forged_payload = jwt.utils.base64url_encode(orjson.dumps(tampered)).decode()
    claims = {"iss": ISSUER, "sub": "alice", "aud": "mandate", "exp": int(now) + 600, "groups": ["finance"]}
    return {
        "alg none": (unsigned(claims), TOKEN_ALGORITHM),
        "HS256 keyed with the RSA public key": (hmac_signed(claims, public_pem(idp.keys[0]), "rsa-1"), TOKEN_ALGORITHM),
        "tampered payload": (f"{head}.{forged_payload}.{signature}", TOKEN_SIGNATURE),
        "signature of another key": (idp.token("alice", key=rsa_key("rsa-1")), TOKEN_SIGNATURE),
        "expired": (idp.token("alice", exp=int(now) - 61), TOKEN_EXPIRED),
        "not yet valid": (idp.token("alice", nbf=int(now) + 61), TOKEN_NOT_YET_VALID),
        "issued in the future": (idp.token("alice", iat=int(now) + 3600), TOKEN_NOT_YET_VALID),
        "wrong audience": (idp.token("alice", aud="someone-else"), TOKEN_AUDIENCE),
        "no audience": (idp.token("alice", aud=None), TOKEN_AUDIENCE),
        "unknown kid": (idp.token("alice", key=rsa_key("rotated-away")), TOKEN_UNKNOWN_KEY),
        "kid of another issuer": (idp.token("alice", key=world.other.keys[0]), TOKEN_UNKNOWN_KEY),
        "no sub": (idp.token(sub=None), TOKEN_MALFORMED),  # type: ignore[arg-type]
        "no exp": (idp.token("alice", exp=None), TOKEN_MALFORMED),
        "header not JSON": ("e30x." + payload + "." + signature, TOKEN_MALFORMED),
        "RS256 key, ES256 alg": (unsigned(claims, {"alg": "ES256", "kid": "rsa-1"}, b"x" * 64), TOKEN_ALGORITHM),
        "over 16 KiB": (idp.token("alice", padding="x" * 17_000), TOKEN_TOO_LARGE),
        "two Authorization headers": (f"{good},Bearer sk-123", TOKEN_MALFORMED),
    }


@pytest.mark.parametrize(
    "case",
    [
        "alg none",
        "HS256 keyed with the RSA public key",
        "tampered payload",
        "signature of another key",
        "expired",
        "not yet valid",
        "issued in the future",
        "wrong audience",
        "no audience",
        "unknown kid",
        "kid of another issuer",
        "no sub",
        "no exp",
        "header not JSON",
        "RS256 key, ES256 alg",
        "over 16 KiB",
        "two Authorization headers",
    ],
)
def test_a_bad_user_token_is_401_with_its_token_reason_even_where_no_rule_needs_a_user(world, case):
    token, reason = bad_tokens(world)[case]
    status, got, answer = world.send(tool("billing-agent", "ping", bearer(token)))
    assert (status, got) == (401, reason)
    assert token not in answer.denied_response.body  # the body never echoes the token


def test_clock_skew_of_up_to_60_seconds_is_allowed(world):
    now = int(world.clock.now)
    for claims in ({"exp": now - 59}, {"nbf": now + 59}, {"iat": now + 59}):
        assert world.send(tool("billing-agent", "ping", bearer(world.idp.token("alice", **claims))))[0] == 200


def test_aud_may_be_a_list_and_one_configured_audience_suffices(world):
    token = world.idp.token("alice", aud=["billing", "other-audience"])
    assert world.send(tool("billing-agent", "balance", bearer(token)))[0] == 200


def test_a_kid_belongs_to_its_issuer_and_each_issuer_verifies_its_own(world):
    theirs = world.other.token("alice")  # iss = OTHER_ISSUER, signed with its own key
    assert world.send(tool("billing-agent", "balance", bearer(theirs)))[0] == 200
    crossed = world.other.token("alice", key=world.idp.keys[0])  # other's iss, our key and kid
    assert world.send(tool("billing-agent", "ping", bearer(crossed)))[:2] == (401, TOKEN_UNKNOWN_KEY)


def test_an_answer_given_for_a_token_ends_when_the_token_does(world):
    token = world.idp.token("alice", exp=int(world.clock.now) + 30)
    request = tool("billing-agent", "balance", bearer(token))
    assert world.send(request)[0] == 200
    assert world.send(request)[0] == 200  # from the decision cache
    world.clock.now += 30 + 60  # exp and the skew
    assert world.send(request)[:2] == (401, TOKEN_EXPIRED)


def test_each_user_gets_their_own_answer_from_the_decision_cache(world):
    alice, bob = world.idp.token("alice"), world.idp.token("bob")
    for _ in range(3):
        assert world.send(tool("billing-agent", "balance", bearer(alice)))[0] == 200
        assert world.send(tool("billing-agent", "balance", bearer(bob)))[1] == USER_NOT_ALLOWED


# --- claims Envoy's jwt_authn verified ------------------------------------------------------------


def with_claims(request: AuthzInput, metadata: bytes) -> AuthzInput:
    request.jwt_authn = metadata
    return request


def claims(world: World, **overrides: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "sub": "alice", "aud": "mandate", "exp": int(world.clock.now) + 600}
    return {**base, "groups": ["finance"], "customer_id": "c-1", **overrides}


@pytest.mark.parametrize("key", [ISSUER, "payload"])
def test_claims_envoy_verified_make_the_user_keyed_by_the_issuer_or_as_istio_keys_them(world, key):
    request = with_claims(tool("billing-agent", "refund", customer="c-1"), jwt_authn_metadata(claims(world), key))
    assert world.send(request)[:2] == (200, "allowed")


def test_envoy_verified_claims_are_not_verified_again_but_their_time_and_audience_are(world):
    metadata = jwt_authn_metadata(claims(world, exp=int(world.clock.now) - 120))
    assert world.send(with_claims(tool("billing-agent", "ping"), metadata))[:2] == (401, TOKEN_EXPIRED)
    metadata = jwt_authn_metadata(claims(world, aud="another-service"))
    assert world.send(with_claims(tool("billing-agent", "ping"), metadata))[:2] == (401, TOKEN_AUDIENCE)
    metadata = jwt_authn_metadata(claims(world, iss=OTHER_ISSUER), ISSUER)
    assert world.send(with_claims(tool("billing-agent", "ping"), metadata))[:2] == (401, TOKEN_ISSUER)


def test_claims_of_an_issuer_not_configured_are_no_user(world):
    metadata = jwt_authn_metadata(claims(world, iss="https://stranger"), "https://stranger")
    assert world.send(with_claims(tool("billing-agent", "refund", customer="c-1"), metadata))[1] == USER_REQUIRED


# --- the user travels with the chain --------------------------------------------------------------


def delegate(world: World, token: str | None, agent: str = "billing-agent") -> str:
    """The orchestrator, called by a person (their token), calls `agent`: the chain it hands on."""
    status, _, answer = world.send(send_message("orchestrator", agent, bearer(token) if token else {}))
    assert status == 200
    minted = header(answer, CHAIN)
    assert minted
    return minted


def test_a_chain_minted_for_a_user_lets_the_next_hop_act_for_them_without_the_jwt(world):
    chain = delegate(world, finance(world))
    refund = tool("billing-agent", "refund", {CHAIN: chain}, customer="c-1")
    assert world.send(refund)[:2] == (200, "allowed")
    other = finance(world, "bob", groups=("engineering",))
    chain = delegate(world, other)
    assert world.send(tool("billing-agent", "refund", {CHAIN: chain}, customer="c-1"))[1] == USER_NOT_ALLOWED


def test_a_chain_minted_without_a_user_acts_for_none(world):
    chain = delegate(world, None)
    assert world.send(tool("billing-agent", "refund", {CHAIN: chain}, customer="c-1"))[:2] == (401, USER_REQUIRED)


def test_a_jwt_presented_with_a_chain_for_another_user_is_user_mismatch(world):
    chain = delegate(world, finance(world, "alice"))
    mallory = finance(world, "mallory")
    status, reason, _ = world.send(tool("billing-agent", "ping", {CHAIN: chain, **bearer(mallory)}))
    assert (status, reason) == (403, USER_MISMATCH)
    same = finance(world, "alice")
    assert world.send(tool("billing-agent", "ping", {CHAIN: chain, **bearer(same)}))[0] == 200


def test_a_jwt_presented_with_a_chain_minted_without_a_user_is_user_mismatch(world):
    chain = delegate(world, None)
    assert world.send(tool("billing-agent", "ping", {CHAIN: chain, **bearer(finance(world))}))[1] == USER_MISMATCH


def test_two_users_never_share_a_minted_token(world):
    alice_chain = delegate(world, finance(world, "alice"))
    bob_chain = delegate(world, finance(world, "bob", groups=("engineering",)))
    assert alice_chain != bob_chain
    assert delegate(world, None) not in (alice_chain, bob_chain)


def test_a_grant_with_users_holds_only_while_the_chain_acts_for_one_of_them(world):
    support = world.idp.token("sam", ["support"])
    chain = delegate(world, support, "support-agent")
    read = AuthzInput(
        "POST",
        "/",
        "tickets.local",
        {CHAIN: chain},
        orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read"}}),
        principal("support-agent"),
    )
    assert world.send(read)[0] == 200
    read.headers[CHAIN] = delegate(world, world.idp.token("eve", ["finance"]), "support-agent")
    status, reason, answer = world.send(read)
    assert (status, reason) == (403, USER_NOT_ALLOWED)
    assert outcome(answer) == ("deny", USER_NOT_ALLOWED)


# --- MCP authorization discovery ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ],
)
def test_mcp_authorization_discovery_is_plumbing_whatever_the_path_prefix(world, path):
    discovery = AuthzInput("GET", path, "billing-db.local", {}, b"", principal("billing-agent"))
    assert world.send(discovery)[:2] == (200, "allowed")
    discovery.source_principal = principal("support-agent")  # no rule for billing-db
    assert world.send(discovery)[:2] == (403, "server_not_allowed")


def test_other_well_known_paths_stay_outside_the_path_prefix(world):
    for method, path in (("GET", "/.well-known/other"), ("POST", "/.well-known/openid-configuration")):
        request = AuthzInput(method, path, "billing-db.local", {}, b"", principal("billing-agent"))
        assert world.send(request)[1] == "path_outside_target"


# --- audit -------------------------------------------------------------------------------------


def test_audit_lines_name_the_user_at_every_hop_and_never_the_token(world):
    token = finance(world)
    first = world.authorizer.decide(send_message("orchestrator", "billing-agent", bearer(token)))
    second = world.authorizer.decide(tool("billing-agent", "refund", {CHAIN: first.minted_token}, customer="c-1"))
    anonymous = world.authorizer.decide(tool("billing-agent", "ping"))
    lines = [orjson.loads(AuditLog().line(d, d.id, 1.0, 0)) for d in (first, second, anonymous)]
    assert [line["user"] for line in lines[:2]] == [{"sub": "alice", "iss": ISSUER}] * 2
    assert lines[1]["hops"] == ["orchestrator", "billing-agent"] and lines[1]["decision"] == "allow"
    assert lines[2]["user"] is None
    assert all(token not in orjson.dumps(line).decode() for line in lines)
    assert all("c-1" not in orjson.dumps(line).decode() for line in lines)  # nor the user's other claims


def test_audit_lines_name_who_acts_for_the_user_from_the_act_claim(world):
    """RFC 8693 token exchange: `act` names the actor, nested once per exchange; each actor's
    `sub`, latest first, bounded in number and length, and nothing else of the claim."""
    deep: dict[str, Any] = {"sub": "x" * 1000, "client_id": "leaky-detail"}
    for depth in range(8):
        deep = {"sub": f"agent-{depth}", "act": deep}
    cases = {
        "plain": (None, None),
        "one actor": (
            {"sub": "spiffe://cluster.local/ns/agents/sa/orchestrator"},
            ["spiffe://cluster.local/ns/agents/sa/orchestrator"],
        ),
        "not a sub": ({"client_id": "c"}, ["?"]),
        "deep": (deep, [f"agent-{depth}" for depth in range(7, 2, -1)]),
        "long": ({"sub": "y" * 1000}, ["y" * 256]),
    }
    for act, expected in cases.values():
        token = finance(world, **({"act": act} if act is not None else {}))
        decision = world.authorizer.decide(send_message("orchestrator", "billing-agent", bearer(token)))
        line = orjson.loads(AuditLog().line(decision, decision.id, 1.0, 0))
        assert line["user"].get("act") == expected
        assert "leaky-detail" not in orjson.dumps(line).decode()


def test_an_answer_that_came_after_a_token_was_verified_ends_with_the_token(world):
    """Whatever follows a verified token — a refusal of the body, an allow acting for the chain's
    user — held only because the token did: once it expires, the request is token_expired."""
    token = world.idp.token("alice", ["finance"], customer_id="c-1", exp=int(world.clock.now) + 30)
    malformed = tool("billing-agent", "ping", {"content-length": "²", **bearer(token)})
    chain = delegate(world, finance(world, "alice"))
    chained = tool("billing-agent", "ping", {CHAIN: chain, **bearer(token)})
    for _ in range(2):  # the second time from the decision cache
        assert world.send(malformed)[:2] == (400, "invalid_header")
        assert world.send(chained)[:2] == (200, "allowed")
    world.clock.now += 30 + 60
    assert world.send(malformed)[:2] == (401, TOKEN_EXPIRED)
    assert world.send(chained)[:2] == (401, TOKEN_EXPIRED)


RULES_OF_EVERY_KIND = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: web}
spec: {kind: egress, hosts: [api.example.com]}
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: status}
spec: {kind: http, hosts: [status.local]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: ops}
spec:
  principals: [spiffe://cluster.local/ns/ops/sa/ops]
  mission: every kind of rule, for on-call people only
  agents: [{agent: helper, users: {groups: [oncall]}}]
  egress: [{host: api.example.com, users: {groups: [oncall]}}]
  http: [{target: status, users: {subjects: [alice]}}]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: helper}
spec:
  principals: [spiffe://cluster.local/ns/helper/sa/helper]
  hosts: [helper.local]
  mission: helps
"""


@pytest.mark.parametrize(
    ("method", "host", "path", "body"),
    [
        ("POST", "helper.local", "/", b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{}}'),
        ("GET", "api.example.com", "/zen", b""),
        ("GET", "status.local", "/", b""),
    ],
    ids=["agents", "egress", "http"],
)
def test_users_stand_on_agents_egress_and_http_rules_too(tmp_path, method, host, path, body):
    idp = Idp()
    (tmp_path / "policy.yaml").write_text(
        users_settings(idp.write_jwks(tmp_path / "jwks.json")) + "---" + RULES_OF_EVERY_KIND
    )
    authorizer = Authorizer(compile_directory(tmp_path))

    def reason(headers: dict[str, str]) -> str:
        request = AuthzInput(method, path, host, headers, body, "spiffe://cluster.local/ns/ops/sa/ops")
        return outcome(CheckResponse.FromString(authorizer.check_bytes(to_check_request(request).SerializeToString())))[
            1
        ]

    assert reason(bearer(idp.token("alice", ["oncall"]))) == "allowed"
    assert reason({}) == USER_REQUIRED
    assert reason(bearer(idp.token("bob", ["dev"]))) == USER_NOT_ALLOWED
