"""read_wire walks the serialized CheckRequest by hand: whenever it reads a request, what it
read is exactly what protobuf's own parse says those fields are, or the decision cache could
answer one request with another's decision, and a fresh decision could judge another request
than the one Envoy asked about."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.struct_pb2 import Struct
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from authz.check.decision_cache import PSEUDO_HEADERS
from authz.check.decision_cache import decision_key as key_of_wire
from authz.check.jsonrpc_id import id_span
from authz.check.pipeline import Authorizer
from authz.check.request import DECIDING_HEADERS, JWT_AUTHN, AuthzInput, from_check_request, from_wire, to_check_request
from authz.check.wire import read_wire
from tests.harness.answers import outcome
from tests.harness.chain_cast import principal
from tests.harness.protowire import field as any_field
from tests.harness.requests import use_tool

MAX_BODY = 64
NAMES = (*DECIDING_HEADERS, *PSEUDO_HEADERS, "x-request-id", "x-when-reads-this", "user-agent")
KEY_HEADERS = tuple(name.encode() for name in (*DECIDING_HEADERS, "x-when-reads-this"))
text = st.text(max_size=12)
# Bodies whose JSON-RPC id the key leaves out (or not: a null id, an id nested in the params)
jsonrpc_bodies = st.builds(
    lambda request_id, inner: b'{"jsonrpc":"2.0","id":%s,"params":{"id":%s}}' % (request_id, inner),
    st.sampled_from([b"1", b"22", b'"a"', b"null"]),
    st.sampled_from([b"1", b"2"]),
)


def length_at(headers: tuple[bytes, ...] | None) -> int | None:
    return None if headers is None else headers.index(b"content-length")


def decision_key(payload: bytes, headers: tuple[bytes, ...] | None, max_body: int) -> tuple[object, ...] | None:
    wire = read_wire(payload)
    return None if wire is None else key_of_wire(wire, headers, max_body, length_at(headers))[0]


def claims_of(metadata: bytes | Struct | None) -> object:
    """Envoy's verified claims as protobuf reads them, as canonical JSON: the key holds their bytes
    as sent, which parse to this. (Bytes would not do: re-serializing what protobuf parsed need not
    give back the same bytes, and a map entry with a field of its own stays an opaque unknown field,
    which the claims never show.)"""
    if metadata is None:
        return None
    parsed = Struct.FromString(metadata) if isinstance(metadata, bytes) else metadata
    return json_format.MessageToJson(parsed, sort_keys=True, indent=0)


def readable(key: tuple[object, ...] | None) -> tuple[object, ...] | None:
    """A key with its jwt_authn bytes (third) parsed."""
    return None if key is None else (*key[:2], claims_of(key[2] or None), *key[3:])


def same_input(walked: AuthzInput, parsed: AuthzInput) -> bool:
    claims = (claims_of(walked.jwt_authn or None), claims_of(parsed.jwt_authn or None))
    walked.jwt_authn = parsed.jwt_authn = b""
    return walked == parsed and claims[0] == claims[1]


def reference(check: CheckRequest, headers: tuple[bytes, ...] | None) -> tuple[object, ...]:
    """The key as protobuf's parse reads the fields (the JSON-RPC id and Content-Length treated
    as `decision_key` does: test_decision_cache.py tests that treatment), jwt_authn's claims parsed."""
    attributes = check.attributes
    http = attributes.request.http
    fields = {name.encode(): value.encode() for name, value in http.headers.items()}
    chosen: list[object] = sorted(fields.items()) if headers is None else [fields.get(name) for name in headers]
    raw_body, body = http.raw_body, http.body.encode()
    read = raw_body or body
    span = id_span(read) if b'"jsonrpc"' in read else None
    if span is not None:
        cut = read[: span[0]] + read[span[1] :]
        raw_body, body = (cut, body) if raw_body else (raw_body, cut)
    at = length_at(headers) if span is not None else None  # without an id left out, the body is keyed whole
    declared = chosen[at] if at is not None else None
    if isinstance(declared, bytes) and declared.isdigit() and len(declared.lstrip(b"0")) <= 18:
        chosen[at] = int(declared) - len(read)  # type: ignore[index]
    metadata = attributes.metadata_context.filter_metadata
    return (
        attributes.source.principal.encode(),
        attributes.destination.principal.encode(),
        claims_of(metadata[JWT_AUTHN]) if JWT_AUTHN in metadata and metadata[JWT_AUTHN].ByteSize() else None,
        http.method.encode(),
        http.path.encode(),
        http.host.encode(),
        raw_body,
        body,
        span is not None,
        fields.get(b":method"),
        fields.get(b":path"),
        fields.get(b":authority"),
        *chosen,
    )


@st.composite
def check_requests(draw: st.DrawFn) -> CheckRequest:
    """CheckRequests as Envoy sends them: the fields a key reads and some it must ignore."""
    check = CheckRequest()
    attributes = check.attributes
    attributes.source.principal = draw(st.sampled_from(["", "spiffe://a/ns/x/sa/y", "spiffe://a/ns/x/sa/z"]))
    attributes.source.address.socket_address.port_value = draw(st.integers(0, 65535))
    attributes.destination.principal = draw(text)
    if draw(st.booleans()):
        attributes.metadata_context.filter_metadata["istio_authn"].update({"source.principal": draw(text)})
    if draw(st.booleans()):  # claims Envoy's jwt_authn verified, under the issuer or Istio's "payload"
        claims = {"iss": draw(text), "sub": draw(text), "exp": draw(st.integers(0, 2**40)), "groups": [draw(text)]}
        attributes.metadata_context.filter_metadata[JWT_AUTHN].update({draw(st.sampled_from(["payload", "i"])): claims})
    attributes.context_extensions.update(draw(st.dictionaries(text, text, max_size=2)))
    attributes.request.time.seconds = draw(st.integers(0, 2**40))
    http = attributes.request.http
    http.id, http.method, http.path, http.host, http.scheme = (draw(text) for _ in range(5))
    http.headers.update(draw(st.dictionaries(st.sampled_from(NAMES), text, max_size=6)))
    body = draw(st.binary(max_size=MAX_BODY + 8) | jsonrpc_bodies)
    if draw(st.booleans()):
        http.raw_body = body
    else:
        http.body = body.decode("utf-8", "replace")
    http.size = draw(st.integers(-1, 2**31))
    return check


@settings(max_examples=400, deadline=None)
@given(check_requests(), st.sampled_from([KEY_HEADERS, None]))
def test_the_key_and_the_input_hold_what_protobuf_reads(check: CheckRequest, headers: tuple[bytes, ...] | None) -> None:
    payload = check.SerializeToString()
    wire = read_wire(payload)
    if not check.attributes.source.principal:
        assert wire is None  # the caller is Istio's, from the metadata: protobuf reads it
        return
    assert wire is not None and same_input(from_wire(wire, None), from_check_request(check))
    key = key_of_wire(wire, headers, MAX_BODY, length_at(headers))[0]
    http = check.attributes.request.http
    if max(len(http.raw_body), len(http.body.encode())) > MAX_BODY:
        assert key is None
    else:
        assert readable(key) == reference(check, headers)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """A payload Envoy would send, then bytes replaced, inserted or cut, or another message appended
    (which protobuf merges in: its singular fields win)."""
    payload = bytearray(draw(check_requests()).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(payload)))
        kind = draw(st.sampled_from(["replace", "insert", "cut", "append"]))
        if kind == "replace" and where < len(payload):
            payload[where] = draw(st.integers(0, 255))
        elif kind == "insert":
            payload[where:where] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "cut":
            del payload[where : where + draw(st.integers(1, 8))]
        else:
            payload += draw(check_requests()).SerializeToString()[: draw(st.integers(1, 200))]
    return bytes(payload)


@settings(max_examples=1500, deadline=None)
@given(mutations(), st.sampled_from([KEY_HEADERS, None]))
def test_any_payload_the_walk_reads_parses_to_what_it_read(payload: bytes, headers: tuple[bytes, ...] | None) -> None:
    """The soundness of the walk: bytes that are not Envoy's encoding are not read, or read as
    protobuf reads them."""
    wire = read_wire(payload)
    try:
        check = CheckRequest.FromString(payload)
    except (DecodeError, UnicodeError, ValueError):
        return  # denied as unreadable, and never kept (test_an_unreadable_request_is_never_kept)
    assume(wire is not None)
    assert same_input(from_wire(wire, None), from_check_request(check))
    assert readable(key_of_wire(wire, headers, 10_000, length_at(headers))[0]) == reference(check, headers)


def serialized(**fields: object) -> bytes:
    check = CheckRequest()
    http = check.attributes.request.http
    for name, value in fields.items():
        setattr(http, name, value)
    return check.SerializeToString()


def test_a_second_message_appended_is_not_keyed():
    """Protobuf merges a message appended to another: the second body wins. Keyed as the first,
    it would be answered with the first's decision."""
    allowed = to_check_request(use_tool("alice", "read")).SerializeToString()
    merged = allowed + serialized(
        raw_body=to_check_request(use_tool("alice", "delete_everything")).attributes.request.http.raw_body
    )
    assert decision_key(allowed, KEY_HEADERS, 4096) is not None
    assert decision_key(merged, KEY_HEADERS, 4096) is None
    assert b"delete_everything" in CheckRequest.FromString(merged).attributes.request.http.raw_body


@example(field="method")
@given(st.sampled_from(["method", "path", "host", "raw_body", "body"]))
def test_a_field_sent_twice_is_not_keyed(field: str) -> None:
    check = to_check_request(use_tool("alice", "read"))
    http = check.attributes.request.http
    twice = check.SerializeToString() + serialized(**{field: b"x" if field == "raw_body" else "x"})
    assert decision_key(twice, KEY_HEADERS, 4096) is None
    assert getattr(CheckRequest.FromString(twice).attributes.request.http, field) != getattr(http, field)


def field(number: int, value: bytes) -> bytes:
    """A length-delimited field, encoded by hand (values under 128 bytes)."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def test_a_header_sent_twice_in_one_map_is_keyed_as_protobuf_reads_it():
    """A map entry's name sent again: protobuf keeps the last value, and so must the key."""
    entries = (field(1, b"mcp-name") + field(2, value) for value in (b"read", b"delete_everything"))
    http = b"".join(field(3, entry) for entry in entries)
    source = field(1, field(4, b"spiffe://a/ns/x/sa/y"))
    payload = field(1, source + field(4, field(2, http)))
    check = CheckRequest.FromString(payload)
    assert check.attributes.request.http.headers["mcp-name"] == "delete_everything"
    key = decision_key(payload, KEY_HEADERS, 4096)
    assert key is not None and readable(key) == reference(check, KEY_HEADERS)


def test_a_header_entry_with_a_field_of_its_own_is_not_read():
    """Protobuf keeps a map entry that carries a third field out of the map (found by the
    property test above): read as a header, it would be a header protobuf does not see."""
    entry = field(1, b"mcp-name") + field(2, b"read") + field(3, b"extra")
    payload = field(1, field(1, field(4, b"spiffe://a/ns/x/sa/y")) + field(4, field(2, field(3, entry))))
    assert dict(CheckRequest.FromString(payload).attributes.request.http.headers) == {}
    assert read_wire(payload) is None


def test_a_field_numbered_zero_is_not_read():
    """Protobuf refuses field number 0 anywhere; a cache hit must not answer for such bytes."""
    payload = to_check_request(use_tool("alice", "read")).SerializeToString()
    assert read_wire(payload) is not None
    with pytest.raises(DecodeError):
        CheckRequest.FromString(payload + bytes([0x02, 0]))  # field 0, LEN, empty
    assert read_wire(payload + bytes([0x02, 0])) is None


def test_a_header_appended_in_another_message_is_not_keyed():
    check = to_check_request(use_tool("alice", "read"))
    twice = CheckRequest()
    twice.attributes.request.http.headers["mcp-name"] = "delete_everything"
    payload = check.SerializeToString() + twice.SerializeToString()
    assert decision_key(payload, KEY_HEADERS, 4096) is None


def test_a_principal_sent_twice_is_not_keyed():
    check = to_check_request(use_tool("alice", "read"))
    other = CheckRequest()
    other.attributes.source.principal = principal("mallory")
    assert decision_key(check.SerializeToString() + other.SerializeToString(), KEY_HEADERS, 4096) is None


def test_a_read_field_with_another_wire_type_is_not_keyed():
    """Protobuf keeps a field of the wrong wire type as an unknown field and leaves the field
    empty: such bytes get no key rather than one that reads them."""
    varint_principal = bytes([0x0A, 4, 0x0A, 2, 0x20, 0x41])  # attributes { source { 4: 0x41 as a varint } }
    assert CheckRequest.FromString(varint_principal).attributes.source.principal == ""
    assert decision_key(varint_principal, KEY_HEADERS, 4096) is None


def test_fields_no_decision_reads_leave_the_key_alone():
    """Envoy's request id, time and the caller's port differ on every request: they must not
    make every request a cache miss."""
    first, second = (to_check_request(use_tool("alice", "read")) for _ in range(2))
    for check, number in ((first, 1), (second, 2)):
        http = check.attributes.request.http
        http.id = str(number)
        http.headers["x-request-id"] = f"request-{number}"
        check.attributes.request.time.seconds = number
        check.attributes.source.address.socket_address.port_value = 40000 + number
    assert decision_key(first.SerializeToString(), KEY_HEADERS, 4096) == decision_key(
        second.SerializeToString(), KEY_HEADERS, 4096
    )
    assert decision_key(first.SerializeToString(), None, 4096) != decision_key(second.SerializeToString(), None, 4096)


def test_headers_sent_as_a_header_map_are_not_keyed():
    check = to_check_request(use_tool("alice", "read"))
    check.attributes.request.http.header_map.headers.add(key="mcp-name", raw_value=b"read")
    assert decision_key(check.SerializeToString(), KEY_HEADERS, 4096) is None


def test_an_unreadable_request_is_never_kept(example_policy):
    """Invalid UTF-8 where protobuf wants a string: the payload has a key (the walk reads bytes)
    but no parse. Its deny must not be kept for the readable request with the same key."""
    authorizer = Authorizer(example_policy)
    check = to_check_request(use_tool("alice", "read"))
    check.attributes.request.http.id = "\u00e9"
    good = check.SerializeToString()
    bad = good.replace("\u00e9".encode(), b"\xff\xfe")
    assert decision_key(bad, None, 4096) is not None
    assert outcome(CheckResponse.FromString(authorizer.check_bytes(bad)))[1] == "invalid_check_request"
    assert outcome(CheckResponse.FromString(authorizer.check_bytes(good)))[1] != "invalid_check_request"


def test_a_header_protobuf_cannot_read_is_refused_even_when_the_rest_was_answered_before(example_policy):
    """A client can put any byte in a header that no decision reads (user-agent); protobuf then
    refuses the whole CheckRequest, and a cached answer for the same key must not stand in."""
    authorizer = Authorizer(example_policy)
    check = to_check_request(use_tool("alice", "read"))
    check.attributes.request.http.headers["user-agent"] = "agent \u00e9"
    good = check.SerializeToString()
    bad = good.replace("\u00e9".encode(), b"\xff\xfe")
    first = outcome(CheckResponse.FromString(authorizer.check_bytes(good)))
    assert first[1] != "invalid_check_request"
    assert outcome(CheckResponse.FromString(authorizer.check_bytes(good))) == first  # now from the cache
    assert decision_key(bad, KEY_HEADERS, 4096) is None
    assert outcome(CheckResponse.FromString(authorizer.check_bytes(bad))) == ("deny", "invalid_check_request")


def jwt_authn_entry(claims: bytes, *extra: bytes) -> bytes:
    """A filter_metadata entry for Envoy's jwt_authn: its name, the Struct, and `extra` fields."""
    return any_field(1, any_field(1, JWT_AUTHN.encode()) + any_field(2, claims) + b"".join(extra))


def with_metadata(metadata: bytes) -> bytes:
    """A request from a caller with a source principal, and `metadata` as its metadata context."""
    source = any_field(1, any_field(4, b"spiffe://a/ns/x/sa/y"))
    return any_field(1, source + any_field(11, metadata))


def struct(**claims: object) -> bytes:
    value = Struct()
    value.update(claims)
    return value.SerializeToString()


def test_envoys_verified_claims_are_read_as_protobuf_reads_them():
    payload = with_metadata(jwt_authn_entry(struct(iss="i", sub="alice")))
    wire = read_wire(payload)
    assert wire is not None
    assert (
        Struct.FromString(wire.jwt_authn)
        == CheckRequest.FromString(payload).attributes.metadata_context.filter_metadata[JWT_AUTHN]
    )


@pytest.mark.parametrize(
    "metadata",
    [
        jwt_authn_entry(struct(sub="alice")) + jwt_authn_entry(struct(sub="mallory")),  # the name twice: the last wins
        jwt_authn_entry(struct(sub="alice"), any_field(2, struct(sub="mallory"))),  # the Struct twice: merged
    ],
    ids=["name twice", "value twice"],
)
def test_claims_sent_twice_are_not_read(metadata):
    """Protobuf keeps the last entry of a map name and merges a value sent twice: such bytes are
    decided the protobuf way, never keyed."""
    payload = with_metadata(metadata)
    parsed = CheckRequest.FromString(payload).attributes.metadata_context.filter_metadata[JWT_AUTHN]
    assert parsed.fields["sub"].string_value == "mallory"
    assert read_wire(payload) is None
    assert from_check_request(CheckRequest.FromString(payload)).jwt_authn == parsed.SerializeToString()


def test_a_metadata_context_sent_twice_is_not_read():
    payload = with_metadata(jwt_authn_entry(struct(sub="alice"))) + any_field(1, any_field(11, b""))
    assert read_wire(payload) is None
