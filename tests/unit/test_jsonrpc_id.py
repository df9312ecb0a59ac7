"""`jsonrpc.id_span` finds the top-level JSON-RPC id in a body's bytes, and nothing else.

The decision cache keys on a body without that span (test_decision_cache.py), so a span that
were any other value — an `id` in the params, in a string, in a nested object — would let one
request's answer reach another that differs where a rule may look. Bodies here are encoded by
`json.dumps` in every layout it has, with the id anywhere among the members, and then mutated.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from authz.check.jsonrpc_id import id_span
from authz.check.protocols.jsonrpc import Malformed, parse_json

keys = st.sampled_from(["id", "ID", "jsonrpc", "method", "params", "name", 'say "id":1', "i\\d", "arguments", ""])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(['"id":1', '{"id":2}', "\\", '"', "id"]),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=8
)
ids = st.one_of(
    st.integers(-(10**19), 10**19),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
)
cuttable_ids = st.integers(-(10**18) + 1, 10**18 - 1) | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=10
)
layouts = st.sampled_from(
    [
        {},
        {"separators": (",", ":")},
        {"indent": 2},
        {"indent": "\t", "separators": (" ,", " : ")},
        {"ensure_ascii": False},
    ]
)


@st.composite
def bodies(
    draw: st.DrawFn, id_values: st.SearchStrategy[Any] = ids, with_id: bool = False
) -> tuple[bytes, dict[str, Any]]:
    members: dict[str, Any] = draw(st.dictionaries(keys.filter(lambda key: key != "id"), values, max_size=4))
    document = dict(members)
    if with_id or draw(st.booleans()):
        position = draw(st.integers(0, len(members)))
        items = list(members.items())
        items.insert(position, ("id", draw(id_values)))
        document = dict(items)
    return json.dumps(document, **draw(layouts)).encode(), document


def cuttable(value: Any) -> bool:
    """The ids the span is for: integers of up to 18 digits, printable ASCII strings without escapes."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return len(str(abs(value))) <= 18
    return isinstance(value, str) and all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in value)


@settings(max_examples=600, deadline=None)
@given(bodies())
@example((b'{"params": {"id": 3}, "id": 4}', {"params": {"id": 3}, "id": 4}))
@example((b'{"a": "\\"id\\": 1", "id": "x"}', {"a": '"id": 1', "id": "x"}))
def test_the_span_is_the_top_level_id_when_it_can_be_cut(case: tuple[bytes, dict[str, Any]]) -> None:
    body, document = case
    span = id_span(body)
    if "id" in document and cuttable(document["id"]):
        assert span is not None
        assert json.loads(body[span[0] : span[1]]) == document["id"]
    else:
        assert span is None


@settings(max_examples=600, deadline=None)
@given(
    bodies(cuttable_ids, with_id=True),
    st.sampled_from([b"0", b"-17", b"999999999999999999", b'"other"', b'""', b'"a b"']),
)
def test_another_id_in_the_span_changes_the_id_and_nothing_else(
    case: tuple[bytes, dict[str, Any]], other: bytes
) -> None:
    body, document = case
    span = id_span(body)
    assert span is not None
    replaced = body[: span[0]] + other + body[span[1] :]
    assert json.loads(replaced) == {**document, "id": json.loads(other)}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    payload = bytearray(draw(bodies())[0])
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(payload)))
        kind = draw(st.sampled_from(["replace", "insert", "cut"]))
        if kind == "replace" and where < len(payload):
            payload[where] = draw(st.sampled_from(b'{}[]",:\\ id0'))
        elif kind == "insert":
            payload[where:where] = draw(st.sampled_from([b'"id":1,', b"{", b'"', b"\\", b' "id" : "z" ,', b"[", b"}"]))
        else:
            del payload[where : where + draw(st.integers(1, 4))]
    return bytes(payload)


@settings(max_examples=1500, deadline=None)
@given(mutated())
def test_in_any_body_the_strict_reader_accepts_the_span_is_its_id(body: bytes) -> None:
    """Whatever the bytes, when the strict reader (the one classification uses) reads an object,
    the span found is exactly its top-level id."""
    span = id_span(body)
    try:
        document = parse_json(body)
    except Malformed:
        return
    if span is None:
        return
    assert isinstance(document, dict) and "id" in document
    assert json.loads(body[span[0] : span[1]]) == document["id"]


def test_what_is_not_a_single_object_has_no_span() -> None:
    for body in (
        b"",
        b"   ",
        b'[{"id":1}]',
        b'"id"',
        b'{"id":1',
        b'{"id":"unterminated}',
        b'{"id":}',
        b'{"id":01}',
        b'{"id":1.0}',
        b'{"id":1e3}',
        b'{"id":-}',
        b'{"id":null}',
        b'{"id":true}',
        b'{"id":"a\\"b"}',
        b'{"id":"\xc3\xa9"}',
        b'{"id" 1}',
    ):
        assert id_span(body) is None, body
