"""Step 6: shape the CheckResponse Envoy acts on, and the body the agent's SDK reads (SPEC §6).

Istio's gRPC provider has no header options, so every header Mandate sets or removes
travels here. A deny to a JSON-RPC request is a JSON-RPC error carrying the request's id,
so MCP and A2A clients surface it as an error instead of waiting for a reply.
"""

from __future__ import annotations

import orjson
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse, DeniedHttpResponse, OkHttpResponse
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2, status_pb2

from .verdict import BAD_REQUEST, UNAUTHENTICATED, Decision

CALLER_HEADER = "x-caller-identity"
DECISION_HEADER = "x-mandate-decision-id"
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK = status_pb2.Status(code=code_pb2.OK)
_GRPC_CODE = {BAD_REQUEST: code_pb2.INVALID_ARGUMENT, UNAUTHENTICATED: code_pb2.UNAUTHENTICATED}
# JSON-RPC error codes: the reserved ones for malformed input, implementation-defined
# server errors for refusals (-320 + HTTP status; -32001 is the MCP SDK's own timeout).
_JSONRPC_CODE = {BAD_REQUEST: -32600, UNAUTHENTICATED: -32041}
_JSONRPC_FORBIDDEN = -32043
_PARSE_ERROR_REASONS = frozenset({"invalid_json", "duplicate_json_key"})


def build_response(decision: Decision, chain_header: str) -> CheckResponse:
    if decision.enforced_allow:
        return _allow(decision, chain_header)
    return _deny(decision)


def _header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def _allow(decision: Decision, chain_header: str) -> CheckResponse:
    headers = [_header(CALLER_HEADER, decision.caller), _header(DECISION_HEADER, decision.id)]
    if decision.minted_token:
        headers.append(_header(chain_header, decision.minted_token))
    ok = OkHttpResponse(
        headers=headers,
        headers_to_remove=[chain_header] if decision.strip_chain_header else [],
    )
    return CheckResponse(status=_OK, ok_response=ok, dynamic_metadata=_metadata(decision))


def _metadata(decision: Decision) -> Struct:
    metadata = Struct()
    metadata.update(
        {
            "decision_id": decision.id,
            "decision": decision.result,
            "reason": decision.verdict.reason,
            "profile": decision.profile,
            "rule": decision.verdict.rule,
            "chain_id": decision.chain_id,
            "chain_depth": len(decision.hops),
            "chain_hops": " > ".join(decision.hops),
            "minted_chain_id": decision.minted_chain_id,
        }
    )
    return metadata


def _deny(decision: Decision) -> CheckResponse:
    verdict = decision.verdict
    denied = DeniedHttpResponse(
        status=HttpStatus(code=verdict.status),
        headers=[
            _header(DECISION_HEADER, decision.id),
            _header("content-type", "application/json"),
            _header("cache-control", "no-store"),
        ],
        body=deny_body(decision).decode("utf-8"),
    )
    status = status_pb2.Status(code=_GRPC_CODE.get(verdict.status, code_pb2.PERMISSION_DENIED), message=verdict.reason)
    return CheckResponse(status=status, denied_response=denied, dynamic_metadata=_metadata(decision))


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
