"""A serialized CheckResponse, built once per shape and joined around each answer's own values
(the decision id, a minted token and chain id, a deny's body): a shortcut around `response.py`,
which `tests/unit/test_response_templates.py` holds to build_response's message."""

from __future__ import annotations

import dataclasses
import os
from typing import Final

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse, DeniedHttpResponse

from authz.bounded import Bounded
from authz.check.decision import Decision
from authz.check.response import allow_response, build_response, deny_body, deny_response

TEMPLATES = 10_000  # allow shapes kept per policy set
TEMPLATE_BYTES = 16 << 20  # and the bytes they hold
_TEMPLATE_OVERHEAD = 256  # bytes a template costs besides its pieces
_SHORTEST_STAND_IN = 16  # bytes: 64 random bits, the decision id's own length
_DENIED: Final = CheckResponse.DESCRIPTOR.fields_by_name["denied_response"].number
_BODY: Final = DeniedHttpResponse.DESCRIPTOR.fields_by_name["body"].number


class ResponseTemplates:
    """The serialized CheckResponse for a decision, built once per decision shape.

    Building a CheckResponse through upb is a large share of an allowed call's decision
    (ANALYSIS.md, "Answers"). Allows that differ only in their decision id, minted token
    and minted chain id (random, of fixed lengths, none from the request) serialize to the same
    bytes apart from those values. So the bytes are built once with random stand-ins of the
    same lengths, cut where the stand-ins are, and joined around each decision's own values:
    protobuf's length prefixes still hold, and no text from a request is cut, since none can
    have guessed a stand-in. A value of another length than its stand-in is built afresh.

    A deny's body echoes the request's JSON-RPC id and is as long as the client makes it, so it
    is never part of a template: the template is the deny without a body, and the body follows
    it as a second `denied_response` holding only `body`, which protobuf merges into the first
    (a parser must merge repeated occurrences of an embedded message). Its cost is O(size of
    the body), and the template depends on the decision's shape alone.
    """

    def __init__(self, chain_header: str, entries: int = TEMPLATES, max_bytes: int = TEMPLATE_BYTES) -> None:
        self.chain_header = chain_header
        self._templates: Bounded[tuple[object, ...], _Template] = Bounded(entries, max_bytes)

    def render(self, decision: Decision) -> bytes:
        shape = _shape(decision)
        template = self._templates.get(shape)
        if template is None:
            template = _Template.build(decision, self.chain_header)
            self._templates.put(shape, template, _TEMPLATE_OVERHEAD + sum(map(len, template.pieces)))
        values = (decision.id.encode(), decision.minted_token.encode(), decision.minted_chain_id.encode())
        if tuple(map(len, values)) != template.lengths:
            return build_response(decision, self.chain_header).SerializeToString()
        parts = [template.pieces[0]]
        for slot, piece in zip(template.slots, template.pieces[1:]):
            parts.append(values[slot])
            parts.append(piece)
        if not decision.enforced_allow:
            parts.append(_length_delimited(_DENIED, _length_delimited(_BODY, deny_body(decision))))
        return b"".join(parts)


def _shape(decision: Decision) -> tuple[object, ...]:
    """Everything an answer shows but the per-answer values (a deny's body is one). requestHeaders
    read the caller and profile (here already), the decision id (a per-answer value), the user
    (here when they read it), and secret files, whose change starts new templates (pipeline.py)."""
    verdict = decision.verdict
    shaping = decision.request_headers if decision.enforced_allow else None
    user = decision.user if shaping is not None and shaping.reads_user else None
    return (
        verdict.allowed,
        verdict.reason,
        verdict.status,
        verdict.rule,
        decision.dry_run,
        decision.caller,
        decision.profile,
        decision.chain_id,
        decision.hops,
        decision.strip_chain_header,
        decision.filter_lists,
        decision.minted_token != "",
        decision.minted_chain_id != "",
        shaping,
        user.sub if user is not None else None,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Template:
    pieces: tuple[bytes, ...]  # the response cut where the per-answer values go
    slots: tuple[int, ...]  # which value goes between pieces[i] and pieces[i + 1]: 0 id, 1 token, 2 chain id
    lengths: tuple[int, ...]  # the length each value must have

    def __init__(self, pieces: tuple[bytes, ...], slots: tuple[int, ...], lengths: tuple[int, ...]) -> None:
        object.__setattr__(self, "pieces", pieces)
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "lengths", lengths)

    @staticmethod
    def build(decision: Decision, chain_header: str) -> _Template:
        values = (decision.id, decision.minted_token, decision.minted_chain_id)
        stand_ins = tuple(_stand_in(value) for value in values)
        stand_in = dataclasses.replace(
            decision, id=stand_ins[0], minted_token=stand_ins[1], minted_chain_id=stand_ins[2]
        )
        built = allow_response(stand_in, chain_header) if decision.enforced_allow else deny_response(stand_in, b"")
        data = built.SerializeToString()
        pieces, slots = _cut(
            data, [(stand.encode(), slot) for slot, stand in enumerate(stand_ins) if stand != values[slot]]
        )
        # A value kept in the bytes as itself matches no later value: length -1 sends those to build_response.
        lengths = tuple(
            len(value.encode()) if stand != value or not value else -1 for stand, value in zip(stand_ins, values)
        )
        return _Template(pieces, slots, lengths)


def _cut(data: bytes, stand_ins: list[tuple[bytes, int]]) -> tuple[tuple[bytes, ...], tuple[int, ...]]:
    """`data` cut around every occurrence of each stand-in, and which slot each cut held: one
    pass of `find` per stand-in, O(len(data)) each; random stand-ins never overlap."""
    found: list[tuple[int, int, int]] = []
    for stand, slot in stand_ins:
        at = data.find(stand)
        while at != -1:
            found.append((at, at + len(stand), slot))
            at = data.find(stand, at + len(stand))
    found.sort()
    pieces, slots, position = [], [], 0
    for start, end, slot in found:
        pieces.append(data[position:start])
        slots.append(slot)
        position = end
    pieces.append(data[position:])
    return tuple(pieces), tuple(slots)


def _stand_in(value: str) -> str:
    """Random hex as long as `value` in bytes, which nothing in a request can have guessed; a
    value too short for that (no token minted) is left as itself."""
    length = len(value.encode())
    return value if length < _SHORTEST_STAND_IN else os.urandom(length // 2 + 1).hex()[:length]


def _length_delimited(number: int, payload: bytes) -> bytes:
    """One protobuf field of wire type 2: tag, length, payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
