"""Strict JSON-RPC 2.0 reading, shared by MCP and A2A (SPEC §4.3).

Parsers disagree on duplicate keys, NaN and lone surrogates; a request the authorizer reads
one way and the upstream another is an authorization bypass. So anything a strict reader
would question is refused here, before any rule looks at it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

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

    # Written out so that mypyc compiles it: dataclass's generated __init__ runs as Python, ~10x slower.
    def __init__(self, method: str, id: JsonId, params: dict[str, Any], is_response: bool = False) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "is_response", is_response)

    @property
    def is_notification(self) -> bool:
        return not self.is_response and self.id is None


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


# --- the id's place in the bytes (for the decision cache) -----------------------------------

# Bytes as Final ints, compared one by one: compiled, that is a machine comparison each.
_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_COLON: Final = 0x3A
_COMMA: Final = 0x2C
_OPEN_OBJECT: Final = 0x7B
_CLOSE_OBJECT: Final = 0x7D
_OPEN_ARRAY: Final = 0x5B
_CLOSE_ARRAY: Final = 0x5D
_MAX_ID_DIGITS: Final = 18  # always inside the 64-bit range `_message` accepts


def id_span(body: bytes) -> tuple[int, int] | None:
    """Where the value of the top-level `"id"` member of a JSON object lies in `body`, when
    that value is an integer of at most 18 digits or a string of printable ASCII without
    escapes (so its bytes are all there is to it); None otherwise.

    Clients number their requests, so two calls that ask for the same thing differ only there;
    the decision cache keys on the rest. The walk follows JSON's strings and brackets, so an
    `"id"` nested in the params or inside a string is never taken for the top-level one. It
    stops at the first top-level `"id"`; a body that repeats it is refused by the strict reader.
    """
    end = len(body)
    pos = _skip_space(body, 0)
    if pos >= end or body[pos] != _OPEN_OBJECT:  # not an object: a batch, or not JSON-RPC
        return None
    depth = 0
    while pos < end:
        byte = body[pos]
        if byte == _QUOTE:
            after = _string_end(body, pos)
            if after < 0:
                return None
            if depth == 1 and after - pos == 4 and body[pos + 1] == 0x69 and body[pos + 2] == 0x64:  # "id"
                colon = _skip_space(body, after)
                if colon < end and body[colon] == _COLON:
                    return _id_value(body, _skip_space(body, colon + 1))
            pos = after
        else:
            if byte == _OPEN_OBJECT or byte == _OPEN_ARRAY:
                depth += 1
            elif byte == _CLOSE_OBJECT or byte == _CLOSE_ARRAY:
                depth -= 1
            pos += 1
    return None


def _id_value(body: bytes, start: int) -> tuple[int, int] | None:
    end = len(body)
    pos = start
    if pos < end and body[pos] == _QUOTE:
        pos += 1
        while pos < end and 0x20 <= body[pos] <= 0x7E and body[pos] != _QUOTE and body[pos] != _BACKSLASH:
            pos += 1
        if pos >= end or body[pos] != _QUOTE:
            return None
        pos += 1
    else:
        if pos < end and body[pos] == 0x2D:  # -
            pos += 1
        digits = pos
        while pos < end and 0x30 <= body[pos] <= 0x39:
            pos += 1
        count = pos - digits
        if not 1 <= count <= _MAX_ID_DIGITS or (count > 1 and body[digits] == 0x30):
            return None
    follows = _skip_space(body, pos)
    if follows < end and (body[follows] == _COMMA or body[follows] == _CLOSE_OBJECT):  # the member ends here
        return start, pos
    return None


def _skip_space(body: bytes, pos: int) -> int:
    end = len(body)
    while pos < end and (body[pos] == 0x20 or body[pos] == 0x0A or body[pos] == 0x0D or body[pos] == 0x09):
        pos += 1
    return pos


def _string_end(body: bytes, start: int) -> int:
    """The position after the string opening at `start`; -1 when it never closes."""
    end = len(body)
    pos = start + 1
    while pos < end:
        byte = body[pos]
        if byte == _QUOTE:
            return pos + 1
        pos += 2 if byte == _BACKSLASH else 1  # an escape: the next byte is never the closing quote
    return -1


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
            raise Malformed(
                INVALID_JSONRPC, "JSON-RPC message has no method and is not a response", request_id
            )
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
