"""Strict JSON-RPC 2.0 reading, shared by MCP and A2A (SPEC §4.3).

Parsers disagree on duplicate keys, NaN and lone surrogates; a request the authorizer reads
one way and the upstream another is an authorization bypass. So anything a strict reader
would question is refused here, before any rule looks at it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from authz.reasons import DUPLICATE_JSON_KEY, EMPTY_BATCH, INVALID_JSON, INVALID_JSONRPC

JsonId = int | str | None


class Malformed(Exception):
    """Bad input: a 400 with `reason`; `request_id` lets the deny body echo the JSON-RPC id."""

    def __init__(self, reason: str, message: str, request_id: JsonId = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message: a request, a notification (no id) or a response the client posts."""

    method: str  # "" for a response
    id: JsonId
    params: dict[str, Any]
    is_response: bool = False

    def __init__(self, method: str, id: JsonId, params: dict[str, Any], is_response: bool = False) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "is_response", is_response)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise Malformed(DUPLICATE_JSON_KEY, f"JSON object repeats the key {key[:100]!r}")
            seen.add(key)
    return result


def _no_constants(name: str) -> Any:
    raise Malformed(INVALID_JSON, f"{name} is not JSON")


# One reader for every request: json.loads with hooks builds a new decoder (and scanner) per call.
_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(INVALID_JSON, "request body is not valid UTF-8") from None
    try:
        value = _STRICT.decode(text)
    except RecursionError:
        raise Malformed(INVALID_JSON, "request body nests JSON too deeply") from None
    except ValueError as exc:
        raise Malformed(INVALID_JSON, f"request body is not JSON: {exc}") from None
    if "\\u" in text and _has_lone_surrogate(value):
        raise Malformed(INVALID_JSON, "request body contains an unpaired UTF-16 surrogate escape")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    """`\\ud800` escapes decode to lone surrogates that other parsers replace or reject."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_messages(body: bytes) -> tuple[list[Message], bool]:
    """The messages in a POST body and whether it was a batch (a JSON array)."""
    try:
        value = parse_json(body)
    except Malformed as exc:
        if exc.reason == DUPLICATE_JSON_KEY:
            exc.request_id = _unambiguous_id(body)
        raise
    if isinstance(value, list):
        if not value:
            raise Malformed(EMPTY_BATCH, "an empty JSON-RPC batch is not allowed")
        return [_message(item) for item in value], True
    return [_message(value)], False


def peek_ids(http_method: str, body: bytes) -> tuple[JsonId, ...] | None:
    """The ids of a JSON-RPC POST refused before (or regardless of) its classification, so
    the deny still answers in JSON-RPC and the agent's SDK shows the reason; None otherwise."""
    if http_method.upper() != "POST" or not body:
        return None
    try:
        messages, _ = parse_messages(body)
    except Malformed:
        return None
    return tuple(message.id for message in messages)


def _unambiguous_id(body: bytes) -> JsonId:
    """The top-level id of a single message refused for a duplicate key elsewhere, so the
    error still reaches the right caller; None when `id` itself is repeated, or is a value the
    strict reader would refuse (a lone surrogate escape cannot even be written into the answer)."""
    try:
        pairs = json.loads(body.decode("utf-8"), object_pairs_hook=lambda items: items)
    except (ValueError, RecursionError):
        return None
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        return None
    ids = [value for key, value in pairs if key == "id"]
    if len(ids) != 1 or isinstance(ids[0], bool):
        return None
    found = ids[0]
    if isinstance(found, int):
        return found if -(2**63) <= found < 2**63 else None
    if isinstance(found, str):
        return None if _has_lone_surrogate(found) else found
    return None


def _message(value: Any) -> Message:
    if not isinstance(value, dict):
        raise Malformed(INVALID_JSONRPC, "a JSON-RPC message must be a JSON object")
    request_id = value.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (int, str))):
        raise Malformed(INVALID_JSONRPC, "JSON-RPC id must be a string or an integer")
    if isinstance(request_id, int) and not -(2**63) <= request_id < 2**63:
        raise Malformed(INVALID_JSONRPC, "JSON-RPC id is outside the 64-bit integer range")
    if value.get("jsonrpc") != "2.0":
        raise Malformed(INVALID_JSONRPC, 'JSON-RPC messages need "jsonrpc": "2.0"', request_id)
    method = value.get("method")
    if method is None:
        if "id" not in value or ("result" in value) == ("error" in value):
            raise Malformed(INVALID_JSONRPC, "JSON-RPC message has no method and is not a response", request_id)
        return Message("", request_id, {}, is_response=True)
    if not isinstance(method, str) or not method:
        raise Malformed(INVALID_JSONRPC, "JSON-RPC method must be a non-empty string", request_id)
    if "result" in value or "error" in value:
        raise Malformed(INVALID_JSONRPC, "JSON-RPC message is both a request and a response", request_id)
    params = value.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        if isinstance(params, list):
            params = {}  # by-position params name nothing a rule could match
        else:
            raise Malformed(INVALID_JSONRPC, "JSON-RPC params must be an object or an array", request_id)
    return Message(method, request_id, params)
