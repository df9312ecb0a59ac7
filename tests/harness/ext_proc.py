"""Envoy's side of one ext_proc stream, in process: the messages Envoy 1.40 sends for a list
request and its answer (as the filters of `mandate export envoy` configure it), applied to
Mandate's replies the way Envoy applies them, down to the bytes the agent would receive.

`deliver()` runs one request through a ListService: request headers (with the caller's
attributes and ext_authz's metadata), the request body (none for a bodiless request, such as the
GET that resumes a stream: `resumed_get()`), the answer's headers and its body in the chunks
given. Its `Delivered` says what reached the agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest, ProcessingResponse

from authz.listing.service import ListService
from tests.harness.example_policies import GITHUB_HOST, SUPPORT

ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
AUTHZ = "envoy.filters.http.ext_authz"


@dataclass
class Delivered:
    """What the agent received, or the immediate answer that ended the request."""

    status: int
    headers: dict[str, str]
    body: bytes
    immediate: bool = False
    upstream_reached: bool = True
    replies: list[ProcessingResponse] = field(default_factory=list)

    def json(self):  # type: ignore[no-untyped-def]
        return orjson.loads(self.body)


def authz_metadata(profile: str = "support-agent", chain_id: str = "", decision_id: str = "0123456789abcdef"):
    """The dynamic metadata Mandate's ext_authz answer leaves (what the exported filters forward)."""
    return {"decision_id": decision_id, "decision": "allow", "profile": profile, "chain_id": chain_id}


def request_headers(
    caller: str | None = SUPPORT,
    host: str = GITHUB_HOST,
    metadata: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    end_of_stream: bool = False,
) -> ProcessingRequest:
    request = ProcessingRequest()
    sent = request.request_headers
    for key, value in {":method": "POST", ":path": "/mcp", ":authority": host, **(headers or {})}.items():
        sent.headers.headers.add(key=key, raw_value=value.encode())
    sent.end_of_stream = end_of_stream
    if caller is not None:
        request.attributes[ATTRIBUTES_KEY].update({"connection.uri_san_peer_certificate": caller})
    if metadata is None:
        metadata = authz_metadata()
    if metadata:
        request.metadata_context.filter_metadata[AUTHZ].update(metadata)
    return request


def resumed_get(last_event_id: str = "stream-1_7", **kwargs: object) -> ProcessingRequest:
    """The headers of a GET that resumes an SSE stream after `last-event-id`: Envoy sends no body."""
    headers = {":method": "GET", "accept": "text/event-stream", "last-event-id": last_event_id}
    return request_headers(headers=headers, end_of_stream=True, **kwargs)  # type: ignore[arg-type]


def jsonrpc(method: str, request_id: object = 1, **params: object) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def request_body(body: bytes) -> ProcessingRequest:
    request = ProcessingRequest()
    request.request_body.body = body
    request.request_body.end_of_stream = True
    return request


def response_headers(status: int, headers: dict[str, str]) -> ProcessingRequest:
    request = ProcessingRequest()
    for key, value in {":status": str(status), **headers}.items():
        request.response_headers.headers.headers.add(key=key, raw_value=value.encode())
    return request


def response_body(chunk: bytes, final: bool) -> ProcessingRequest:
    request = ProcessingRequest()
    request.response_body.body = chunk
    request.response_body.end_of_stream = final
    return request


def chunks_of(body: bytes, size: int) -> list[bytes]:
    """`body` cut every `size` bytes (at least one chunk, maybe empty)."""
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


def deliver(
    service: ListService,
    asked: bytes | dict[str, object] | list[dict[str, object]] | None,
    answer: bytes | Sequence[bytes],
    content_type: str = "application/json",
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    first: ProcessingRequest | None = None,
) -> Delivered:
    """One list request through `service` as Envoy drives it; `answer` whole, or in its chunks.
    `asked` None: the request has no body (`first` says what it is)."""
    body = asked if isinstance(asked, bytes) or asked is None else orjson.dumps(asked)
    chunks = [answer] if isinstance(answer, bytes) else list(answer)
    stream = service.open()
    assert stream is not None, "the service refused a stream"
    replies: list[ProcessingResponse] = []
    try:
        for message in (first or request_headers(), *(() if body is None else (request_body(body),))):
            reply = stream.answer(message)
            replies.append(reply)
            if reply.HasField("immediate_response"):
                return _immediate(reply, replies, upstream_reached=False)
        sent = {"content-type": content_type, "content-length": str(sum(map(len, chunks))), **(headers or {})}
        reply = stream.answer(response_headers(status, sent))
        replies.append(reply)
        if reply.HasField("immediate_response"):
            return _immediate(reply, replies)
        for name in reply.response_headers.response.header_mutation.remove_headers:
            sent.pop(name, None)
        delivered = b""
        for index, chunk in enumerate(chunks):
            reply = stream.answer(response_body(chunk, index == len(chunks) - 1))
            replies.append(reply)
            delivered += _applied(reply, chunk)
        return Delivered(status, sent, delivered, replies=replies)
    finally:
        service.close(stream)


def _applied(reply: ProcessingResponse, chunk: bytes) -> bytes:
    """The chunk as Envoy passes it on after Mandate's reply."""
    mutation = reply.response_body.response.body_mutation
    kind = mutation.WhichOneof("mutation")
    if kind == "body":
        return mutation.body
    if kind == "clear_body":
        return b""
    return chunk


def _immediate(
    reply: ProcessingResponse, replies: list[ProcessingResponse], upstream_reached: bool = True
) -> Delivered:
    answer = reply.immediate_response
    headers = {option.header.key: option.header.raw_value.decode() for option in answer.headers.set_headers}
    return Delivered(answer.status.code, headers, answer.body, True, upstream_reached, replies)
