"""Step 2: who is calling. A SPIFFE ID from the peer certificate, never from a plain header.

Sources, first present wins (SPEC §2): `attributes.source.principal`; Istio's
`istio_authn` filter metadata; the `URI=` of `x-forwarded-client-cert`, only when the
operator trusts it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from authz.check.request import AuthzInput
from authz.reasons import AMBIGUOUS_IDENTITY, INVALID_IDENTITY, NO_IDENTITY, UNTRUSTED_TRUST_DOMAIN

MAX_SPIFFE_ID = 2048  # bytes; every character a SPIFFE ID may hold is one byte
MAX_TRUST_DOMAIN = 255  # RFC 3986's limit on a host, which the trust domain is
# fullmatch only: `$` also matches before a trailing newline, and a principal is copied into
# `x-caller-identity`. The classes are spelled out: `\w` and `\d` take other scripts' letters and digits.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    principal: str
    trust_domain: str
    path: str
    namespace: str  # "" unless the Istio form spiffe://td/ns/<ns>/sa/<sa>
    service_account: str


class IdentityError(Exception):
    """The caller could not be authenticated; `reason` is the audit/deny reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@lru_cache(maxsize=8192)
def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse per the SPIFFE ID standard; raises ValueError with what is wrong.

    Pure, and the same few thousand workloads call all day: cached (errors are not).
    """
    if len(text) > MAX_SPIFFE_ID:
        raise ValueError("longer than 2048 bytes")
    if not text.startswith("spiffe://"):
        raise ValueError("does not start with spiffe://")
    rest = text[len("spiffe://") :]
    trust_domain, slash, path = rest.partition("/")
    if _TRUST_DOMAIN.fullmatch(trust_domain) is None:
        raise ValueError("trust domain must be non-empty lowercase letters, digits, '.', '-', '_'")
    if len(trust_domain) > MAX_TRUST_DOMAIN:
        raise ValueError("trust domain longer than 255 bytes")
    if not slash or not path:
        raise ValueError("a workload ID needs a path after the trust domain")
    segments = path.split("/")
    for segment in segments:
        if segment in (".", "..") or _PATH_SEGMENT.fullmatch(segment) is None:
            raise ValueError(f"invalid path segment {segment!r}")
    namespace = service_account = ""
    if len(segments) == 4 and segments[0] == "ns" and segments[2] == "sa":
        namespace, service_account = segments[1], segments[3]
    return SpiffeId(text, trust_domain, "/" + path, namespace, service_account)


def resolve_caller(request: AuthzInput, trust_domains: frozenset[str], trust_xfcc: bool) -> SpiffeId:
    # request.py reads Istio's metadata only when there is no source principal
    raw = request.source_principal or request.istio_authn_principal
    if not raw and trust_xfcc and request.forwarded_client_cert:
        raw = _xfcc_uri(request.forwarded_client_cert)
    if not raw:
        raise IdentityError(
            NO_IDENTITY,
            "no caller identity: the request did not arrive over mTLS with a SPIFFE certificate",
        )
    try:
        caller = parse_spiffe_id(raw)
    except ValueError as exc:
        raise IdentityError(INVALID_IDENTITY, f"caller identity is not a SPIFFE ID: {exc}") from None
    if caller.trust_domain not in trust_domains:
        raise IdentityError(
            UNTRUSTED_TRUST_DOMAIN,
            f"caller trust domain {caller.trust_domain!r} is not one of the configured trustDomains",
        )
    return caller


def _xfcc_uri(header: str) -> str:
    """The single `URI=` across all XFCC elements; several distinct ones are ambiguous.

    Read as Envoy writes it and no looser, so that no other reader of the header sees a
    different identity: a value is bare or in one pair of quotes, with at most HTTP's spaces and
    tabs around it; whatever else it holds (a stray quote, a backslash escape, a newline) stays
    in it and fails the SPIFFE parse.
    """
    uris = set()
    for element in _split_outside_quotes(header, ","):
        for pair in _split_outside_quotes(element, ";"):
            key, _, value = pair.partition("=")
            if key.strip(" \t").lower() == "uri":  # any spelling counts: more URIs seen, more found ambiguous
                value = value.strip(" \t")
                uris.add(value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value)
    if len(uris) > 1:
        raise IdentityError(AMBIGUOUS_IDENTITY, "x-forwarded-client-cert names more than one URI; refusing to guess")
    return uris.pop() if uris else ""


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """`text` cut at each `separator` outside a quoted value; Envoy escapes `"` as `\\"` inside
    one. Escapes are kept as written; a quote left open hides where elements end, so it is refused."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise IdentityError(INVALID_IDENTITY, "x-forwarded-client-cert has a quote that is never closed")
    parts.append("".join(current))
    return parts
