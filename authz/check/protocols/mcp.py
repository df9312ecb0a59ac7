"""MCP over Streamable HTTP, read down to the tool, resource or prompt (SPEC §4.2).

Covers every revision from 2025-03-26 (which alone allows batches) to 2026-07-28 (which
adds the `Mcp-Method` / `Mcp-Name` routing headers that must agree with the body).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from authz.check.protocols.jsonrpc import JsonId, Malformed, Message, parse_messages
from authz.reasons import (
    BATCH_NOT_ALLOWED,
    INVALID_HEADER,
    INVALID_PARAMS,
    MCP_HEADER_MISMATCH,
    MISSING_BODY,
    UNSUPPORTED_HTTP_METHOD,
)

BATCH_REVISION = "2025-03-26"
_PLUMBING = frozenset({"initialize", "ping", "server/discover", "subscriptions/listen"})
# 2026-07-28 wraps header values that would not survive HTTP as `=?base64?<payload>?=`.
_SENTINEL_START, _SENTINEL_END = "=?base64?", "?="
_SENTINEL_LENGTH = len(_SENTINEL_START) + len(_SENTINEL_END)  # "=?base64?=" is not one
# The lists whose answers Mandate's ext_proc filters (SPEC §9): Envoy sends only their answers to it.
LIST_METHODS = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list"})
# MCP authorization discovery (SPEC §10): session plumbing, whatever the target's pathPrefix.
_PROTECTED_RESOURCE = "/.well-known/oauth-protected-resource"
_DISCOVERY = frozenset(
    {_PROTECTED_RESOURCE, "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"}
)
# Methods whose subject is named by params.uri rather than params.name.
_URI_METHODS = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})


@dataclass(frozen=True, slots=True)
class McpAction:
    """One MCP message. `kind` says which rule list decides it.

    tool / resource / prompt: `name` is the tool name, resource URI or prompt name;
    plumbing: session traffic any rule for the server allows; method: needs `methods`.
    """

    method: str
    kind: str
    name: str = ""
    id: JsonId = None
    arguments: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self, method: str, kind: str, name: str = "", id: JsonId = None, arguments: dict[str, Any] | None = None
    ) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "arguments", {} if arguments is None else arguments)


def is_discovery(http_method: str, path: str) -> bool:
    """A GET of the OAuth metadata an MCP client reads before it has a token (`path` normalised)."""
    return http_method == "GET" and (path in _DISCOVERY or path.startswith(_PROTECTED_RESOURCE + "/"))


def classify_mcp(http_method: str, headers: dict[str, str], body: bytes) -> tuple[list[McpAction], bool]:
    """The actions in one Streamable HTTP request, and whether they came as a batch."""
    if http_method in ("GET", "DELETE"):  # the SSE stream and ending a session
        return [McpAction(f"HTTP {http_method}", "plumbing")], False
    if http_method != "POST":
        raise Malformed(UNSUPPORTED_HTTP_METHOD, f"MCP Streamable HTTP has no {http_method} requests")
    if not body:
        raise Malformed(MISSING_BODY, "MCP POST has no body")
    messages, is_batch = parse_messages(body)
    revision = headers.get("mcp-protocol-version", "")
    if is_batch and revision not in ("", BATCH_REVISION):
        raise Malformed(
            BATCH_NOT_ALLOWED,
            f"JSON-RPC batches ended with MCP {BATCH_REVISION}; this client speaks {revision[:40]!r}",
        )
    actions = [_action(message) for message in messages]
    _check_routing_headers(headers, messages, is_batch)
    return actions, is_batch


def _action(message: Message) -> McpAction:
    method, params, request_id = message.method, message.params, message.id
    if message.is_response:
        return McpAction("response", "plumbing", id=request_id)
    if method == "tools/call":
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise Malformed(INVALID_PARAMS, "tools/call arguments must be an object", request_id)
        return McpAction(method, "tool", _string(params, "name", request_id), request_id, arguments)
    if method == "resources/read":
        return McpAction(method, "resource", _string(params, "uri", request_id), request_id)
    if method == "prompts/get":
        return McpAction(method, "prompt", _string(params, "name", request_id), request_id)
    if method == "completion/complete":
        return _completion(params, request_id)
    if method in _PLUMBING or method.startswith("notifications/") or method.endswith("/list"):
        return McpAction(method, "plumbing", id=request_id)
    return McpAction(method, "method", method, request_id)


def _completion(params: dict[str, Any], request_id: JsonId) -> McpAction:
    ref = params.get("ref")
    if not isinstance(ref, dict):
        raise Malformed(INVALID_PARAMS, "completion/complete needs params.ref", request_id)
    if ref.get("type") == "ref/prompt":
        return McpAction("completion/complete", "prompt", _string(ref, "name", request_id), request_id)
    if ref.get("type") == "ref/resource":
        return McpAction("completion/complete", "resource", _string(ref, "uri", request_id), request_id)
    raise Malformed(INVALID_PARAMS, "completion/complete ref.type must be ref/prompt or ref/resource", request_id)


def _string(params: dict[str, Any], key: str, request_id: JsonId) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise Malformed(INVALID_PARAMS, f"params.{key} must be a non-empty string", request_id)
    return value


def _check_routing_headers(headers: dict[str, str], messages: list[Message], is_batch: bool) -> None:
    first = messages[0]
    method_header = decode_header_value("Mcp-Method", headers.get("mcp-method"), first.id)
    name_header = decode_header_value("Mcp-Name", headers.get("mcp-name"), first.id)
    if method_header is None and name_header is None:
        return
    if is_batch:
        raise Malformed(MCP_HEADER_MISMATCH, "Mcp-Method / Mcp-Name headers cannot describe a batch", first.id)
    if method_header is not None and method_header != first.method:
        raise Malformed(
            MCP_HEADER_MISMATCH,
            f"Mcp-Method header {method_header[:100]!r} disagrees with body method {first.method[:100]!r}",
            first.id,
        )
    if name_header is not None:
        key = "uri" if first.method in _URI_METHODS else "name"
        if name_header != first.params.get(key):
            raise Malformed(MCP_HEADER_MISMATCH, f"Mcp-Name header disagrees with params.{key} in the body", first.id)


def decode_header_value(name: str, value: str | None, request_id: JsonId = None) -> str | None:
    """The value an `Mcp-*` header stands for: as sent, or undone from its `=?base64?…?=` form.

    Anything else is refused (400 `invalid_header`), as the header standardisation SEP asks: a
    plain value of other than visible ASCII, or a base64 form that is not the canonical encoding
    of UTF-8. A reader more lenient than the servers and routers behind it could compare a name
    other than the one they act on."""
    if value is None:
        return None
    wrapped = len(value) >= _SENTINEL_LENGTH and value.startswith(_SENTINEL_START) and value.endswith(_SENTINEL_END)
    if wrapped:
        return _decode_base64(name, value[len(_SENTINEL_START) : -len(_SENTINEL_END)], request_id)
    if not (value.isascii() and value.isprintable()):
        raise Malformed(
            INVALID_HEADER,
            f"{name} header holds other than visible ASCII; such values are sent as =?base64?...?=",
            request_id,
        )
    return value


def _decode_base64(name: str, payload: str, request_id: JsonId) -> str:
    """The text a sentinel's payload encodes; only the one spelling a client writes is read."""
    if payload.isascii():
        try:
            decoded = base64.b64decode(payload, validate=True)
            if base64.b64encode(decoded).decode("ascii") == payload:
                return decoded.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            pass
    raise Malformed(
        INVALID_HEADER, f"{name} header's =?base64?...?= value is not canonical base64 of UTF-8 text", request_id
    )
