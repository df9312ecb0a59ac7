"""A2A classification: both JSON-RPC generations, HTTP+JSON routes, the agent card (SPEC §4)."""

from __future__ import annotations

import orjson
import pytest

from authz.protocols.a2a import V03_METHODS, V1_METHODS, UnsupportedBinding, classify_a2a, to_v1_method
from authz.protocols.jsonrpc import Malformed


def rpc(method: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": "r1", "method": method, "params": {}})


@pytest.mark.parametrize("method", V1_METHODS)
def test_v1_names(method):
    (action,) = classify_a2a("POST", "/", rpc(method), "application/json")
    assert (action.method, action.binding, action.id) == (method, "jsonrpc", "r1")


@pytest.mark.parametrize(("old", "new"), sorted(V03_METHODS.items()))
def test_v03_names_map_to_v1(old, new):
    (action,) = classify_a2a("POST", "/a2a", rpc(old), "application/json")
    assert (action.method, action.wire_method) == (new, old)


def test_unknown_method_is_kept_empty_for_the_decision_to_refuse():
    (action,) = classify_a2a("POST", "/", rpc("tasks/delete_everything"), "application/json")
    assert action.method == "" and action.binding == "jsonrpc"
    assert to_v1_method("sendmessage") is None


@pytest.mark.parametrize("path", ["/.well-known/agent-card.json", "/.well-known/agent.json", "/t1/.well-known/agent-card.json"])
def test_agent_card(path):
    (action,) = classify_a2a("GET", path, b"", "")
    assert action.is_card


@pytest.mark.parametrize(
    ("verb", "path", "method"),
    [
        ("POST", "/message:send", "SendMessage"),
        ("POST", "/tenant-a/message:stream", "SendStreamingMessage"),
        ("GET", "/tasks/abc", "GetTask"),
        ("GET", "/tasks", "ListTasks"),
        ("POST", "/tasks/abc:cancel", "CancelTask"),
        ("GET", "/tasks/abc:subscribe", "SubscribeToTask"),
        ("POST", "/tasks/abc/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
        ("GET", "/tasks/abc/pushNotificationConfigs", "ListTaskPushNotificationConfigs"),
        ("GET", "/tasks/abc/pushNotificationConfigs/c1", "GetTaskPushNotificationConfig"),
        ("DELETE", "/tasks/abc/pushNotificationConfigs/c1", "DeleteTaskPushNotificationConfig"),
        ("GET", "/extendedAgentCard", "GetExtendedAgentCard"),
        ("POST", "/v1/message:send", "SendMessage"),
        ("GET", "/v1/card", "GetExtendedAgentCard"),
    ],
)
def test_http_json_binding(verb, path, method):
    (action,) = classify_a2a(verb, path, b'{"message":{}}' if verb == "POST" else b"", "application/json")
    assert (action.method, action.binding) == (method, "http+json")


def test_rest_body_hygiene_still_applies():
    with pytest.raises(Malformed) as caught:
        classify_a2a("POST", "/message:send", b'{"a":1,"a":2}', "application/json")
    assert caught.value.reason == "duplicate_json_key"


@pytest.mark.parametrize(
    ("verb", "path", "content_type"),
    [("PUT", "/", "application/json"), ("GET", "/", ""), ("POST", "/a2a.v1.A2AService/SendMessage", "application/grpc")],
)
def test_other_bindings(verb, path, content_type):
    with pytest.raises(UnsupportedBinding):
        classify_a2a(verb, path, b"\x00\x00", content_type)


def test_batches_and_responses_are_not_a2a():
    with pytest.raises(Malformed):
        classify_a2a("POST", "/", b"[" + rpc("SendMessage") + b"]", "application/json")
    with pytest.raises(Malformed):
        classify_a2a("POST", "/", b'{"jsonrpc":"2.0","id":1,"result":{}}', "application/json")
