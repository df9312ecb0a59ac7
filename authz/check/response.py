"""Step 6: shape the CheckResponse Envoy acts on, and the body the agent's SDK reads (SPEC §6).

Istio's gRPC provider has no header options, so every header Mandate sets or removes
travels here. A deny to a JSON-RPC request is a JSON-RPC error carrying the request's id,
so MCP and A2A clients surface it as an error instead of waiting for a reply.
"""

from __future__ import annotations

from typing import Any

import orjson
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2

from authz.check.decision import Decision
from authz.check.identity import parse_spiffe_id
from authz.policy.headers import RequestHeaders, holds_control
from authz.reasons import BAD_REQUEST, DUPLICATE_JSON_KEY, INVALID_JSON, UNAUTHENTICATED

CALLER_HEADER = "x-caller-identity"
DECISION_HEADER = "x-mandate-decision-id"
# Set on an allowed request that asks for an MCP list, removed from every other: the exported Envoy
# config sends a response through Mandate's ext_proc only when this header says so (SPEC §9).
FILTER_HEADER, FILTER_LISTS = "x-mandate-filter", "mcp-list"
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_GRPC_CODE = {BAD_REQUEST: code_pb2.INVALID_ARGUMENT, UNAUTHENTICATED: code_pb2.UNAUTHENTICATED}
# JSON-RPC error codes: the reserved ones for malformed input, implementation-defined
# server errors for refusals (-320 + HTTP status; -32001 is the MCP SDK's own timeout).
_JSONRPC_CODE = {BAD_REQUEST: -32600, UNAUTHENTICATED: -32041}
_JSONRPC_FORBIDDEN = -32043
_PARSE_ERROR_REASONS = frozenset({INVALID_JSON, DUPLICATE_JSON_KEY})


def build_response(decision: Decision, chain_header: str) -> CheckResponse:
    if decision.enforced_allow:
        return allow_response(decision, chain_header)
    return deny_response(decision, deny_body(decision))


def _set_header(headers: Any, key: str, value: str) -> None:
    """Append to a repeated HeaderValueOption field in place (no message copies: hot path)."""
    option = headers.add()
    option.header.key = key
    option.header.value = value
    option.append_action = _OVERWRITE


def allow_response(decision: Decision, chain_header: str) -> CheckResponse:
    response = CheckResponse()
    response.status.code = code_pb2.OK
    ok = response.ok_response
    _set_header(ok.headers, CALLER_HEADER, decision.caller)
    _set_header(ok.headers, DECISION_HEADER, decision.id)
    if decision.minted_token:
        _set_header(ok.headers, chain_header, decision.minted_token)
    elif decision.strip_chain_header:
        ok.headers_to_remove.append(chain_header)
    if decision.filter_lists:
        _set_header(ok.headers, FILTER_HEADER, FILTER_LISTS)
    else:
        ok.headers_to_remove.append(FILTER_HEADER)  # a client's own never opens an ext_proc stream
    shaping = decision.request_headers
    if shaping is not None:
        _shape_request(ok, shaping, decision)
    _fill_metadata(response.dynamic_metadata, decision)
    return response


def _shape_request(ok: Any, shaping: RequestHeaders, decision: Decision) -> None:
    """The policy's `requestHeaders` (SPEC §12): a set header overwrites every copy the client sent
    (Envoy's header map is case-insensitive), and one that comes out empty is removed instead."""
    facts = request_facts(decision)
    for name, value in shaping.to_set:
        rendered = value.render(facts)
        if holds_control(rendered):
            raise ValueError(f"header {name!r}: a variable's value holds a line break or control character")
        if rendered:
            _set_header(ok.headers, name, rendered)
        else:
            ok.headers_to_remove.append(name)
    ok.headers_to_remove.extend(shaping.to_remove)


def request_facts(decision: Decision) -> tuple[str, ...]:
    """The values of requestHeaders' variables for one answer, in `headers.VARIABLES`' order."""
    try:
        caller = parse_spiffe_id(decision.caller)
        namespace, account = caller.namespace, caller.service_account
    except ValueError:
        namespace = account = ""
    user = decision.user
    return (decision.caller, namespace, account, decision.profile, decision.id, user.sub if user is not None else "")


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


def deny_response(decision: Decision, body: bytes) -> CheckResponse:
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
