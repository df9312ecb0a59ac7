"""The CheckResponse Envoy acts on and the body an agent's SDK reads (SPEC §6)."""

from __future__ import annotations

import orjson
import pytest
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from google.rpc import code_pb2

from authz.check.request import AuthzInput
from authz.check.response import build_response
from tests.harness.example_policies import GITHUB_HOST, ORCHESTRATOR, SUPPORT, TRIAGE
from tests.harness.requests import a2a, http, mcp, tool

CHAIN_HEADER = "x-delegation-chain"


def respond(authorizer, request: AuthzInput):
    decision = authorizer.decide(request)
    return decision, build_response(decision, CHAIN_HEADER)


def headers(options) -> dict[str, str]:
    return {option.header.key: option.header.value for option in options}


def test_allow_overwrites_caller_identity_and_fills_metadata(authorizer):
    request = tool("get_me")
    request.headers["x-caller-identity"] = "spiffe://cluster.local/ns/x/sa/admin"
    decision, response = respond(authorizer, request)
    assert response.status.code == code_pb2.OK and response.HasField("ok_response")
    set_headers = headers(response.ok_response.headers)
    assert set_headers["x-caller-identity"] == SUPPORT
    assert set_headers["x-mandate-decision-id"] == decision.id
    assert all(o.append_action == HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD for o in response.ok_response.headers)
    metadata = dict(response.dynamic_metadata.fields)
    assert metadata["decision_id"].string_value == decision.id
    assert metadata["profile"].string_value == "support-agent"
    assert metadata["rule"].string_value == "support-agent.mcp[0]"
    assert "chain_id" in metadata


def test_egress_allow_removes_the_chain_header(authorizer):
    _, response = respond(authorizer, http("GET", "api.github.com", "/zen"))
    assert CHAIN_HEADER in response.ok_response.headers_to_remove
    _, internal = respond(authorizer, tool("get_me"))
    assert CHAIN_HEADER not in internal.ok_response.headers_to_remove


@pytest.mark.parametrize("method", ["tools/list", "prompts/list", "resources/list", "resources/templates/list"])
def test_an_allowed_list_request_is_marked_for_the_response_filter(authorizer, method):
    """Envoy's exported config sends a response through ext_proc only when this header says so (SPEC §9)."""
    request = mcp(method)
    request.headers["x-mandate-filter"] = "something else"
    _, response = respond(authorizer, request)
    assert headers(response.ok_response.headers)["x-mandate-filter"] == "mcp-list"
    assert "x-mandate-filter" not in response.ok_response.headers_to_remove


def test_a_batch_with_one_list_request_is_marked_for_the_response_filter(authorizer):
    body = orjson.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_me"}},
            {"jsonrpc": "2.0", "id": 2, "method": "prompts/list"},
        ]
    )
    request = AuthzInput(method="POST", path="/mcp", host=GITHUB_HOST, body=body, source_principal=SUPPORT)
    _, response = respond(authorizer, request)
    assert headers(response.ok_response.headers)["x-mandate-filter"] == "mcp-list"


@pytest.mark.parametrize(
    "request_",
    [
        tool("get_me"),
        mcp("initialize"),
        mcp("ping"),
        a2a("SendMessage", principal=ORCHESTRATOR),
        http("GET", "api.github.com", "/zen"),
    ],
    ids=["tools/call", "initialize", "ping", "a2a", "egress"],
)
def test_every_other_allow_removes_the_filter_header_a_client_may_have_sent(authorizer, request_):
    """So a client cannot make Envoy open an ext_proc stream for a request that lists nothing."""
    request_.headers["x-mandate-filter"] = "mcp-list"
    _, response = respond(authorizer, request_)
    assert response.HasField("ok_response"), response
    assert "x-mandate-filter" in response.ok_response.headers_to_remove
    assert "x-mandate-filter" not in headers(response.ok_response.headers)


def test_jsonrpc_deny_is_an_error_object_with_the_request_id(authorizer):
    decision, response = respond(authorizer, tool("create_issue"))
    denied = response.denied_response
    assert denied.status.code == 403 and response.status.code == code_pb2.PERMISSION_DENIED
    assert headers(denied.headers)["x-mandate-decision-id"] == decision.id
    assert headers(denied.headers)["content-type"] == "application/json"
    body = orjson.loads(denied.body)
    assert body["jsonrpc"] == "2.0" and body["id"] == 1
    assert body["error"]["code"] == -32043
    assert "create_issue" in body["error"]["message"]
    assert body["error"]["data"] == {"reason": "tool_not_allowed", "decision_id": decision.id, "hop": "support-agent"}


def test_batch_deny_answers_every_id(authorizer):
    batch = orjson.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "create_issue"}} for i in (7, "b")]
    )
    _, response = respond(
        authorizer, AuthzInput(method="POST", path="/mcp", host=GITHUB_HOST, body=batch, source_principal=SUPPORT)
    )
    assert [item["id"] for item in orjson.loads(response.denied_response.body)] == [7, "b"]


def test_malformed_jsonrpc_gets_a_parse_error(authorizer):
    request = AuthzInput(method="POST", path="/mcp", host=GITHUB_HOST, body=b'{"a":1,"a":2}', source_principal=SUPPORT)
    _, response = respond(authorizer, request)
    body = orjson.loads(response.denied_response.body)
    assert response.denied_response.status.code == 400 and response.status.code == code_pb2.INVALID_ARGUMENT
    assert (
        body["id"] is None
        and body["error"]["code"] == -32700
        and body["error"]["data"]["reason"] == "duplicate_json_key"
    )


def test_unauthenticated_jsonrpc(authorizer):
    _, response = respond(authorizer, tool("get_me", principal=""))
    body = orjson.loads(response.denied_response.body)
    assert response.denied_response.status.code == 401 and response.status.code == code_pb2.UNAUTHENTICATED
    assert body["error"]["code"] == -32041 and body["error"]["data"]["reason"] == "no_identity"


def test_plain_deny_is_json_with_error_reason_decision_id(authorizer):
    decision, response = respond(authorizer, http("DELETE", "api.github.com", "/zen"))
    body = orjson.loads(response.denied_response.body)
    assert set(body) == {"error", "reason", "decision_id", "hop"}  # hop: whose scope refused, as in JSON-RPC data
    assert body["reason"] == "egress_not_allowed" and body["decision_id"] == decision.id
    assert body["hop"] == "support-agent"
    assert "DELETE /zen" in body["error"]


def test_a2a_deny_echoes_string_ids(authorizer):
    _, response = respond(authorizer, a2a("CancelTask"))
    assert orjson.loads(response.denied_response.body)["id"] == "x"


def test_dry_run_deny_is_allowed_but_recorded_as_would_deny(authorizer):
    _decision, response = respond(authorizer, tool("delete_repo", principal=TRIAGE))
    assert response.HasField("ok_response")
    assert response.dynamic_metadata.fields["decision"].string_value == "would_deny"


def test_messages_never_reveal_another_profiles_rules(authorizer):
    """The deny names the caller's own profile and the action, not what others may do."""
    _, response = respond(
        authorizer,
        a2a(
            "SendMessage",
            principal="spiffe://cluster.local/ns/agents/sa/orchestrator",
            host="billing-agent.billing.svc.cluster.local",
        ),
    )
    assert response.HasField("ok_response")
    _, denied = respond(authorizer, tool("refund"))
    text = denied.denied_response.body
    assert "lookup_invoice" not in text and "billing-agent" not in text
