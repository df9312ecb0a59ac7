"""A2A requests read down to the method (SPEC §4.2, agent targets).

Both JSON-RPC method generations map onto the v1.0 names, so one rule
`methods: [SendMessage]` covers a v0.3 client's `message/send` too.

A request is read exactly as the agent's router will dispatch it, or refused: the method of a
JSON-RPC call comes from its body, of an HTTP+JSON call from its route, so a path read as the
wrong one hands the body's method a route's power (`POST /t:x/tasks/1:cancel` saying GetTask
ran CancelTask). The router mirrored is the one a2a-sdk 1.3 builds (`a2a.server.routes`), at
the paths the agent's profile declares (`spec.a2a`, SDK defaults otherwise): the card route,
the one JSON-RPC endpoint (`create_jsonrpc_routes(rpc_url=...)`), and the HTTP+JSON routes of
`create_rest_routes(path_prefix=...)` in Starlette's order, with the same patterns Starlette
compiles from them. A path none places is refused, never read as another binding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from authz.check.protocols.jsonrpc import JsonId, Malformed, parse_json, parse_messages
from authz.reasons import INVALID_JSONRPC, MISSING_BODY

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
# The card's well-known names (v1.0's, and v0.3's earlier one) are read as a card fetch under
# any prefix: no route `create_rest_routes` builds ends in them, whatever its `path_prefix`.
CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")

# The SDKs' defaults for what a profile's `spec.a2a` leaves out: `rpc_url` (a2a-sdk 1.3
# `DEFAULT_RPC_URL`, and what 0.3's A2AStarletteApplication/A2AFastAPIApplication served, v1.0
# and v0.3 names alike), `path_prefix` and `card_url` (`AGENT_CARD_WELL_KNOWN_PATH`).
DEFAULT_JSONRPC_PATH = "/"
DEFAULT_REST_PREFIX = ""
DEFAULT_CARD_PATH = "/.well-known/agent-card.json"

# `create_rest_routes(enable_v0_3_compat=True, path_prefix=P)`: v0.3's routes first, then
# v1.0's, each at P + its path, then those same v1.0 routes (P included) again inside
# `Mount("/{tenant}")`. Order matters: Starlette runs the first route whose pattern and verb
# both match.
REST_V03_ROUTES = (
    ("POST", "/v1/message:send", "SendMessage"),
    ("POST", "/v1/message:stream", "SendStreamingMessage"),
    ("POST", "/v1/tasks/{id}:cancel", "CancelTask"),
    ("GET", "/v1/tasks/{id}:subscribe", "SubscribeToTask"),
    ("POST", "/v1/tasks/{id}:subscribe", "SubscribeToTask"),
    ("GET", "/v1/tasks/{id}", "GetTask"),
    ("GET", "/v1/tasks/{id}/pushNotificationConfigs/{push_id}", "GetTaskPushNotificationConfig"),
    ("POST", "/v1/tasks/{id}/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
    ("GET", "/v1/tasks/{id}/pushNotificationConfigs", "ListTaskPushNotificationConfigs"),
    ("GET", "/v1/card", "GetExtendedAgentCard"),
)
REST_V1_ROUTES = (
    ("POST", "/message:send", "SendMessage"),
    ("POST", "/message:stream", "SendStreamingMessage"),
    ("POST", "/tasks/{id}:cancel", "CancelTask"),
    ("GET", "/tasks/{id}:subscribe", "SubscribeToTask"),
    ("POST", "/tasks/{id}:subscribe", "SubscribeToTask"),
    ("GET", "/tasks/{id}", "GetTask"),
    ("GET", "/tasks/{id}/pushNotificationConfigs/{push_id}", "GetTaskPushNotificationConfig"),
    ("DELETE", "/tasks/{id}/pushNotificationConfigs/{push_id}", "DeleteTaskPushNotificationConfig"),
    ("POST", "/tasks/{id}/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
    ("GET", "/tasks/{id}/pushNotificationConfigs", "ListTaskPushNotificationConfigs"),
    ("GET", "/tasks", "ListTasks"),
    ("GET", "/extendedAgentCard", "GetExtendedAgentCard"),
)
_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:path)?}")


def starlette_pattern(template: str) -> re.Pattern[str]:
    """Starlette's `compile_path`, for the two converters these routes use: literals escaped,
    `{name}` as `[^/]+` (so `:` is part of an id or tenant), `{name:path}` as `.*`, anchored.
    `/tasks/{id}:cancel` is therefore `^/tasks/(?P<id>[^/]+):cancel$`, id `a:b` included."""
    regex, end = "^", 0
    for param in _PARAM.finditer(template):
        converter = ".*" if param.group(2) else "[^/]+"
        regex += re.escape(template[end : param.start()]) + f"(?P<{param.group(1)}>{converter})"
        end = param.end()
    return re.compile(regex + re.escape(template[end:]) + "$")


Routes = dict[str, tuple[tuple[re.Pattern[str], str], ...]]


def _by_verb(prefix: str, routes: tuple[tuple[str, str, str], ...]) -> Routes:
    """Routes at `prefix` + their path, grouped by verb, in order: only a route of the request's
    verb can end Starlette's search; another verb's is at most a PARTIAL match, answered 405 (or
    the mount takes the path): never a dispatch."""
    verbs = {verb for verb, _, _ in routes}
    return {
        verb: tuple((starlette_pattern(prefix + path), method) for v, path, method in routes if v == verb)
        for verb in verbs
    }


_TENANT_MOUNT = starlette_pattern("/{tenant}/{path:path}")  # Mount("/{tenant}") appends `/{path:path}`


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


@dataclass(frozen=True, slots=True)
class A2aRouter:
    """The router one agent's a2a-sdk app builds, at the paths its profile declares (`spec.a2a`).

    The app is the one `add_a2a_routes_to_fastapi` assembles: the card route
    (`create_agent_card_routes(card_url=card_path)`), the JSON-RPC endpoint
    (`create_jsonrpc_routes(rpc_url=jsonrpc_path)`, POST only), then
    `create_rest_routes(path_prefix=rest_prefix)`. The route tables are derived, so two equal
    declarations are equal routers."""

    jsonrpc_path: str
    rest_prefix: str
    card_path: str
    top_routes: Routes = field(compare=False, repr=False)
    tenant_routes: Routes = field(compare=False, repr=False)

    def __init__(
        self,
        jsonrpc_path: str = DEFAULT_JSONRPC_PATH,
        rest_prefix: str = DEFAULT_REST_PREFIX,
        card_path: str = DEFAULT_CARD_PATH,
    ) -> None:
        object.__setattr__(self, "jsonrpc_path", jsonrpc_path)
        object.__setattr__(self, "rest_prefix", rest_prefix)
        object.__setattr__(self, "card_path", card_path)
        object.__setattr__(self, "top_routes", _by_verb(rest_prefix, REST_V03_ROUTES + REST_V1_ROUTES))
        object.__setattr__(self, "tenant_routes", _by_verb(rest_prefix, REST_V1_ROUTES))

    def rest_method(self, http_method: str, path: str) -> str | None:
        """The method the SDK's HTTP+JSON router runs for `path`, or None where it runs none (404,
        405, a slash redirect). As Starlette does: the first top-level route matching path and
        verb; else `Mount("/{tenant}")`, which takes every path of two or more segments and
        answers with its own first match on the rest (the prefix is inside the mount, as the SDK
        builds it: `/{tenant}{path_prefix}/tasks`), or 404. Starlette adds HEAD to GET routes;
        Mandate does not read HEAD as GET, so a HEAD is refused."""
        for route, method in self.top_routes.get(http_method, ()):
            if route.match(path):
                return method
        mounted = _TENANT_MOUNT.match(path)
        if mounted is None:
            return None
        rest = "/" + mounted.group("path")
        for route, method in self.tenant_routes.get(http_method, ()):
            if route.match(rest):
                return method
        return None


def routed_path(raw_path: str) -> str:
    """The path an ASGI server gives the agent's router: the query cut, percent-decoded once,
    nothing resolved (uvicorn and Starlette leave `.`, `..` and `//` as sent). Where it differs
    from Mandate's normalised path, Mandate would be reading a different request."""
    path = raw_path.split("?", 1)[0]
    return unquote(path) if "%" in path else path


def classify_a2a(http_method: str, path: str, body: bytes, content_type: str, router: A2aRouter) -> list[A2aAction]:
    """The A2A call(s) a request makes; raises Malformed (400) or UnsupportedBinding (403).

    `path` is the one the agent's router sees (see `routed_path`). JSON-RPC is read at the one
    path the agent serves it on, never at a POST no route places. The card is read at its
    declared path, or any path ending in a well-known name: neither is an HTTP+JSON route (the
    compiler holds the declared one to that), and the card needs least privilege."""
    if http_method == "POST" and path == router.jsonrpc_path and "grpc" not in content_type:
        return [_jsonrpc_action(body)]
    if http_method == "GET" and (path == router.card_path or path.endswith(CARD_PATHS)):
        return [A2aAction("", path, "card")]
    method = router.rest_method(http_method, path)
    if method is None:
        raise UnsupportedBinding(
            f"{http_method} {path[:200]} is neither the agent's JSON-RPC endpoint (POST {router.jsonrpc_path}) "
            "nor an HTTP+JSON route"
        )
    if body:
        parse_json(body)  # hygiene only: the route names the method
    return [A2aAction(method, f"{http_method} {path}", "http+json")]


def _jsonrpc_action(body: bytes) -> A2aAction:
    """The one call a JSON-RPC body makes: A2A defines no batches, and servers take no responses."""
    if not body:
        raise Malformed(MISSING_BODY, "A2A JSON-RPC request has no body")
    messages, is_batch = parse_messages(body)
    if is_batch:
        raise Malformed(INVALID_JSONRPC, "A2A does not define JSON-RPC batches", None)
    message = messages[0]
    if message.is_response:
        raise Malformed(INVALID_JSONRPC, "A2A servers do not take JSON-RPC responses", message.id)
    return A2aAction(to_v1_method(message.method) or "", message.method, "jsonrpc", message.id)
