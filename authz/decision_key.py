"""The decision cache's key, read straight from the serialized CheckRequest.

A cache hit should cost less than the decision it saves, and on a hit Mandate needs only the
few fields a decision depends on. Parsing the whole CheckRequest with protobuf and reading
those fields back through its Python objects took three quarters of a cache hit's time in the
server (BENCHMARKS.md); walking the wire bytes for just those fields takes a fraction of it.

The key is only defined for the encoding Envoy produces: each message and field we read
appears once, with its declared wire type. Anything else — a repeated singular field (which
protobuf would merge or overwrite), an unexpected wire type, a truncated field, Envoy's
`header_map`, a header that is not UTF-8 — gets no key, and the request is decided afresh
from the parsed message (or refused, when protobuf cannot parse it). So two requests with
equal keys carry equal values in every field `request.from_check_request` reads for a
decision. A hit does not parse the rest of the message: a field no decision reads is not
checked (Envoy writes them; what a client sends reaches the CheckRequest as headers, path,
host and body, and those are).
"""

from __future__ import annotations

from typing import Final

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf.descriptor import Descriptor

# Which of the key's pseudo-headers stand in for method, path and host when Envoy leaves those empty.
PSEUDO_HEADERS: Final = (":method", ":path", ":authority")
_LEN: Final = 2  # the wire type of strings, bytes and messages


def _number(message: Descriptor, name: str) -> int:
    return int(message.fields_by_name[name].number)


_ATTRIBUTES: Final = _number(CheckRequest.DESCRIPTOR, "attributes")
_SOURCE: Final = _number(AttributeContext.DESCRIPTOR, "source")
_DESTINATION: Final = _number(AttributeContext.DESCRIPTOR, "destination")
_REQUEST: Final = _number(AttributeContext.DESCRIPTOR, "request")
_METADATA: Final = _number(AttributeContext.DESCRIPTOR, "metadata_context")
_PRINCIPAL: Final = _number(AttributeContext.Peer.DESCRIPTOR, "principal")
_HTTP: Final = _number(AttributeContext.Request.DESCRIPTOR, "http")
_METHOD: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "method")
_HEADERS: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "headers")
_PATH: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "path")
_HOST: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "host")
_BODY: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "body")
_RAW_BODY: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "raw_body")
_HEADER_MAP: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "header_map")


class _NoKey(Exception):
    """The payload is not in the shape the key is defined for."""


def decision_key(payload: bytes, headers: tuple[bytes, ...] | None, max_body: int) -> tuple[object, ...] | None:
    """The values of every field a decision can depend on, as raw bytes: the source principal
    (or, without one, Istio's metadata), the destination principal, method, path, host, both
    bodies, the pseudo-headers and `headers` (the header names that matter, UTF-8; None: every
    header). None when the request has no key (see above) or a body over `max_body` bytes."""
    try:
        return _key(payload, headers, max_body)
    except _NoKey:
        return None


def _key(payload: bytes, headers: tuple[bytes, ...] | None, max_body: int) -> tuple[object, ...] | None:
    if len(payload) > 0xFFFFFFFF:
        raise _NoKey  # a span's end must fit in 32 bits
    attributes = _one(payload, len(payload), _ATTRIBUTES)  # the span 0..len(payload): the whole message
    source, destination, request, metadata = _attribute_context(payload, attributes)
    entries: dict[bytes, bytes] = {}
    method, path, host, body, raw_body = _http_request(payload, _one(payload, request, _HTTP), entries)
    if _length(raw_body) > max_body or _length(body) > max_body:
        return None
    if headers is None:
        chosen: tuple[object, ...] = tuple(sorted(entries.items()))
    else:
        chosen = tuple([entries.get(name) for name in headers])
    caller = _value(payload, _one(payload, source, _PRINCIPAL))
    return (
        # Without a source principal the caller is Istio's, read from the metadata: all of it counts.
        caller, None if caller else _value(payload, metadata),
        _value(payload, _one(payload, destination, _PRINCIPAL)),
        _value(payload, method), _value(payload, path), _value(payload, host), _value(payload, raw_body), _value(payload, body),
        entries.get(b":method"), entries.get(b":path"), entries.get(b":authority"), *chosen,
    )


# A field's value is located by one int, its span: its start shifted left by 32, plus its end;
# -1 when the field is absent. The functions below read the fields of the message in a span.


def _value(payload: bytes, span: int) -> bytes:
    start, end = _bounds(span)
    return payload[start:end]


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    if pos < end and data[pos] < 0x80:  # most are one byte: tags, and lengths under 128
        return data[pos], pos + 1
    value = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _NoKey
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _field(data: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """The field at `pos`: its number, its wire type, where its value starts (for LEN: after the
    length) and where the next field starts."""
    tag, pos = _varint(data, pos, end)
    wire_type = tag & 7
    if wire_type == _LEN:
        length, start = _varint(data, pos, end)
        if length > end - start:
            raise _NoKey
        return tag >> 3, wire_type, start, start + length
    if wire_type == 0:
        _, after = _varint(data, pos, end)
        return tag >> 3, wire_type, pos, after
    if wire_type == 1 or wire_type == 5:
        after = pos + (8 if wire_type == 1 else 4)
        if after > end:
            raise _NoKey
        return tag >> 3, wire_type, pos, after
    raise _NoKey  # groups (3, 4) and the undefined 6, 7


def _once(found: int, wire_type: int, start: int, end: int) -> int:
    """The span of a LEN field met at `start`..`end`, which must be the first of its number."""
    if wire_type != _LEN or found != -1:
        raise _NoKey
    return start << 32 | end


def _bounds(span: int) -> tuple[int, int]:
    return (0, 0) if span == -1 else (span >> 32, span & 0xFFFFFFFF)


def _length(span: int) -> int:
    start, end = _bounds(span)
    return end - start


def _one(data: bytes, span: int, number: int) -> int:
    """The span of field `number` of the message in `span`."""
    found = -1
    pos, end = _bounds(span)
    while pos < end:
        field, wire_type, start, pos = _field(data, pos, end)
        if field == number:
            found = _once(found, wire_type, start, pos)
    return found


def _attribute_context(data: bytes, span: int) -> tuple[int, int, int, int]:
    """AttributeContext's source, destination, request and metadata_context."""
    source = destination = request = metadata = -1
    pos, end = _bounds(span)
    while pos < end:
        field, wire_type, start, pos = _field(data, pos, end)
        if field == _SOURCE:
            source = _once(source, wire_type, start, pos)
        elif field == _DESTINATION:
            destination = _once(destination, wire_type, start, pos)
        elif field == _REQUEST:
            request = _once(request, wire_type, start, pos)
        elif field == _METADATA:
            metadata = _once(metadata, wire_type, start, pos)
    return source, destination, request, metadata


def _http_request(data: bytes, span: int, entries: dict[bytes, bytes]) -> tuple[int, int, int, int, int]:
    """HttpRequest's method, path, host, body and raw_body; its header map into `entries`."""
    method = path = host = body = raw_body = -1
    pos, end = _bounds(span)
    while pos < end:
        field, wire_type, start, pos = _field(data, pos, end)
        if field == _HEADERS:
            name, value = _entry(data, _once(-1, wire_type, start, pos))
            _utf8(name)
            _utf8(value)
            entries[name] = value  # a name sent twice: the last wins, as in protobuf's own map
        elif field == _METHOD:
            method = _once(method, wire_type, start, pos)
        elif field == _PATH:
            path = _once(path, wire_type, start, pos)
        elif field == _HOST:
            host = _once(host, wire_type, start, pos)
        elif field == _BODY:
            body = _once(body, wire_type, start, pos)
        elif field == _RAW_BODY:
            raw_body = _once(raw_body, wire_type, start, pos)
        elif field == _HEADER_MAP:
            raise _NoKey
    return method, path, host, body, raw_body


def _utf8(text: bytes) -> None:
    """Protobuf refuses a message with a string that is not UTF-8, and Mandate denies it. A
    cache hit reads no more than the key's fields, which equal those of a request that parsed;
    but any header, in the key or not, can carry what a client sent: so headers are checked."""
    if not text.isascii():
        try:
            text.decode()
        except UnicodeDecodeError:
            raise _NoKey from None


def _entry(data: bytes, span: int) -> tuple[bytes, bytes]:
    """One map entry's key (field 1) and value (field 2)."""
    key = value = -1
    pos, end = _bounds(span)
    while pos < end:
        field, wire_type, start, pos = _field(data, pos, end)
        if field == 1:
            key = _once(key, wire_type, start, pos)
        elif field == 2:
            value = _once(value, wire_type, start, pos)
    return _value(data, key), _value(data, value)
