"""A2A requests read down to the method (SPEC §4.2, agent targets).

Both JSON-RPC method generations map onto the v1.0 names, so one rule
`methods: [SendMessage]` covers a v0.3 client's `message/send` too. The HTTP+JSON binding is
read from its routes (the SDK's `google.api.http` annotations, with the optional
`/{tenant}` segment that also covers v0.3's `/v1/...` paths).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .jsonrpc import JsonId, Malformed, parse_json, parse_messages

V1_METHODS = (
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
)
V03_METHODS = {
    "message/send": "SendMessage",
    "message/stream": "SendStreamingMessage",
    "tasks/get": "GetTask",
    "tasks/list": "ListTasks",
    "tasks/cancel": "CancelTask",
    "tasks/resubscribe": "SubscribeToTask",
    "tasks/pushNotificationConfig/set": "CreateTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/get": "GetTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/list": "ListTaskPushNotificationConfigs",
    "tasks/pushNotificationConfig/delete": "DeleteTaskPushNotificationConfig",
    "agent/getAuthenticatedExtendedCard": "GetExtendedAgentCard",
}
# Earlier v1.0 drafts spelled a few names differently; they mean the same call.
_ALIASES = {
    "SetTaskPushNotificationConfig": "CreateTaskPushNotificationConfig",
    "ListTaskPushNotificationConfig": "ListTaskPushNotificationConfigs",
    "TaskSubscription": "SubscribeToTask",
}
A2A_METHODS = frozenset(V1_METHODS) | frozenset(V03_METHODS)
CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")

_TENANT = r"(?:/[^/:]+)?"
_ID = r"[^/:]+"
_REST_ROUTES = tuple(
    (verb, re.compile(f"^{_TENANT}{path}$"), method)
    for verb, path, method in (
        ("POST", "/message:send", "SendMessage"),
        ("POST", "/message:stream", "SendStreamingMessage"),
        ("POST", f"/tasks/{_ID}:cancel", "CancelTask"),
        ("GET", f"/tasks/{_ID}:subscribe", "SubscribeToTask"),
        ("POST", f"/tasks/{_ID}:subscribe", "SubscribeToTask"),
        ("POST", f"/tasks/{_ID}/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
        ("GET", f"/tasks/{_ID}/pushNotificationConfigs", "ListTaskPushNotificationConfigs"),
        ("GET", f"/tasks/{_ID}/pushNotificationConfigs/{_ID}", "GetTaskPushNotificationConfig"),
        ("DELETE", f"/tasks/{_ID}/pushNotificationConfigs/{_ID}", "DeleteTaskPushNotificationConfig"),
        ("GET", f"/tasks/{_ID}", "GetTask"),
        ("GET", "/tasks", "ListTasks"),
        ("GET", "/extendedAgentCard", "GetExtendedAgentCard"),
        ("GET", "/card", "GetExtendedAgentCard"),  # v0.3: GET /v1/card
    )
)


def to_v1_method(name: str) -> str | None:
    if name in V1_METHODS:
        return name
    return V03_METHODS.get(name) or _ALIASES.get(name)


@dataclass(frozen=True, slots=True)
class A2aAction:
    """One A2A call; `method` is the v1.0 name, or "" for fetching the agent card."""

    method: str
    wire_method: str
    binding: str  # jsonrpc | http+json | card
    id: JsonId = None

    # Written out so that mypyc compiles it: dataclass's generated __init__ runs as Python, ~10x slower.
    def __init__(self, method: str, wire_method: str, binding: str, id: JsonId = None) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "wire_method", wire_method)
        object.__setattr__(self, "binding", binding)
        object.__setattr__(self, "id", id)

    @property
    def is_card(self) -> bool:
        return self.binding == "card"


class UnsupportedBinding(Exception):
    pass


def classify_a2a(http_method: str, path: str, body: bytes, content_type: str) -> list[A2aAction]:
    """The A2A call(s) a request makes; raises Malformed (400) or UnsupportedBinding (403)."""
    if http_method == "GET" and path.endswith(CARD_PATHS):
        return [A2aAction("", path, "card")]
    for verb, route, method in _REST_ROUTES:
        if verb == http_method and route.match(path):
            if body:
                parse_json(body)  # hygiene only: the route names the method
            return [A2aAction(method, f"{http_method} {path}", "http+json")]
    if http_method != "POST" or "grpc" in content_type:
        raise UnsupportedBinding(f"{http_method} {path} is not A2A JSON-RPC or HTTP+JSON")
    if not body:
        raise Malformed("missing_body", "A2A JSON-RPC request has no body")
    messages, is_batch = parse_messages(body)
    if is_batch:
        raise Malformed("invalid_jsonrpc", "A2A does not define JSON-RPC batches", None)
    message = messages[0]
    if message.is_response:
        raise Malformed("invalid_jsonrpc", "A2A servers do not take JSON-RPC responses", message.id)
    v1_method = to_v1_method(message.method)
    return [A2aAction(v1_method or "", message.method, "jsonrpc", message.id)]
