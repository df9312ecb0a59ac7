"""Step 3: which target is called, over which protocol, asking for what (SPEC §4).

The target comes from the destination's SPIFFE ID (sidecar inbound) or, when nobody claims
it (a waypoint or gateway answering with its own identity), the `:authority` host. The
target's kind then picks the reader: MCP, A2A, or plain path-and-method for egress/http.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.check.decision import Refusal
from authz.check.protocols.a2a import A2aAction, UnsupportedBinding, classify_a2a, routed_path
from authz.check.protocols.jsonrpc import JsonId, Malformed, peek_ids
from authz.check.protocols.mcp import McpAction, classify_mcp, is_discovery
from authz.check.protocols.paths import AmbiguousPath, host_key, normalize_path, under_prefix
from authz.check.request import AuthzInput
from authz.policy.compiled import CompiledTarget, PolicySet
from authz.reasons import AMBIGUOUS_PATH, PARTIAL_BODY, PATH_OUTSIDE_TARGET, UNKNOWN_TARGET, UNSUPPORTED_BINDING


@dataclass(frozen=True, slots=True)
class HttpAction:
    """An egress or plain HTTP call: method and normalised path."""

    method: str
    path: str

    def __init__(self, method: str, path: str) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "path", path)


Action = McpAction | A2aAction | HttpAction


@dataclass(frozen=True, slots=True)
class Classified:
    target: CompiledTarget
    protocol: str  # mcp | a2a | egress | http
    host: str
    path: str  # normalised, without the query
    actions: tuple[Action, ...]
    jsonrpc_ids: tuple[JsonId, ...] | None  # None: not JSON-RPC, so deny bodies are plain JSON

    def __init__(
        self,
        target: CompiledTarget,
        protocol: str,
        host: str,
        path: str,
        actions: tuple[Action, ...],
        jsonrpc_ids: tuple[JsonId, ...] | None,
    ) -> None:
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "protocol", protocol)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "jsonrpc_ids", jsonrpc_ids)


class MalformedRequest(Refusal):
    """A 400 that still knows how to answer in the request's own protocol."""

    def __init__(self, reason: str, message: str, jsonrpc_ids: tuple[JsonId, ...] | None) -> None:
        super().__init__(reason, message)
        self.jsonrpc_ids = jsonrpc_ids


def find_target(policy: PolicySet, request: AuthzInput) -> CompiledTarget:
    target = None
    if request.destination_principal:
        target = policy.targets_by_principal.get(request.destination_principal)
    if target is None:
        target = policy.targets_by_host.get(host_key(request.host))
    if target is None:
        raise Refusal(UNKNOWN_TARGET, f"no Target or agent profile claims host {request.host[:255]!r}")
    return target


def _early_ids(body: bytes, jsonrpc: bool) -> tuple[JsonId, ...] | None:
    """The ids a 400 raised before the body is read echoes, so a JSON-RPC caller's SDK shows why."""
    return (peek_ids("POST", body) or (None,)) if jsonrpc else None


def classify(policy: PolicySet, request: AuthzInput) -> Classified:
    target = find_target(policy, request)
    method = request.method.upper()
    jsonrpc = target.kind in ("mcp", "agent") and method == "POST"
    try:
        path = normalize_path(request.path)
    except AmbiguousPath as ambiguous:
        raise MalformedRequest(AMBIGUOUS_PATH, str(ambiguous), _early_ids(request.body, jsonrpc)) from None
    if target.kind == "agent" and path != routed_path(request.path):
        # The agent's router resolves no `.`, `..` or `//`: it would route another path than this one.
        message = f"path {request.path[:200]!r} is not the path the agent routes ({path[:200]!r})"
        raise MalformedRequest(AMBIGUOUS_PATH, message, _early_ids(request.body, jsonrpc))
    if target.kind == "mcp" and is_discovery(method, path):
        return Classified(target, "mcp", host_key(request.host), path, (McpAction("HTTP GET", "plumbing"),), None)
    if target.path_prefix and not under_prefix(path, target.path_prefix):
        raise Refusal(PATH_OUTSIDE_TARGET, f"path {path[:255]!r} is outside {target.name!r}'s {target.path_prefix}")
    if request.partial_body:
        raise MalformedRequest(
            PARTIAL_BODY,
            "request body was cut short by the proxy; raise maxRequestBytes or send less",
            (None,) if jsonrpc else None,
        )
    host = host_key(request.host)
    try:
        actions: tuple[Action, ...]
        if target.kind == "mcp":
            mcp_actions, _ = classify_mcp(method, request.headers, request.body)
            actions = tuple(mcp_actions)
            protocol = "mcp"
        elif target.a2a is not None:  # an agent: the compiler gives each the router its SDK app builds
            content_type = request.headers.get("content-type", "")
            a2a_actions = classify_a2a(method, path, request.body, content_type, target.a2a)
            actions = tuple(a2a_actions)
            protocol = "a2a"
            jsonrpc = a2a_actions[0].binding == "jsonrpc"
        else:
            actions = (HttpAction(method, path),)
            protocol = target.kind
    except Malformed as malformed:
        raise MalformedRequest(malformed.reason, str(malformed), (malformed.request_id,) if jsonrpc else None) from None
    except UnsupportedBinding as unsupported:
        raise Refusal(UNSUPPORTED_BINDING, str(unsupported)) from None
    ids = tuple(action.id for action in actions) if jsonrpc else None  # type: ignore[union-attr]
    return Classified(target, protocol, host, path, actions, ids)
