"""The ProcessingResponses Mandate sends Envoy: go on (perhaps without some headers), this
body instead of the chunk, or an immediate answer that ends the request with an error the
agent's SDK reads (the same JSON-RPC error body a Check's deny has)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingResponse

from authz.check.decision import Decision, Verdict
from authz.check.protocols.jsonrpc import JsonId
from authz.check.response import DECISION_HEADER, deny_body


def go_on(phase: str, remove: Sequence[str] = ()) -> ProcessingResponse:
    """Carry on with `phase` ("request_headers", "request_body", "response_headers"), without the
    headers named in `remove`."""
    response = ProcessingResponse()
    answer = getattr(response, phase)
    answer.SetInParent()
    if remove:
        answer.response.header_mutation.remove_headers.extend(remove)
    return response


def body(data: bytes) -> ProcessingResponse:
    """The response body chunk Envoy holds is replaced by `data` (nothing, when empty)."""
    response = ProcessingResponse()
    mutation = response.response_body.response.body_mutation
    if data:
        mutation.body = data
    else:
        mutation.clear_body = True
    return response


def trailers(phase: str) -> ProcessingResponse:
    response = ProcessingResponse()
    getattr(response, phase).SetInParent()
    return response


def refusal_body(decision_id: str, verdict: Verdict, ids: Sequence[JsonId]) -> bytes:
    """A JSON-RPC error for each id (one object for one id), as a Check's deny writes it."""
    return deny_body(Decision(decision_id, verdict, jsonrpc_ids=tuple(ids) or (None,)))


def immediate(decision_id: str, verdict: Verdict, ids: Sequence[JsonId]) -> ProcessingResponse:
    """End the request here with `verdict`'s status and a JSON-RPC error for each id."""
    response = ProcessingResponse()
    answer = response.immediate_response
    answer.status.code = verdict.status  # type: ignore[assignment]  # an HTTP status number
    for name, value in (
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
        (DECISION_HEADER, decision_id),
    ):
        option = answer.headers.set_headers.add()
        option.header.key = name
        option.header.raw_value = value.encode()
        option.append_action = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    answer.body = refusal_body(decision_id, verdict, ids)
    answer.details = f"mandate_{verdict.reason}"
    return response
