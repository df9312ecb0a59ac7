"""The decision cache answers a repeated request as deciding it again would, and never otherwise.

Every test drives the real Authorizer with serialized CheckRequests (what Envoy sends), and
tries to make the cache hand out an answer that no longer, or never did, apply: another
caller, tool, header a `when` reads, policy version, a revoked or expired chain, a lost or
unreachable store, a token past its reuse window.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from authz.chains.tokens import ChainKeys
from authz.check.delegation import MINT_REUSE_SECONDS, ChainStep
from authz.check.pipeline import Authorizer
from authz.check.record import Answered, Recorder
from authz.check.request import AuthzInput, to_check_request
from authz.policy.compiler import compile_directory
from authz.policy.conditions import Condition
from authz.serve.metrics import Metrics
from tests.harness.answers import decision_id, header, outcome
from tests.harness.chain_cast import CHAIN_HEADER, TOOLS_HOST, cast, documents, principal
from tests.harness.chain_doubles import Clock, SwitchableStore
from tests.harness.protowire import field, inject
from tests.harness.requests import call_agent, use_tool

_request_ids = itertools.count()


class Counted:
    """An Authorizer that also tells how many requests it decided through every step (cache
    misses). It reads that from the record: a decision made afresh is recorded under its own id,
    an answer from the cache under a new one."""

    def __init__(self, authorizer: Authorizer, recorder: Recorder, answered: list[Answered]) -> None:
        self.authorizer, self.recorder, self.answered = authorizer, recorder, answered

    @property
    def decided(self) -> int:
        assert self.recorder.flush()
        return sum(1 for decision, answer_id, _, _ in self.answered if decision.id == answer_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.authorizer, name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> SwitchableStore:
    return SwitchableStore(clock)


@pytest.fixture
def policy_dir(write_policies):
    def write(profiles: dict[str, dict[str, Any]] | None = None, settings: dict[str, Any] | None = None):
        return write_policies(**documents(cast() if profiles is None else profiles, settings))

    return write


@pytest.fixture
def build(policy_dir, store, clock):
    def make(
        profiles: dict[str, dict[str, Any]] | None = None, entries: int = 100, metrics: Metrics | None = None
    ) -> Counted:
        chains = ChainStep(store, ChainKeys.ephemeral(), clock=clock)
        answered: list[Answered] = []
        recorder = Recorder([answered.extend] + ([metrics.count] if metrics is not None else []))
        return Counted(
            Authorizer(compile_directory(policy_dir(profiles)), recorder, chains, entries), recorder, answered
        )

    return make


def send(authorizer: Authorizer, request: AuthzInput, **headers: str) -> CheckResponse:
    """The request as Envoy sends it: every check carries its own x-request-id."""
    check = to_check_request(request)
    check.attributes.request.http.headers["x-request-id"] = f"req-{next(_request_ids)}"
    check.attributes.request.http.headers.update(headers)
    return CheckResponse.FromString(authorizer.check_bytes(check.SerializeToString()))


# --- hits ---------------------------------------------------------------------------------


def test_a_repeated_request_is_answered_without_deciding_again(build):
    authorizer = build()
    first, second = send(authorizer, use_tool("alice", "read")), send(authorizer, use_tool("alice", "read"))
    assert outcome(first) == outcome(second) == ("allow", "allowed")
    assert authorizer.decided == 1  # x-request-id differs, and is not part of any decision


def test_each_answer_has_its_own_decision_id_everywhere(build):
    authorizer = build()
    answers = [send(authorizer, use_tool("alice", "admin")) for _ in range(3)]
    assert authorizer.decided == 1
    ids = [decision_id(answer) for answer in answers]
    assert len(set(ids)) == 3 and all(len(i) == 16 for i in ids)
    for answer, identifier in zip(answers, ids, strict=True):
        assert header(answer, "x-mandate-decision-id") == identifier
        body = orjson.loads(answer.denied_response.body)
        assert body["id"] == 7 and body["error"]["data"]["decision_id"] == identifier  # still a JSON-RPC error for id 7


def test_metrics_count_every_answer_and_a_handed_on_token_as_reused(build):
    metrics = Metrics()
    authorizer = build(metrics=metrics)
    for _ in range(3):
        send(authorizer, call_agent("alice", "bob"))
    assert authorizer.decided == 1
    assert authorizer.recorder.flush()
    assert metrics.registry.get_sample_value("mandate_decisions_total", {"result": "allow", "reason": "allowed"}) == 3
    assert metrics.registry.get_sample_value("mandate_chain_outcomes_total", {"outcome": "minted"}) == 1
    assert metrics.registry.get_sample_value("mandate_chain_outcomes_total", {"outcome": "reused"}) == 2
    assert metrics.registry.get_sample_value("mandate_decision_cache_answers_total") == 2


def test_caching_off_decides_every_request(build):
    authorizer = build(entries=0)
    for _ in range(3):
        assert outcome(send(authorizer, use_tool("alice", "read"))) == ("allow", "allowed")
    assert authorizer.decided == 3


def test_a_full_cache_evicts_its_oldest_and_stays_correct(build):
    authorizer = build(entries=2)
    for _ in range(2):
        for tool, expected in (("read", "allow"), ("write", "allow"), ("admin", "deny"), ("delete", "deny")):
            assert outcome(send(authorizer, use_tool("alice", tool)))[0] == expected


# --- JSON-RPC ids: clients number their calls ----------------------------------------------


def numbered(
    request: AuthzInput, request_id: object, *, body: dict[str, Any] | None = None, extra: int = 0
) -> AuthzInput:
    """`request` under another JSON-RPC id, with the Content-Length Envoy passes on (`extra`
    bytes more than the body: a body the proxy cut)."""
    document = orjson.loads(request.body) if body is None else body
    document["id"] = request_id
    request.body = orjson.dumps(document)
    request.headers["content-length"] = str(len(request.body) + extra)
    return request


def jsonrpc_error_id(response: CheckResponse) -> object:
    return orjson.loads(response.denied_response.body)["id"]


def test_a_call_under_another_jsonrpc_id_is_answered_from_the_cache(build):
    authorizer = build()
    for request_id in (1, 2, 10, 123456789012345678, -5, "call-7", "x"):
        assert outcome(send(authorizer, numbered(use_tool("alice", "read"), request_id))) == ("allow", "allowed")
    assert authorizer.decided == 1  # Content-Length grew with the id: it only says the body is whole


def test_a_denied_call_is_answered_again_only_under_its_own_id(build):
    """A deny body echoes the id: another id is decided afresh, and answered with its own; each
    id's answer is kept for that id."""
    authorizer = build()
    for request_id, decided in ((1, 1), (2, 2), (2, 2), ("two", 3), (1, 3)):
        response = send(authorizer, numbered(use_tool("alice", "admin"), request_id))
        assert outcome(response) == ("deny", "tool_not_allowed")
        assert jsonrpc_error_id(response) == request_id
        assert authorizer.decided == decided


def test_an_id_that_is_not_the_top_level_one_stays_in_the_key(build):
    """An `id` in the arguments (or in a string, or in the params) is what a `when` may read."""
    profiles = cast()
    profiles["alice"]["when"] = "mcp.tool.arguments.id == 1"
    authorizer = build(profiles)

    def call(arguments: dict[str, Any], request_id: object = 9) -> str:
        body = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "read", "arguments": arguments}}
        return outcome(send(authorizer, numbered(use_tool("alice", "read"), request_id, body=body)))[0]

    assert call({"id": 1}) == "allow"
    assert call({"id": 2}) == "deny"
    assert call({"id": 1}, request_id=10) == "allow"  # the top-level id alone is left out
    assert call({"id": 2}, request_id=11) == "deny"  # decided afresh: a deny is kept for its own id only
    assert call({"note": '"id":1', "id": 2}) == "deny"
    assert authorizer.decided == 4


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"read","arguments":{}},"id":1,"id":2}',
        rb'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"read","arguments":{}},"id":1, "\u0069d":2}',
    ],
)
def test_a_repeated_top_level_id_is_never_shared(build, body: bytes):
    """The walk takes the first `id`; the strict reader refuses a repeated key, so the answer is
    a deny under that exact id, given to no other."""
    authorizer = build()
    request = use_tool("alice", "read")
    request.body = body
    assert outcome(send(authorizer, request)) == ("deny", "duplicate_json_key")
    other = use_tool("alice", "read")
    other.body = body.replace(b'"id":1', b'"id":3')
    assert outcome(send(authorizer, other)) == ("deny", "duplicate_json_key")
    assert authorizer.decided == 2


@pytest.mark.parametrize("request_id", [None, 1.5, True, [1], {"n": 1}, "caf\u00e9", 1234567890123456789, "tab\there"])
def test_ids_the_key_cannot_leave_out_are_kept_whole(build, request_id: object):
    """null, a fraction, a boolean, a list or object, a string with escapes, 19 digits: the id
    stays in the key, so another id is decided afresh."""
    authorizer = build()
    body = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "read", "arguments": {}}}
    first = numbered(use_tool("alice", "read"), request_id, body=body)
    if isinstance(request_id, str):
        first.body = first.body.replace(orjson.dumps(request_id), b'"' + request_id.encode() + b'"')
    send(authorizer, first)
    send(authorizer, numbered(use_tool("alice", "read"), 42, body=body))
    assert authorizer.decided == 2


def test_a_body_with_nothing_where_the_id_goes_is_not_the_body_without_its_id(build):
    authorizer = build()
    assert outcome(send(authorizer, numbered(use_tool("alice", "read"), 1)))[0] == "allow"
    hollow = use_tool("alice", "read")
    hollow.body = numbered(use_tool("alice", "read"), 1).body.replace(b'"id":1', b'"id":')
    assert outcome(send(authorizer, hollow)) == ("deny", "invalid_json")


def test_a_body_cut_by_the_proxy_is_not_answered_as_the_whole_one(build):
    authorizer = build()
    assert outcome(send(authorizer, numbered(use_tool("alice", "read"), 1))) == ("allow", "allowed")
    assert outcome(send(authorizer, numbered(use_tool("alice", "read"), 2, extra=1))) == ("deny", "partial_body")
    assert outcome(send(authorizer, numbered(use_tool("alice", "read"), 3, extra=1000))) == ("deny", "partial_body")
    assert outcome(send(authorizer, numbered(use_tool("alice", "read"), 4, extra=-1))) == ("allow", "allowed")


def test_content_length_counts_whole_when_a_when_reads_it(build):
    profiles = cast()
    profiles["alice"]["when"] = 'request.headers["content-length"] == "86"'
    authorizer = build(profiles)
    assert len(numbered(use_tool("alice", "read"), 1).body) == 86
    assert outcome(send(authorizer, numbered(use_tool("alice", "read"), 1)))[0] == "allow"
    assert outcome(send(authorizer, numbered(use_tool("alice", "read"), 22)))[0] == "deny"
    assert outcome(send(authorizer, numbered(use_tool("alice", "read"), 3)))[0] == "allow"
    assert authorizer.decided == 2


def test_a_batch_is_keyed_whole(build):
    authorizer = build()
    for request_id in (1, 2):
        request = use_tool("alice", "read")
        request.body = orjson.dumps([orjson.loads(numbered(use_tool("alice", "read"), request_id).body)])
        assert outcome(send(authorizer, request))[0] == "allow"
    assert authorizer.decided == 2


def test_a_dry_run_deny_is_answered_for_any_id_as_the_allow_it_is(build):
    profiles = cast()
    profiles["alice"]["mode"] = "dry-run"
    authorizer = build(profiles)
    for request_id in (1, 2):
        assert outcome(send(authorizer, numbered(use_tool("alice", "admin"), request_id))) == (
            "would_deny",
            "tool_not_allowed",
        )
    assert authorizer.decided == 1


# --- what must miss -------------------------------------------------------------------------


def test_another_tool_or_caller_is_decided_on_its_own(build):
    authorizer = build()
    assert outcome(send(authorizer, use_tool("alice", "read"))) == ("allow", "allowed")
    assert outcome(send(authorizer, use_tool("alice", "admin"))) == ("deny", "tool_not_allowed")
    assert outcome(send(authorizer, use_tool("bob", "read", source=principal("alice")))) == (
        "allow",
        "allowed",
    )  # alice's identity
    assert outcome(send(authorizer, use_tool("alice", "read", source=principal("mallory")))) == (
        "deny",
        "unknown_caller",
    )
    assert authorizer.decided == 3


def test_a_header_that_a_when_reads_is_part_of_the_key(build):
    profiles = cast()
    profiles["alice"]["when"] = 'request.headers["x-tenant"] == "acme"'
    authorizer = build(profiles)
    assert outcome(send(authorizer, use_tool("alice", "read"), **{"x-tenant": "acme"}))[0] == "allow"
    assert outcome(send(authorizer, use_tool("alice", "read"), **{"x-tenant": "evil"}))[0] == "deny"
    assert outcome(send(authorizer, use_tool("alice", "read")))[0] == "deny"


def test_headers_read_in_a_way_the_text_cannot_tell_make_every_header_count(build):
    profiles = cast()
    profiles["alice"]["when"] = 'request.headers.exists(name, name == "x-approved")'
    authorizer = build(profiles)
    assert authorizer.decided == 0
    assert outcome(send(authorizer, use_tool("alice", "read"), **{"x-approved": "1"}))[0] == "allow"
    assert outcome(send(authorizer, use_tool("alice", "read")))[0] == "deny"


def test_the_chain_header_is_part_of_the_key(build):
    authorizer = build()
    token = send(authorizer, call_agent("alice", "bob")).ok_response.headers
    bobs = next(option.header.value for option in token if option.header.key == CHAIN_HEADER)
    assert outcome(send(authorizer, use_tool("bob", "delete")))[0] == "allow"  # on its own behalf
    assert outcome(send(authorizer, use_tool("bob", "delete", bobs))) == (
        "deny",
        "tool_not_allowed",
    )  # alice may not delete
    assert outcome(send(authorizer, use_tool("bob", "delete", bobs + "0"))) == ("deny", "chain_forged")


def test_pseudo_headers_count_when_envoy_leaves_method_path_or_host_empty(build):
    """The key holds method, path and host as the decision reads them: the field, or the
    pseudo-header standing in for it when the field is empty."""
    authorizer = build()

    def send_blank(**pseudo: str) -> CheckResponse:
        check = to_check_request(use_tool("alice", "read"))
        http = check.attributes.request.http
        http.method = http.path = http.host = ""
        http.headers.update(pseudo)
        return CheckResponse.FromString(authorizer.check_bytes(check.SerializeToString()))

    tools = {":method": "POST", ":path": "/mcp", ":authority": TOOLS_HOST}
    assert outcome(send_blank(**tools)) == ("allow", "allowed")
    assert outcome(send_blank(**{**tools, ":authority": "elsewhere.example"}))[0] == "deny"
    assert authorizer.decided == 2
    for name, other in ((":method", "GET"), (":path", "/mcp/")):
        send_blank(**{**tools, name: other})
    assert authorizer.decided == 4
    assert outcome(send_blank(**tools)) == ("allow", "allowed") and authorizer.decided == 4


def test_a_caller_known_only_from_istio_metadata_is_decided_every_time(build):
    """Without a source principal the caller is read from Istio's metadata, by protobuf: such
    requests are not keyed (wire.py), so one caller's answer never reaches another."""
    authorizer = build()
    for caller, expected in (("alice", "allow"), ("mallory", "deny"), ("alice", "allow")):
        request = use_tool("alice", "read")
        request.source_principal, request.istio_authn_principal = "", principal(caller)
        assert outcome(send(authorizer, request))[0] == expected
    assert authorizer.decided == 3


def test_a_policy_reload_starts_an_empty_cache(build, policy_dir):
    authorizer = build()
    assert outcome(send(authorizer, use_tool("alice", "write")))[0] == "allow"
    profiles = cast()
    profiles["alice"]["tools"] = ["read"]
    authorizer.authorizer.policy = compile_directory(policy_dir(profiles))
    assert outcome(send(authorizer, use_tool("alice", "write"))) == ("deny", "tool_not_allowed")


def test_text_echoed_from_the_request_survives_reuse_even_when_it_looks_like_a_decision_id(build):
    authorizer = build()
    lookalike = "0123456789abcdef"  # a decision id's shape: only the answer's own id is replaced
    first = send(authorizer, use_tool("alice", lookalike))
    assert lookalike in orjson.loads(first.denied_response.body)["error"]["message"]
    for _ in range(2):
        again = send(authorizer, use_tool("alice", decision_id(first)))  # even the id of an earlier answer
        assert decision_id(first) in orjson.loads(again.denied_response.body)["error"]["message"]
        assert header(again, "x-mandate-decision-id") == decision_id(again) != decision_id(first)
    assert authorizer.decided == 2  # the second request was decided once, then re-used


def test_headers_sent_as_a_header_map_are_decided_every_time(build):
    authorizer = build()
    for _ in range(2):
        check = to_check_request(use_tool("alice", "read"))
        http = check.attributes.request.http
        for key, value in http.headers.items():
            http.header_map.headers.add(key=key, raw_value=value.encode())
        http.ClearField("headers")
        assert outcome(CheckResponse.FromString(authorizer.check_bytes(check.SerializeToString()))) == (
            "allow",
            "allowed",
        )
    assert authorizer.decided == 2


# --- chains: the answer lives only as long as what it relied on --------------------------------


def minted(response: CheckResponse) -> str:
    return header(response, CHAIN_HEADER)


def test_a_revoked_chain_is_refused_although_its_answer_was_cached(build, store):
    authorizer = build()
    bobs = minted(send(authorizer, call_agent("alice", "bob")))
    assert outcome(send(authorizer, use_tool("bob", "read", bobs)))[0] == "allow"
    store.revoke(authorizer.chains.keys.verify(bobs))
    assert outcome(send(authorizer, use_tool("bob", "read", bobs))) == ("deny", "chain_revoked")
    assert outcome(send(authorizer, call_agent("bob", "carol", bobs))) == ("deny", "chain_revoked")


def test_a_cached_hand_on_is_not_repeated_once_its_own_chain_is_revoked(build, store):
    authorizer = build()
    first = minted(send(authorizer, call_agent("alice", "bob")))
    store.revoke(authorizer.chains.keys.verify(first))
    second = minted(send(authorizer, call_agent("alice", "bob")))
    assert second and second != first  # a fresh chain, not the revoked one again


def test_an_expired_chain_is_refused_although_its_answer_was_cached(build, clock):
    authorizer = build()
    bobs = minted(send(authorizer, call_agent("alice", "bob")))
    assert outcome(send(authorizer, use_tool("bob", "read", bobs)))[0] == "allow"
    clock.now += 15 * 60 + 1  # chainTTL
    assert outcome(send(authorizer, use_tool("bob", "read", bobs))) == ("deny", "chain_unknown")


def test_a_token_is_handed_out_again_only_within_the_reuse_window(build, clock):
    authorizer = build()
    first = minted(send(authorizer, call_agent("alice", "bob")))
    clock.now += MINT_REUSE_SECONDS - 1
    assert minted(send(authorizer, call_agent("alice", "bob"))) == first
    clock.now += 2
    assert minted(send(authorizer, call_agent("alice", "bob"))) not in ("", first)


def test_an_unreachable_store_refuses_cached_chained_answers_and_they_come_back(build, store):
    authorizer = build()
    bobs = minted(send(authorizer, call_agent("alice", "bob")))
    assert outcome(send(authorizer, use_tool("bob", "read", bobs)))[0] == "allow"
    store.up = False
    assert outcome(send(authorizer, use_tool("bob", "read", bobs))) == ("deny", "chain_store_unavailable")
    assert outcome(send(authorizer, call_agent("alice", "bob"))) == ("deny", "chain_store_unavailable")
    assert outcome(send(authorizer, use_tool("alice", "read")))[0] == "allow"  # no chain involved
    store.up = True
    assert outcome(send(authorizer, use_tool("bob", "read", bobs)))[0] == "allow"  # the refusal was not kept


def test_after_a_store_reconnect_a_token_is_minted_again(build, store):
    authorizer = build()
    first = minted(send(authorizer, call_agent("alice", "bob")))
    store.generation += 1  # records written before may be gone
    second = minted(send(authorizer, call_agent("alice", "bob")))
    assert second not in ("", first)


def test_a_refusal_about_a_verified_chain_is_kept_only_while_the_chain_holds(build, policy_dir, store):
    """Red-team finding 2: a refusal raised while judging a verified token (here the delegation
    was withdrawn by a reload) was kept without its chain record, so it outlived a revocation.
    Both profiles in dry-run: the kept answer was `would_deny` (allowed) where a fresh decision
    is 403 `chain_revoked`, and integrity is never dry-run."""
    dry = {
        "alice": {"tools": ["read"], "agents": [{"agent": "bob"}], "mode": "dry-run"},
        "bob": {"tools": ["read"], "mode": "dry-run"},
    }
    authorizer = build(dry)
    bobs = minted(send(authorizer, call_agent("alice", "bob")))
    withdrawn = {**dry, "alice": {"tools": ["read"], "mode": "dry-run"}}
    authorizer.authorizer.policy = compile_directory(policy_dir(withdrawn))
    for _ in range(2):
        assert outcome(send(authorizer, use_tool("bob", "read", bobs))) == ("would_deny", "delegation_withdrawn")
    store.revoke(authorizer.chains.keys.verify(bobs))
    assert outcome(send(authorizer, use_tool("bob", "read", bobs))) == ("deny", "chain_revoked")


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("attributes", "tls_session"), b"\x02\x00"),  # a field numbered 0 inside tls_session
        (("attributes", "source"), field(1, b"\x0a\x05ab")),  # source.address, its socket address cut short
        (("attributes", "request", "http"), field(6, b"\xff\xfe")),  # request.http.scheme, not UTF-8
    ],
)
def test_a_message_protobuf_refuses_is_refused_even_when_its_read_fields_were_answered_before(build, path, bad):
    """Red-team finding 7: the byte walk reads a dozen fields; when only fields it skips were
    malformed, the kept answer for the read fields was given to a message protobuf refuses."""
    authorizer = build()
    check = to_check_request(use_tool("alice", "read"))
    assert outcome(CheckResponse.FromString(authorizer.check_bytes(check.SerializeToString())))[0] == "allow"
    if path[-1] == "tls_session":
        check.attributes.tls_session.sni = "tools.local"  # present, so the bad field lands inside it
        assert outcome(CheckResponse.FromString(authorizer.check_bytes(check.SerializeToString())))[0] == "allow"
    answer = CheckResponse.FromString(authorizer.check_bytes(inject(check, path, bad)))
    assert outcome(answer) == ("deny", "invalid_check_request")
    assert answer.denied_response.status.code == 400


def test_an_untrusted_forwarded_client_cert_is_not_in_the_key(build):
    """Red-team finding 5: the key held `x-forwarded-client-cert` whole, so unique 60 KiB values
    grew the cache by gigabytes. It is read only for a request without a source principal,
    which the cache never answers: another value is the same decision, answered from the cache."""
    authorizer = build()
    for index in range(20):
        xfcc = f"By=spiffe://x;URI=spiffe://cluster.local/ns/evil/sa/{index}{'a' * 60_000}"
        assert outcome(send(authorizer, use_tool("alice", "admin"), **{"x-forwarded-client-cert": xfcc}))[0] == "deny"
    assert authorizer.decided == 1


def test_the_cache_is_bounded_in_bytes_and_keeps_no_key_over_its_limit(build, policy_dir):
    """Headers a `when` reads are in the key: unique long values are decided afresh, never kept,
    and what is kept stays under the byte bound (finding 5)."""
    reads_header = {"alice": {"tools": ["read"], "when": 'request.headers["x-tenant"] != "blocked"'}}
    authorizer = build(reads_header)
    cache = authorizer._snapshot.cache
    for index in range(30):
        send(authorizer, use_tool("alice", "read"), **{"x-tenant": f"{index}" + "t" * 40_000})
    assert authorizer.decided == 30 and len(cache._answers) == 0
    for index in range(300):
        send(authorizer, use_tool("alice", "read"), **{"x-tenant": f"{index}" + "t" * 8_000})
    assert 0 < cache._answers.cost <= cache._answers.max_cost and len(cache._answers) <= 100


# --- which headers a `when` reads ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "headers"),
    [
        ('request.headers["x-tenant"] == "a"', {"x-tenant"}),
        ("request.headers['x-tenant'] == 'a'", {"x-tenant"}),
        ('request.headers.tenant == "a"', {"tenant"}),
        ("has(request.headers.tenant)", {"tenant"}),
        ('"x-tenant" in request.headers', {"x-tenant"}),
        ('request.headers["a"] == "1" && request . headers["b"] == "2"', {"a", "b"}),
        ('request.method == "GET"', set()),
        ('request.method == "GET" && mcp.tool.name == "request.headers"', None),  # a string: told apart only safely
        ('request.headers.exists(k, k == "a")', None),
        ("request.headers.size() > 2", None),
        ('request.headers["a" + "b"] == "x"', None),
        ('request.headers["a\\"b"] == "x"', None),
        ('request["headers"]["a"] == "x"', {"a"}),
        ('"a" in request.headers == true', None),  # `in` and `==` bind alike: not told apart, so any header
        ('"a" + "x" in request.headers', None),  # the key is "ax", not "x"
        ('request.method == "x" in request.headers', None),  # (method == "x") in headers
        ('!("x" in request.headers) || ("y" in request.headers)', {"x", "y"}),
        ('request.headers[mcp.tool.name] == "x"', None),
    ],
)
def test_the_headers_an_expression_reads(expression: str, headers: set[str] | None):
    found = Condition(expression).headers
    assert (None if found is None else set(found)) == headers


def test_the_example_policies_cache_on_a_fixed_set_of_headers(example_policy):
    cache = Authorizer(example_policy)._snapshot.cache
    assert cache.headers is not None and b"x-request-id" not in cache.headers and CHAIN_HEADER.encode() in cache.headers


def test_settings_choose_the_chain_header_in_the_key(write_policies):
    directory = write_policies(**documents(cast(), {"chainHeader": "x-chain"}))
    cache = Authorizer(compile_directory(directory))._snapshot.cache
    assert cache.headers is not None and b"x-chain" in cache.headers and CHAIN_HEADER.encode() not in cache.headers
