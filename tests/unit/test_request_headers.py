"""Shaping the forwarded request (SPEC §12): an allowed request leaves with the headers its rule
and Target set and remove, a denied one untouched; a templated or cached answer is the one built
afresh, before and after a secret file changes."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.check.decision import Decision, Verdict
from authz.check.pipeline import Authorizer
from authz.check.record import Recorder
from authz.check.request import AuthzInput, to_check_request
from authz.check.response import build_response
from authz.check.templates import ResponseTemplates
from authz.explain import DescribedRequest, explain, render_text
from authz.policy.compiler import compile_directory
from authz.policy.headers import RequestHeaders, compile_headers
from authz.policy.secrets import Secrets
from authz.serve.audit import AuditLog
from authz.serve.metrics import Metrics
from authz.serve.reload import PolicyWatcher
from authz.users.user import User
from tests.harness.answers import decision_id, outcome
from tests.harness.headers_policy import KEY_A, KEY_B, POLICY
from tests.harness.users import AUDIENCE, ISSUER, Idp, jwt_authn_metadata, principal, users_settings

OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
TOOLS, WEB = "tools.local", "api.example.com"


@pytest.fixture
def policy_dir(tmp_path: Path, write_policies: Callable[..., Path]) -> Path:
    (tmp_path / "key-a").write_text(KEY_A + "\n")
    (tmp_path / "key-b").write_text(KEY_B + "\n")
    jwks = Idp().write_jwks(tmp_path / "jwks.json")
    text = POLICY % {"key_a": tmp_path / "key-a", "key_b": tmp_path / "key-b"}
    return write_policies(a_settings=users_settings(jwks), policy=text)


def replace_atomically(path: Path, text: str) -> None:
    beside = path.with_name(path.name + ".new")
    beside.write_text(text)
    os.replace(beside, path)


def call(tool: str, caller: str = "alice", headers: dict[str, str] | None = None, sub: str = "") -> AuthzInput:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
    claims = {"iss": ISSUER, "sub": sub, "aud": AUDIENCE, "exp": int(time.time()) + 600}
    return AuthzInput(
        "POST",
        "/mcp",
        TOOLS,
        headers or {},
        body,
        principal(caller),
        jwt_authn=jwt_authn_metadata(claims) if sub else b"",
    )


def egress(caller: str, headers: dict[str, str] | None = None) -> AuthzInput:
    return AuthzInput("GET", "/v1/models", WEB, headers or {}, b"", principal(caller))


def answer(authorizer: Authorizer, request: AuthzInput) -> CheckResponse:
    return CheckResponse.FromString(authorizer.check_bytes(to_check_request(request).SerializeToString()))


def shaped(response: CheckResponse) -> tuple[dict[str, str], set[str]]:
    """The headers an allow sets (every one overwriting) and removes, Mandate's own left out."""
    ok = response.ok_response
    assert all(option.append_action == OVERWRITE for option in ok.headers)
    own = {"x-caller-identity", "x-mandate-decision-id", "x-mandate-filter", "x-delegation-chain"}
    set_headers = {option.header.key: option.header.value for option in ok.headers if option.header.key not in own}
    return set_headers, {name for name in ok.headers_to_remove if name not in own}


def test_an_allowed_call_leaves_with_its_rules_headers_over_its_targets(policy_dir: Path) -> None:
    response = answer(Authorizer(compile_directory(policy_dir)), call("read", headers={"x-caller": "forged"}))
    assert outcome(response) == ("allow", "allowed")
    assert shaped(response) == (
        {"x-tag": "tools", "x-who": "alice alice/alice", "x-decision": decision_id(response)},
        {"x-debug", "x-user", "x-caller"},  # no user: {user.sub} is empty, so x-user is removed
    )


def test_the_user_variable_is_the_requests_user(policy_dir: Path) -> None:
    response = answer(Authorizer(compile_directory(policy_dir)), call("read", sub="alice@example.com"))
    assert shaped(response)[0]["x-user"] == "alice@example.com"


def test_a_decision_from_the_cache_carries_its_own_decision_id(policy_dir: Path) -> None:
    authorizer = Authorizer(compile_directory(policy_dir))
    first, second = answer(authorizer, call("read")), answer(authorizer, call("read"))
    assert decision_id(first) != decision_id(second)
    assert shaped(second)[0]["x-decision"] == decision_id(second)


def test_a_denied_request_is_left_as_it_is(policy_dir: Path) -> None:
    response = answer(Authorizer(compile_directory(policy_dir)), call("write"))
    assert outcome(response) == ("deny", "tool_not_allowed")
    keys = {option.header.key for option in response.denied_response.headers}
    assert keys == {"x-mandate-decision-id", "content-type", "cache-control"}
    assert not response.HasField("ok_response")


def test_a_dry_run_would_deny_gets_only_its_targets_headers(policy_dir: Path) -> None:
    response = answer(Authorizer(compile_directory(policy_dir)), call("write", caller="bob"))
    assert outcome(response) == ("would_deny", "tool_not_allowed")
    assert shaped(response) == ({"x-caller": principal("bob"), "x-tag": "tools"}, {"x-debug"})


def test_the_audit_line_names_the_headers_an_answer_shaped_never_their_values(policy_dir: Path) -> None:
    """A dry-run `would_deny` still goes through with its Target's headers: its line says which."""
    stream = io.BytesIO()
    recorder = Recorder([AuditLog(stream).write])
    authorizer = Authorizer(compile_directory(policy_dir), recorder)
    answer(authorizer, call("write", caller="bob"))
    answer(authorizer, egress("alice", {"authorization": "Bearer agent-chosen"}))
    answer(authorizer, call("write"))
    recorder.close()
    would_deny, keyed, denied = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert would_deny["decision"] == "would_deny"
    assert (would_deny["headers_set"], would_deny["headers_removed"]) == (["x-caller", "x-tag"], ["x-debug"])
    assert keyed["headers_set"] == ["authorization"] and KEY_A not in stream.getvalue().decode()
    assert denied["decision"] == "deny" and "headers_set" not in denied


def test_each_team_sends_its_own_key_and_never_the_agents(policy_dir: Path) -> None:
    authorizer = Authorizer(compile_directory(policy_dir))
    alice = answer(authorizer, egress("alice", {"authorization": "Bearer agent-chosen"}))
    bob = answer(authorizer, egress("bob"))
    assert shaped(alice) == ({"authorization": f"Bearer {KEY_A}"}, set())
    assert shaped(bob) == ({"authorization": f"Bearer {KEY_B}"}, set())


def test_a_variable_that_brings_a_line_break_fails_closed(policy_dir: Path) -> None:
    response = answer(Authorizer(compile_directory(policy_dir)), call("read", sub="alice\r\nx-admin: yes"))
    assert outcome(response) == ("deny", "internal_error")


# --- templates and the decision cache give what building afresh gives ------------------------------


def headers_pool(secret_dir: Path) -> list[RequestHeaders | None]:
    (secret_dir / "pool-key").write_text("sk-pool")
    secrets = Secrets()
    written = [
        ({"x-a": "{caller.principal}|{profile}", "x-id": "id={decision_id}"}, ["x-b"]),
        ({"x-user": "{user.sub}", "x-ns": "{caller.namespace}/{caller.serviceAccount}"}, []),
        ({"authorization": f"Bearer {{secret:{secret_dir / 'pool-key'}}}", "x-lit": "{{x}}"}, ["cookie"]),
        ({}, ["x-debug", "x-other"]),
    ]
    return [None, *(compile_headers(to_set, to_remove, secrets)[0] for to_set, to_remove in written)]


@st.composite
def shaped_decisions(draw: Any, pool: list[RequestHeaders | None]) -> Decision:
    allowed = draw(st.booleans())
    reason = "allowed" if allowed else draw(st.sampled_from(["tool_not_allowed", "egress_not_allowed"]))
    sub = draw(st.sampled_from(["", "alice", "bob@example.com", "ünï"]))
    user = User(ISSUER, sub, {"sub": sub}, "{}", 1e12, "token") if sub else None
    caller = draw(st.sampled_from([principal("alice"), principal("bob"), "spiffe://cluster.local/workload/x", ""]))
    return Decision(
        os.urandom(8).hex(),
        Verdict(allowed, reason, "", 200 if allowed else 403, draw(st.sampled_from(["", "alice.mcp[0]"]))),
        caller=caller,
        profile=draw(st.sampled_from(["alice", "bob"])),
        target="tools",
        protocol="mcp",
        dry_run=draw(st.booleans()),
        jsonrpc_ids=(1,),
        user=user,
        request_headers=draw(st.sampled_from(pool)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_templated_answer_with_request_headers_is_the_built_one(tmp_path: Path, data: Any) -> None:
    pool = headers_pool(tmp_path)
    templates = ResponseTemplates("x-delegation-chain")
    for _ in range(6):  # shapes repeat: later decisions are joined from the templates of earlier ones
        decision = data.draw(shaped_decisions(pool))
        rendered = CheckResponse.FromString(templates.render(decision))
        assert rendered == build_response(decision, "x-delegation-chain")


def seen(response: bytes) -> tuple[object, ...]:
    """What Envoy sees, the decision id (random per answer) blanked."""
    answer = CheckResponse.FromString(response)
    decision = answer.dynamic_metadata.fields["decision_id"].string_value
    answer.dynamic_metadata.fields["decision_id"].string_value = ""
    return (answer.SerializeToString().replace(decision.encode(), b"<id>"),)


class Run:
    """Two Authorizers, each over its own load of one directory and its own watcher (as two
    replicas): one keeps answers, one decides every request afresh."""

    def __init__(self, directory: Path) -> None:
        self.cached = Authorizer(compile_directory(directory), decision_cache=10_000)
        self.fresh = Authorizer(compile_directory(directory), decision_cache=0)
        self.watchers = [PolicyWatcher(str(directory), each, Metrics()) for each in (self.cached, self.fresh)]

    def send(self, request: AuthzInput) -> bytes:
        payload = to_check_request(request).SerializeToString()
        for _ in range(2):  # the second time, the cache may answer
            cached, fresh = self.cached.check_bytes(payload), self.fresh.check_bytes(payload)
            assert seen(cached) == seen(fresh), request
        return cached

    def look(self) -> None:
        for watcher in self.watchers:
            watcher.refresh_secrets()


requests = st.one_of(
    st.builds(
        call,
        st.sampled_from(["read", "write"]),
        st.sampled_from(["alice", "bob", "carol"]),
        st.sampled_from([None, {"x-caller": "forged", "x-debug": "1"}]),
        st.sampled_from(["", "alice@example.com", "bob@example.com"]),
    ),
    st.builds(egress, st.sampled_from(["alice", "bob", "carol"]), st.sampled_from([None, {"authorization": "x"}])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.one_of(requests, st.sampled_from(["rotate", "delete", "empty"])), min_size=3, max_size=25))
def test_cached_answers_are_fresh_ones_before_and_after_a_secret_changes(policy_dir: Path, actions: list[Any]) -> None:
    key = policy_dir.parent / "key-a"
    replace_atomically(key, KEY_A)
    run, value = Run(policy_dir), KEY_A
    for number, action in enumerate(actions):
        if isinstance(action, AuthzInput):
            run.send(action)
            continue
        if action == "rotate":
            value = f"sk-rotated-{number}"
            replace_atomically(key, value)
        elif action == "delete":
            key.unlink(missing_ok=True)
        else:
            replace_atomically(key, "\n")
        run.look()
        authorization = shaped(CheckResponse.FromString(run.send(egress("alice"))))[0]["authorization"]
        assert authorization == f"Bearer {value}"  # the new value, or the last good one: never empty


def test_explain_shows_what_an_answer_does_to_the_headers_with_secrets_as_placeholders(policy_dir: Path) -> None:
    policy = compile_directory(policy_dir)
    allowed = explain(policy, DescribedRequest(egress("alice"), ()))
    assert allowed["request_headers"] == {
        "set": {"authorization": f"Bearer {{secret:{policy_dir.parent}/key-a}}"},
        "remove": [],
    }
    assert f"sets:     authorization: Bearer {{secret:{policy_dir.parent}/key-a}}" in render_text(allowed)
    no_user = explain(policy, DescribedRequest(call("read"), ()))["request_headers"]
    assert no_user["remove"] == ["x-user", "x-debug", "x-caller"] and "x-user" not in no_user["set"]
    assert explain(policy, DescribedRequest(call("write"), ()))["request_headers"] == {"set": {}, "remove": []}
    assert KEY_A not in str(allowed) and KEY_A not in render_text(allowed)
