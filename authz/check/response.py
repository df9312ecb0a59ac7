"""Step 6: shape the CheckResponse Envoy acts on, and the body the agent's SDK reads (SPEC §6).

Istio's gRPC provider has no header options, so every header Mandate sets or removes
travels here. A deny to a JSON-RPC request is a JSON-RPC error carrying the request's id,
so MCP and A2A clients surface it as an error instead of waiting for a reply.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import orjson
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2

from authz.bounded import Bounded
from authz.check.decision import Decision
from authz.reasons import BAD_REQUEST, DUPLICATE_JSON_KEY, INVALID_JSON, UNAUTHENTICATED

CALLER_HEADER = "x-caller-identity"
DECISION_HEADER = "x-mandate-decision-id"
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_GRPC_CODE = {BAD_REQUEST: code_pb2.INVALID_ARGUMENT, UNAUTHENTICATED: code_pb2.UNAUTHENTICATED}
# JSON-RPC error codes: the reserved ones for malformed input, implementation-defined
# server errors for refusals (-320 + HTTP status; -32001 is the MCP SDK's own timeout).
_JSONRPC_CODE = {BAD_REQUEST: -32600, UNAUTHENTICATED: -32041}
_JSONRPC_FORBIDDEN = -32043
_PARSE_ERROR_REASONS = frozenset({INVALID_JSON, DUPLICATE_JSON_KEY})
TEMPLATES = 10_000  # allow shapes kept per policy set
TEMPLATE_BYTES = 16 << 20  # and the bytes they hold
_TEMPLATE_OVERHEAD = 256  # bytes a template costs besides its pieces
_SHORTEST_STAND_IN = 16  # bytes: 64 random bits, the decision id's own length


def build_response(decision: Decision, chain_header: str) -> CheckResponse:
    if decision.enforced_allow:
        return _allow(decision, chain_header)
    return _deny(decision, deny_body(decision))


def _set_header(headers: Any, key: str, value: str) -> None:
    """Append to a repeated HeaderValueOption field in place (no message copies: hot path)."""
    option = headers.add()
    option.header.key = key
    option.header.value = value
    option.append_action = _OVERWRITE


def _allow(decision: Decision, chain_header: str) -> CheckResponse:
    response = CheckResponse()
    response.status.code = code_pb2.OK
    ok = response.ok_response
    _set_header(ok.headers, CALLER_HEADER, decision.caller)
    _set_header(ok.headers, DECISION_HEADER, decision.id)
    if decision.minted_token:
        _set_header(ok.headers, chain_header, decision.minted_token)
    elif decision.strip_chain_header:
        ok.headers_to_remove.append(chain_header)
    _fill_metadata(response.dynamic_metadata, decision)
    return response


def _fill_metadata(metadata: Struct, decision: Decision) -> None:
    """Envoy's access-log fields; set field by field, which is several times cheaper than Struct.update."""
    fields = metadata.fields
    fields["decision_id"].string_value = decision.id
    fields["decision"].string_value = decision.result
    fields["reason"].string_value = decision.verdict.reason
    fields["profile"].string_value = decision.profile
    fields["rule"].string_value = decision.verdict.rule
    fields["chain_id"].string_value = decision.chain_id
    fields["chain_depth"].number_value = len(decision.hops)
    fields["chain_hops"].string_value = " > ".join(decision.hops)
    fields["minted_chain_id"].string_value = decision.minted_chain_id


def _deny(decision: Decision, body: bytes) -> CheckResponse:
    verdict = decision.verdict
    response = CheckResponse()
    response.status.code = _GRPC_CODE.get(verdict.status, code_pb2.PERMISSION_DENIED)
    response.status.message = verdict.reason
    denied = response.denied_response
    denied.status.code = verdict.status  # type: ignore[assignment]  # an HTTP status number
    _set_header(denied.headers, DECISION_HEADER, decision.id)
    _set_header(denied.headers, "content-type", "application/json")
    _set_header(denied.headers, "cache-control", "no-store")
    denied.body = body.decode("utf-8")
    _fill_metadata(response.dynamic_metadata, decision)
    return response


def deny_body(decision: Decision) -> bytes:
    verdict = decision.verdict
    message = f"denied: {verdict.message}" if verdict.message else f"denied: {verdict.reason}"
    if decision.jsonrpc_ids is None:
        body = {"error": message, "reason": verdict.reason, "decision_id": decision.id}
        if verdict.hop:
            body["hop"] = verdict.hop
        return orjson.dumps(body)
    if verdict.reason in _PARSE_ERROR_REASONS:
        code = -32700
    else:
        code = _JSONRPC_CODE.get(verdict.status, _JSONRPC_FORBIDDEN)
    data = {"reason": verdict.reason, "decision_id": decision.id}
    if verdict.hop:
        data["hop"] = verdict.hop
    errors = [
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message, "data": data}}
        for request_id in decision.jsonrpc_ids
    ]
    return orjson.dumps(errors[0] if len(errors) == 1 else errors)


class ResponseTemplates:
    """The serialized CheckResponse for an allow, built once per decision shape.

    Building a CheckResponse through upb and serializing it costs a few µs, a third of an
    allowed tool call's decision. Allows that differ only in their decision id, minted token
    and minted chain id (random, of fixed lengths, none from the request) serialize to the same
    bytes apart from those values. So the bytes are built once with random stand-ins of the
    same lengths, cut where the stand-ins are, and joined around each decision's own values:
    protobuf's length prefixes still hold, and no text from a request is cut, since none can
    have guessed a stand-in. A value of another length than its stand-in is built afresh.

    A deny is always built afresh: its body echoes the request's JSON-RPC id and is as long
    as the client makes it, so a template would cost memory and time in proportion to what an
    attacker sends, for a shortcut saving a few µs (ANALYSIS.md, "Deny answers").
    """

    def __init__(self, chain_header: str, entries: int = TEMPLATES, max_bytes: int = TEMPLATE_BYTES) -> None:
        self.chain_header = chain_header
        self._templates: Bounded[tuple[object, ...], _Template] = Bounded(entries, max_bytes)

    def render(self, decision: Decision) -> bytes:
        if not decision.enforced_allow:
            return build_response(decision, self.chain_header).SerializeToString()
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
        return b"".join(parts)


def _shape(decision: Decision) -> tuple[object, ...]:
    """Everything an allow shows but the per-answer values."""
    verdict = decision.verdict
    return (
        verdict.allowed, verdict.reason, verdict.status, verdict.rule, decision.dry_run, decision.caller,
        decision.profile, decision.chain_id, decision.hops, decision.strip_chain_header,
        decision.minted_token != "", decision.minted_chain_id != "",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Template:
    pieces: tuple[bytes, ...]  # the response cut where the per-answer values go
    slots: tuple[int, ...]  # which value goes between pieces[i] and pieces[i + 1]: 0 id, 1 token, 2 chain id
    lengths: tuple[int, ...]  # the length each value must have

    # Written out so that mypyc compiles it: dataclass's generated __init__ runs as Python, ~10x slower.
    def __init__(self, pieces: tuple[bytes, ...], slots: tuple[int, ...], lengths: tuple[int, ...]) -> None:
        object.__setattr__(self, "pieces", pieces)
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "lengths", lengths)

    @staticmethod
    def build(decision: Decision, chain_header: str) -> _Template:
        values = (decision.id, decision.minted_token, decision.minted_chain_id)
        stand_ins = tuple(_stand_in(value) for value in values)
        stand_in = dataclasses.replace(decision, id=stand_ins[0], minted_token=stand_ins[1], minted_chain_id=stand_ins[2])
        data = _allow(stand_in, chain_header).SerializeToString()
        pieces, slots = _cut(data, [(stand.encode(), slot) for slot, stand in enumerate(stand_ins) if stand != values[slot]])
        # A value kept in the bytes as itself matches no later value: length -1 sends those to build_response.
        lengths = tuple(len(value.encode()) if stand != value else -1 for stand, value in zip(stand_ins, values))
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
