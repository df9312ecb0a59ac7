"""Who the user is (SPEC §10): a bearer JWT of a configured issuer, verified with PyJWT against
that issuer's keys, or the claims Envoy's jwt_authn filter already verified.

Only a `Bearer` value of three dot-separated parts whose payload names a configured `iss` is a
user token; anything else in the header (agents also carry API keys there) is no user, never an
error. A user token that fails verification is refused with a `token_` reason, whatever the
rules say. A verified token is remembered until it expires (bounded), so a hot path verifies
each token once; the remembered user is given again only while its issuer still publishes the
key that verified it. The clock is the caller's, so answers kept for a token end when it does.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import jwt
import orjson
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)

from authz.bounded import Bounded
from authz.check.decision import Refusal
from authz.reasons import (
    TOKEN_ALGORITHM,
    TOKEN_AUDIENCE,
    TOKEN_EXPIRED,
    TOKEN_ISSUER,
    TOKEN_KEYS_UNAVAILABLE,
    TOKEN_MALFORMED,
    TOKEN_NOT_YET_VALID,
    TOKEN_SIGNATURE,
    TOKEN_TOO_LARGE,
    TOKEN_UNKNOWN_KEY,
)
from authz.users.keys import FileKeys, KeysUnavailable, RemoteKeys
from authz.users.user import METADATA, TOKEN, User

LEEWAY = 60.0  # seconds of clock skew allowed on exp, nbf and iat
MAX_TOKEN = 16 * 1024
REMEMBERED = 10_000  # verified tokens (and Envoy-verified claims) kept
REMEMBERED_BYTES = 32 << 20
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_EXACT_FLOAT = float(1 << 53)
_DECODE_OPTIONS: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}  # on Mandate's clock


class Issuer:
    """One trusted issuer: its `iss`, the audiences a token must name one of, the algorithms
    it may sign with (never none or HS*), and its keys."""

    __slots__ = ("algorithms", "audiences", "keys", "name")

    def __init__(
        self, name: str, audiences: tuple[str, ...], algorithms: frozenset[str], keys: FileKeys | RemoteKeys
    ) -> None:
        self.name, self.audiences, self.algorithms, self.keys = name, audiences, algorithms, keys


class UserSettings:
    """The compiled `users` settings of one policy set, with what it has verified."""

    def __init__(self, header: str, groups_claim: str, issuers: dict[str, Issuer]) -> None:
        self.header = header
        self.groups_claim = groups_claim
        self.issuers = issuers
        self._verified: Bounded[str, User] = Bounded(REMEMBERED, REMEMBERED_BYTES)
        self._claimed: Bounded[bytes, tuple[User | None]] = Bounded(REMEMBERED, REMEMBERED_BYTES)

    def from_header(self, value: str, now: float) -> User | None:
        """The user of the header's token; None when it holds no user token. A value verified
        before is looked up as it is, before anything is decoded."""
        known = self._verified.get(value)
        if known is not None and now < known.expires + LEEWAY and self.still_trusted(known):
            return known
        found = self._token_in(value)
        if found is None:
            return None
        token, issuer, header, claims = found
        user = self._verify(token, issuer, header, claims, now)
        self._verified.put(value, user, 2 * len(value) + len(user.text) + 512)
        return user

    def from_metadata(self, raw: bytes, now: float) -> User | None:
        """The user of the claims Envoy's jwt_authn put in the CheckRequest (`raw`: its serialized
        Struct); None when they name no configured issuer."""
        known = self._claimed.get(raw)
        if known is None or (known[0] is not None and now >= known[0].expires + LEEWAY):
            known = (self._read_metadata(raw, now),)
            self._claimed.put(raw, known, 2 * len(raw) + 512)
        return known[0]

    def still_trusted(self, user: User) -> bool:
        """Whether the key that verified a token user's token is still its issuer's."""
        if user.source != TOKEN:
            return True
        issuer = self.issuers.get(user.iss)
        return issuer is not None and issuer.keys.holds(user.key)

    def _token_in(self, value: str) -> tuple[str, Issuer, dict[str, Any] | None, dict[str, Any]] | None:
        """The user token in a header value: several values (two headers, joined by Envoy) are
        refused when one of them is a user token, since which one speaks would be a guess."""
        pieces = value.split(",")
        found = None
        for piece in pieces:
            candidate = self._user_token(piece)
            if candidate is not None:
                found = candidate
        if found is not None and len(pieces) > 1:
            raise Refusal(TOKEN_MALFORMED, f"the {self.header} header holds several values and one is a user token")
        if found is not None and len(found[0]) > MAX_TOKEN:
            raise Refusal(TOKEN_TOO_LARGE, f"the user token is {len(found[0])} bytes; at most {MAX_TOKEN} are read")
        return found

    def _user_token(self, value: str) -> tuple[str, Issuer, dict[str, Any] | None, dict[str, Any]] | None:
        """(token, its issuer, its header or None when unreadable, its claims); None when the value
        is not a user token."""
        scheme, _, rest = value.strip(" \t").partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = rest.strip(" \t")
        parts = token.split(".")
        if len(parts) != 3:
            return None
        claims = _json_segment(parts[1])
        iss = claims.get("iss") if claims is not None else None
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None or claims is None:
            return None
        return token, issuer, _json_segment(parts[0]), claims

    def _verify(
        self, token: str, issuer: Issuer, header: dict[str, Any] | None, claims: dict[str, Any], now: float
    ) -> User:
        algorithm, kid = _algorithm_and_kid(header, issuer)
        for key, parsed in _keys_for(issuer, kid, algorithm):
            try:
                jwt.decode(
                    token,
                    parsed,
                    algorithms=[algorithm],
                    audience=list(issuer.audiences),
                    issuer=issuer.name,
                    options=_DECODE_OPTIONS,
                )
            except InvalidSignatureError:
                continue
            except PyJWTError as exc:
                raise _refusal(exc, issuer) from None
            sub, expires = _check_claims(claims, now, exp_required=True)
            return User(issuer.name, sub, claims, orjson.dumps(claims).decode(), expires, TOKEN, key)
        raise Refusal(TOKEN_SIGNATURE, f"the user token's signature does not verify with the keys of {issuer.name}")

    def _read_metadata(self, raw: bytes, now: float) -> User | None:
        found: list[tuple[Issuer, dict[str, Any]]] = []
        for key, value in Struct.FromString(raw).fields.items():
            if value.WhichOneof("kind") != "struct_value":
                continue
            claims = _plain(json_format.MessageToDict(value.struct_value))
            iss = claims.get("iss")
            issuer = self.issuers.get(key)
            if issuer is None:  # Istio keys the claims as "payload"; SPEC §10 as the issuer
                issuer = self.issuers.get(iss) if isinstance(iss, str) else None
                if issuer is None:
                    continue
            elif iss != key:
                raise Refusal(TOKEN_ISSUER, f"Envoy's verified claims for {key} name another iss")
            found.append((issuer, claims))
        if not found:
            return None
        if len({(issuer.name, claims.get("sub")) for issuer, claims in found}) > 1:
            raise Refusal(TOKEN_MALFORMED, "Envoy's jwt_authn metadata holds the claims of more than one user")
        issuer, claims = found[0]
        if not _names_audience(claims.get("aud"), issuer.audiences):
            raise Refusal(TOKEN_AUDIENCE, f"the user's claims name no audience configured for {issuer.name}")
        sub, expires = _check_claims(claims, now, exp_required=False)
        return User(issuer.name, sub, claims, orjson.dumps(claims).decode(), expires, METADATA)


def _json_segment(segment: str) -> dict[str, Any] | None:
    """A JWT segment's JSON object, or None: then the value is not a user token at all."""
    if len(segment) % 4 == 1 or _SEGMENT.fullmatch(segment) is None:
        return None
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _algorithm_and_kid(header: dict[str, Any] | None, issuer: Issuer) -> tuple[str, str | None]:
    """The header's `alg` (one the issuer allows) and `kid`; PyJWT reads the header again, whole,
    when it verifies the token."""
    if header is None:
        raise Refusal(TOKEN_MALFORMED, "the user token's header is not a base64url JSON object")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in issuer.algorithms:
        allowed = ", ".join(sorted(issuer.algorithms))
        raise Refusal(TOKEN_ALGORITHM, f"the user token's alg {str(algorithm)[:20]!r} is not one of {allowed}")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Refusal(TOKEN_MALFORMED, "the user token's kid is not a string")
    return algorithm, kid


def _keys_for(issuer: Issuer, kid: str | None, algorithm: str) -> list[tuple[bytes, Any]]:
    """The issuer's keys that may have signed the token: looked for again, within the source's
    pace, when none is meant for its `kid`."""
    keys = issuer.keys
    try:
        candidates, named = keys.current().candidates(kid, algorithm)
        if not named:
            candidates, named = keys.look_again().candidates(kid, algorithm)
    except KeysUnavailable as exc:
        raise Refusal(TOKEN_KEYS_UNAVAILABLE, str(exc)) from None
    if not named:
        raise Refusal(TOKEN_UNKNOWN_KEY, f"no key of {issuer.name} has kid {str(kid)[:80]!r}")
    if not candidates:
        raise Refusal(TOKEN_ALGORITHM, f"the key {str(kid)[:80]!r} of {issuer.name} is not for {algorithm}")
    return candidates  # type: ignore[return-value]


def _refusal(exc: PyJWTError, issuer: Issuer) -> Refusal:
    if isinstance(exc, InvalidAudienceError) or (isinstance(exc, MissingRequiredClaimError) and exc.claim == "aud"):
        return Refusal(TOKEN_AUDIENCE, f"the user token names no audience configured for {issuer.name}")
    if isinstance(exc, InvalidIssuerError):
        return Refusal(TOKEN_ISSUER, f"the user token's iss is not {issuer.name}")
    if isinstance(exc, (InvalidAlgorithmError, InvalidKeyError)):
        return Refusal(TOKEN_ALGORITHM, f"the user token's alg does not fit its key: {exc}")
    return Refusal(TOKEN_MALFORMED, f"the user token is not a valid JWT: {str(exc)[:200]}")


def _check_claims(claims: dict[str, Any], now: float, exp_required: bool) -> tuple[str, float]:
    """`sub`, and the time the claims stop being valid; refuses what is not valid now (±LEEWAY)."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Refusal(TOKEN_MALFORMED, "the user token has no sub: it names nobody")
    exp: Any = claims.get("exp")
    if exp is None and not exp_required:
        expires = math.inf
    elif _is_time(exp):
        expires = float(exp)
    else:
        raise Refusal(TOKEN_MALFORMED, "the user token needs a numeric exp")
    if now >= expires + LEEWAY:
        raise Refusal(TOKEN_EXPIRED, f"the user token expired {int(now - expires)} s ago")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if not _is_time(value):
            raise Refusal(TOKEN_MALFORMED, f"the user token's {name} is not a number")
        if float(value) > now + LEEWAY:
            raise Refusal(TOKEN_NOT_YET_VALID, f"the user token's {name} is {int(float(value) - now)} s ahead")
    return sub, expires


def _is_time(value: object) -> bool:
    return (type(value) is int or type(value) is float) and math.isfinite(value)  # type: ignore[arg-type]


def _names_audience(aud: object, audiences: tuple[str, ...]) -> bool:
    if isinstance(aud, str):
        return aud in audiences
    return isinstance(aud, list) and any(isinstance(name, str) and name in audiences for name in aud)


def _plain(value: Any) -> Any:
    """Struct values as JSON read them: whole numbers back to ints (Struct holds only doubles)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT:
        return int(value)
    return value
