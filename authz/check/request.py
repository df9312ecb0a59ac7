"""Step 1: read Envoy's CheckRequest into a small typed input, once.

Everything after this step works on `AuthzInput` and never touches protobuf, so the
decision logic can be driven by `mandate explain` and by tests without Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.check.wire import WireRequest

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
JWT_AUTHN = "envoy.filters.http.jwt_authn"  # where Envoy's jwt_authn leaves the claims it verified
# An MCP client resuming an SSE stream (Streamable HTTP "Resumability"): the server may replay stored
# answers, list answers among them, so the request's answer goes through the response path (SPEC §9).
RESUME_HEADER = "last-event-id"
# Every header a decision reads besides the chain header, those a `when` names (SPEC §2–§5) and
# the pseudo-headers, which only stand in for method, path and host when Envoy leaves them empty.
DECIDING_HEADERS = (
    "content-type",
    "content-length",
    PARTIAL_BODY_HEADER,
    "x-forwarded-client-cert",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    RESUME_HEADER,
)


@dataclass(slots=True)
class AuthzInput:
    method: str = ""
    path: str = ""
    host: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    source_principal: str = ""
    istio_authn_principal: str = ""
    destination_principal: str = ""
    request_id: str = ""
    jwt_authn: bytes = b""  # the serialized Struct of Envoy's jwt_authn metadata (SPEC §10); b"" when absent

    def __init__(
        self,
        method: str = "",
        path: str = "",
        host: str = "",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        source_principal: str = "",
        istio_authn_principal: str = "",
        destination_principal: str = "",
        request_id: str = "",
        jwt_authn: bytes = b"",
    ) -> None:
        self.method, self.path, self.host, self.headers, self.body = (
            method,
            path,
            host,
            {} if headers is None else headers,
            body,
        )
        self.source_principal, self.istio_authn_principal = source_principal, istio_authn_principal
        self.destination_principal, self.request_id = destination_principal, request_id
        self.jwt_authn = jwt_authn

    @property
    def forwarded_client_cert(self) -> str:
        return self.headers.get("x-forwarded-client-cert", "")

    @property
    def partial_body(self) -> bool:
        """Envoy's flag, or a body shorter than its Content-Length (Envoy 1.40 says "false"
        when the buffer filled exactly at `max_request_bytes`).

        A Content-Length that is not ASCII digits is malformed and refused here (400
        `invalid_header`): `str.isdigit` also takes `²` (which `int` rejects) and other scripts'
        digits (which `int` reads). Past leading zeros, more than 18 digits is more than any
        body Mandate holds, and is never handed to `int`, which refuses 4,300 digits or more."""
        if self.headers.get(PARTIAL_BODY_HEADER, "").lower() == "true":
            return True
        declared = self.headers.get("content-length")
        if declared is None:
            return False
        if not (declared.isascii() and declared.isdigit()):
            from authz.check.decision import Refusal
            from authz.reasons import INVALID_HEADER  # only for malformed input: the common path imports nothing

            raise Refusal(INVALID_HEADER, f"Content-Length {declared[:40]!r} is not a decimal number")
        digits = declared.lstrip("0")
        return len(digits) > 18 or int(digits or "0") > len(self.body)


def from_wire(wire: WireRequest, visible: tuple[bytes, ...] | None) -> AuthzInput:
    """What `from_check_request` reads, from the walk over a CheckRequest (`wire.py`) that
    protobuf has also parsed, so every string in it is UTF-8. Only the `visible` headers (None:
    all) reach the steps: the decision cache's key holds exactly those, so no step can decide
    on a header an answer kept for another request did not share."""
    sent = wire.headers
    if visible is None:
        headers = {name.decode(): value.decode() for name, value in sent.items()}
    else:
        headers = {name.decode(): value.decode() for name in visible if (value := sent.get(name)) is not None}
    return AuthzInput(
        method=wire.method.decode() or headers.get(":method", ""),
        path=wire.path.decode() or headers.get(":path", ""),
        host=wire.host.decode() or headers.get(":authority", ""),
        headers=headers,
        body=wire.raw_body or wire.body,
        source_principal=wire.source_principal.decode(),
        destination_principal=wire.destination_principal.decode(),
        request_id=wire.id.decode() or sent.get(b"x-request-id", b"").decode(),
        jwt_authn=wire.jwt_authn,
    )


def from_check_request(check: CheckRequest) -> AuthzInput:
    """The input from the parsed message: for what the walk leaves to protobuf (`wire.py`)."""
    attributes = check.attributes
    http = attributes.request.http
    headers = dict(http.headers)
    if not headers and len(http.header_map.headers):
        headers = _flatten_header_map(http.header_map.headers)
    body = http.raw_body or http.body.encode("utf-8", "surrogatepass")
    source = attributes.source.principal
    return AuthzInput(
        method=http.method or headers.get(":method", ""),
        path=http.path or headers.get(":path", ""),
        host=http.host or headers.get(":authority", ""),
        headers=headers,
        body=body,
        source_principal=source,
        istio_authn_principal="" if source else _istio_authn_principal(attributes),  # identity.py reads it only then
        destination_principal=attributes.destination.principal,
        request_id=http.id or headers.get("x-request-id", ""),
        jwt_authn=_jwt_authn(attributes),
    )


def _istio_authn_principal(attributes: AttributeContext) -> str:
    istio = attributes.metadata_context.filter_metadata.get("istio_authn")
    if istio is None:
        return ""
    value = istio.fields.get("source.principal")
    return value.string_value if value is not None else ""


def _jwt_authn(attributes: AttributeContext) -> bytes:
    metadata = attributes.metadata_context.filter_metadata
    return metadata[JWT_AUTHN].SerializeToString() if JWT_AUTHN in metadata else b""


def _flatten_header_map(entries) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Envoy's `header_map` (sent with `encode_raw_headers`) may repeat a name; join like HTTP does."""
    headers: dict[str, str] = {}
    for entry in entries:
        value = entry.raw_value.decode("utf-8", "replace") if entry.raw_value else entry.value
        key = entry.key.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def to_check_request(request: AuthzInput) -> CheckRequest:
    """The CheckRequest Envoy would send for `request` (for `mandate check` and tests)."""
    check = CheckRequest()
    attributes = check.attributes
    attributes.source.principal = request.source_principal
    attributes.destination.principal = request.destination_principal
    if request.istio_authn_principal:
        attributes.metadata_context.filter_metadata["istio_authn"].update(
            {"source.principal": request.istio_authn_principal}
        )
    if request.jwt_authn:
        attributes.metadata_context.filter_metadata[JWT_AUTHN].MergeFromString(request.jwt_authn)
    http = attributes.request.http
    http.method, http.path, http.host = request.method, request.path, request.host
    http.headers.update(
        {":method": request.method, ":path": request.path, ":authority": request.host, **request.headers}
    )
    http.raw_body = request.body
    return check
