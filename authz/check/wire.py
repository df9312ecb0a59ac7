"""Step 1, the fast way: the fields Mandate reads, walked out of the CheckRequest's bytes.

The decision cache needs a key on every request, and a request decided afresh needs its
`AuthzInput`; both want the same dozen fields. Reading them back through protobuf's Python
objects costs several times what walking the wire bytes for just those fields does
(ANALYSIS.md, "The byte walk"); protobuf still parses every message first, to refuse what it
refuses (`pipeline.check_bytes`).

The walk is only defined for the encoding Envoy produces: each message and field it reads
appears once, with its declared wire type. Anything else — a repeated singular field (which
protobuf would merge or overwrite), an unexpected wire type, a truncated field, a field
numbered 0, Envoy's `header_map`, a header map entry with a third field (protobuf keeps it out
of the map), a header that is not UTF-8, no source principal (the caller is then Istio's,
from the metadata) — gives None, and the request goes the protobuf way (`request.py`). So
what `read_wire` returns is exactly what protobuf reads from those fields, and protobuf has
parsed the whole message before the walk is asked (a message it refuses never gets this far).
"""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3.base_pb2 import Metadata
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf.descriptor import Descriptor

_LEN: Final = 2  # the wire type of strings, bytes and messages
_MAX_FIELD_NUMBER: Final = (1 << 29) - 1


def _number(message: Descriptor, name: str) -> int:
    return int(message.fields_by_name[name].number)


_ATTRIBUTES: Final = _number(CheckRequest.DESCRIPTOR, "attributes")
_SOURCE: Final = _number(AttributeContext.DESCRIPTOR, "source")
_DESTINATION: Final = _number(AttributeContext.DESCRIPTOR, "destination")
_REQUEST: Final = _number(AttributeContext.DESCRIPTOR, "request")
_METADATA_CONTEXT: Final = _number(AttributeContext.DESCRIPTOR, "metadata_context")
_FILTER_METADATA: Final = _number(Metadata.DESCRIPTOR, "filter_metadata")
_JWT_AUTHN: Final = b"envoy.filters.http.jwt_authn"  # request.JWT_AUTHN: the claims Envoy's jwt_authn verified
_PRINCIPAL: Final = _number(AttributeContext.Peer.DESCRIPTOR, "principal")
_HTTP: Final = _number(AttributeContext.Request.DESCRIPTOR, "http")
_ID: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "id")
_METHOD: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "method")
_HEADERS: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "headers")
_PATH: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "path")
_HOST: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "host")
_BODY: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "body")
_RAW_BODY: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "raw_body")
_HEADER_MAP: Final = _number(AttributeContext.HttpRequest.DESCRIPTOR, "header_map")


_isascii: Final = bytes.isascii  # called directly: compiled code looks a method up on every call


class _NotEnvoys(Exception):
    """The payload is not in the shape the walk is defined for."""


class WireRequest:
    """What the walk found: each field's bytes (b"" when absent), the headers, and the serialized
    Struct Envoy's jwt_authn filter left in the metadata context (b"" when absent)."""

    __slots__ = (
        "body",
        "destination_principal",
        "headers",
        "host",
        "id",
        "jwt_authn",
        "method",
        "path",
        "raw_body",
        "source_principal",
    )

    def __init__(
        self,
        source_principal: bytes,
        destination_principal: bytes,
        method: bytes,
        path: bytes,
        host: bytes,
        body: bytes,
        raw_body: bytes,
        id: bytes,
        headers: dict[bytes, bytes],
        jwt_authn: bytes = b"",
    ) -> None:
        self.source_principal, self.destination_principal = source_principal, destination_principal
        self.method, self.path, self.host, self.body, self.raw_body, self.id = method, path, host, body, raw_body, id
        self.headers, self.jwt_authn = headers, jwt_authn


def read_wire(payload: bytes) -> WireRequest | None:
    """The fields of the serialized CheckRequest `payload` that Mandate reads; None when it is
    not encoded as Envoy encodes it (see above)."""
    try:
        return _walk(payload)
    except _NotEnvoys:
        return None


def _walk(payload: bytes) -> WireRequest:
    if len(payload) > 0xFFFFFFFF:
        raise _NotEnvoys  # a span's end must fit in 32 bits
    attributes = _one(payload, len(payload), _ATTRIBUTES)  # the span 0..len(payload): the whole message
    source, destination, request, metadata = _attribute_context(payload, attributes)
    caller = _value(payload, _one(payload, source, _PRINCIPAL))
    if not caller:
        raise _NotEnvoys
    headers: dict[bytes, bytes] = {}
    method, path, host, body, raw_body, id = _http_request(payload, _one(payload, request, _HTTP), headers)
    return WireRequest(
        caller,
        _value(payload, _one(payload, destination, _PRINCIPAL)),
        _value(payload, method),
        _value(payload, path),
        _value(payload, host),
        _value(payload, body),
        _value(payload, raw_body),
        _value(payload, id),
        headers,
        _value(payload, _jwt_authn(payload, metadata)),
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
            raise _NotEnvoys
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
    if not 1 <= tag >> 3 <= _MAX_FIELD_NUMBER:
        raise _NotEnvoys  # protobuf refuses the message
    wire_type = tag & 7
    if wire_type == _LEN:
        length, start = _varint(data, pos, end)
        if length > end - start:
            raise _NotEnvoys
        return tag >> 3, wire_type, start, start + length
    if wire_type == 0:
        _, after = _varint(data, pos, end)
        return tag >> 3, wire_type, pos, after
    if wire_type == 1 or wire_type == 5:
        after = pos + (8 if wire_type == 1 else 4)
        if after > end:
            raise _NotEnvoys
        return tag >> 3, wire_type, pos, after
    raise _NotEnvoys  # groups (3, 4) and the undefined 6, 7


def _once(found: int, wire_type: int, start: int, end: int) -> int:
    """The span of a LEN field met at `start`..`end`, which must be the first of its number."""
    if wire_type != _LEN or found != -1:
        raise _NotEnvoys
    return start << 32 | end


def _bounds(span: int) -> tuple[int, int]:
    return (0, 0) if span == -1 else (span >> 32, span & 0xFFFFFFFF)


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
    """AttributeContext's source, destination, request and metadata context."""
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
        elif field == _METADATA_CONTEXT:
            metadata = _once(metadata, wire_type, start, pos)
    return source, destination, request, metadata


def _jwt_authn(data: bytes, span: int) -> int:
    """The span of the Struct under `filter_metadata["envoy.filters.http.jwt_authn"]`, -1 when
    absent. The key sent twice (protobuf keeps the last) is not Envoy's encoding."""
    found = -1
    pos, end = _bounds(span)
    while pos < end:
        field, wire_type, start, pos = _field(data, pos, end)
        if field == _FILTER_METADATA:
            entry = _once(-1, wire_type, start, pos)
            key, value = _entry_spans(data, entry)
            if _value(data, key) == _JWT_AUTHN:
                found = _once(found, _LEN, *_bounds(value))  # no value: an empty Struct, as protobuf reads it
    return found


def _http_request(data: bytes, span: int, entries: dict[bytes, bytes]) -> tuple[int, int, int, int, int, int]:
    """HttpRequest's method, path, host, body, raw_body and id; its header map into `entries`."""
    method = path = host = body = raw_body = id = -1
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
        elif field == _ID:
            id = _once(id, wire_type, start, pos)
        elif field == _HEADER_MAP:
            raise _NotEnvoys
    return method, path, host, body, raw_body, id


def _utf8(text: bytes) -> None:
    """Protobuf refuses a message with a string that is not UTF-8, and Mandate denies it; a
    header is where a client's bytes reach the CheckRequest (see above)."""
    if not _isascii(text):
        try:
            text.decode()
        except UnicodeDecodeError:
            raise _NotEnvoys from None


def _entry(data: bytes, span: int) -> tuple[bytes, bytes]:
    """One map entry's key (field 1) and value (field 2)."""
    key, value = _entry_spans(data, span)
    return _value(data, key), _value(data, value)


def _entry_spans(data: bytes, span: int) -> tuple[int, int]:
    """The spans of a map entry's key and value. Protobuf moves an entry with any other field
    out of the map (into the message's unknown fields), so the walk refuses it."""
    key = value = -1
    pos, end = _bounds(span)
    while pos < end:
        field, wire_type, start, pos = _field(data, pos, end)
        if field == 1:
            key = _once(key, wire_type, start, pos)
        elif field == 2:
            value = _once(value, wire_type, start, pos)
        else:
            raise _NotEnvoys
    return key, value
