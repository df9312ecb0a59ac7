"""What Envoy's ext_proc messages say about the request whose answer is filtered.

Only the request-headers message carries attributes and metadata (Envoy 1.40): the caller's
SPIFFE ID as `connection.uri_san_peer_certificate` (`source.principal` arrives empty), the
destination's as `connection.uri_san_local_certificate`, and, through
`metadata_options.forwarding_namespaces.untyped`, the dynamic metadata Mandate's own ext_authz
answer left (its decision id, the caller's profile, its chain).
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3.base_pb2 import HeaderMap
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest

AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
ISTIO_NAMESPACE = "istio_authn"
PEER_ATTRIBUTE = "connection.uri_san_peer_certificate"
LOCAL_ATTRIBUTE = "connection.uri_san_local_certificate"
ATTRIBUTES = (PEER_ATTRIBUTE, LOCAL_ATTRIBUTE)


@dataclass(frozen=True)
class Seen:
    """The request as the request-headers message shows it."""

    headers: dict[str, str]  # names lowercased
    attributes: dict[str, str]  # the string attributes, by name
    authz: dict[str, str]  # Mandate's ext_authz metadata (numbers as text)
    istio_principal: str  # Istio's `istio_authn` source.principal, for waypoints that leave the attribute empty


def read_request(request: ProcessingRequest) -> Seen:
    metadata = request.metadata_context.filter_metadata
    istio = _strings(metadata[ISTIO_NAMESPACE].fields) if ISTIO_NAMESPACE in metadata else {}
    return Seen(
        headers=header_map(request.request_headers.headers),
        attributes=_attributes(request),
        authz=_strings(metadata[AUTHZ_NAMESPACE].fields) if AUTHZ_NAMESPACE in metadata else {},
        istio_principal=istio.get("source.principal", ""),
    )


def header_map(headers: HeaderMap) -> dict[str, str]:
    """Envoy's headers, names lowercased; a repeated name joined with commas as HTTP does. Envoy
    sends values as `raw_value` bytes (or, configured otherwise, as `value`)."""
    found: dict[str, str] = {}
    for entry in headers.headers:
        value = entry.raw_value.decode("utf-8", "replace") if entry.raw_value else entry.value
        key = entry.key.lower()
        found[key] = f"{found[key]},{value}" if key in found else value
    return found


def _attributes(request: ProcessingRequest) -> dict[str, str]:
    """The string attributes, whichever filter name Envoy keys them by (a composite filter's
    delegate has the name its action gives it)."""
    found: dict[str, str] = {}
    for struct in request.attributes.values():
        found.update(_strings(struct.fields))
    return found


def _strings(fields) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A Struct's scalar values as text; lists and maps are not what Mandate reads."""
    found = {}
    for name, value in fields.items():
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            found[name] = value.string_value
        elif kind == "number_value":
            found[name] = f"{value.number_value:g}"
        elif kind == "bool_value":
            found[name] = "true" if value.bool_value else "false"
    return found
