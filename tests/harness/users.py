"""Users for the tests (SPEC §10): real key pairs (RSA and EC, by `cryptography`), the JWKS that
publishes them, tokens PyJWT signs with them, and the claims Envoy's jwt_authn would pass on.

Nothing here verifies anything: verification is Mandate's (authz/users/).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.struct_pb2 import Struct
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.com"
OTHER_ISSUER = "https://other-idp.example.com"
AUDIENCE = "mandate"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class SigningKey:
    """A private key with the `kid` and `alg` its JWK is published under."""

    kid: str
    algorithm: str
    private: PrivateKey

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        text = RSAAlgorithm.to_jwk(public) if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm.to_jwk(public)
        return {**json.loads(text), "kid": self.kid, "use": "sig", "alg": self.algorithm}


def rsa_key(kid: str = "rsa-1") -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str = "ec-1") -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def jwks(*keys: SigningKey) -> bytes:
    return orjson.dumps({"keys": [key.jwk() for key in keys]})


@dataclass
class Idp:
    """An identity provider: its issuer name, its keys, and a clock tokens are minted against."""

    issuer: str = ISSUER
    keys: list[SigningKey] = field(default_factory=lambda: [rsa_key(), ec_key()])
    now: float = field(default_factory=time.time)

    def write_jwks(self, path: Path) -> Path:
        path.write_bytes(jwks(*self.keys))
        return path

    def token(
        self,
        sub: str = "alice",
        groups: list[str] | None = None,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed token for `sub`; `claims` override the defaults (None removes one)."""
        key = key or self.keys[0]
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": AUDIENCE,
            "iat": int(self.now),
            "exp": int(self.now) + 600,
            "groups": groups if groups is not None else [],
            **claims,
        }
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, key.private, algorithm=key.algorithm, headers={"kid": key.kid, **(headers or {})})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def unsigned(claims: dict[str, Any], header: dict[str, Any] | None = None, signature: bytes = b"") -> str:
    """A token assembled by hand (alg none, a forged signature, a tampered payload)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = header if header is not None else {"alg": "none", "typ": "JWT"}
    return f"{part(orjson.dumps(head))}.{part(orjson.dumps(claims))}.{part(signature)}"


def jwt_authn_metadata(claims: dict[str, Any], key: str = ISSUER) -> bytes:
    """The Struct Envoy's jwt_authn leaves under `filter_metadata["envoy.filters.http.jwt_authn"]`,
    serialized: the verified payload under `key` (the issuer, or Istio's `payload`)."""
    struct = Struct()
    struct.update({key: claims})
    return struct.SerializeToString()


USERS_SETTINGS = """
apiVersion: mandate.dev/v1alpha1
kind: Settings
metadata: {name: default}
spec:
  users:
    issuers:
      - issuer: %(issuer)s
        audiences: [mandate, other-audience]
        %(keys)s
"""


def users_settings(jwks_file: Path | None = None, jwks_uri: str = "", ca_file: Path | None = None) -> str:
    """A Settings document trusting ISSUER with keys from a file or a URL."""
    if jwks_file is not None:
        keys = f"jwksFile: {jwks_file}"
    else:
        keys = f"jwksUri: {jwks_uri}" + (f"\n        caFile: {ca_file}" if ca_file else "")
    return USERS_SETTINGS % {"issuer": ISSUER, "keys": keys}


def principal(name: str) -> str:
    return f"spiffe://cluster.local/ns/{name}/sa/{name}"


# Profiles whose rules name users: billing-agent refunds only for finance (and only the user's own
# customer), tells balances only to alice; the orchestrator delegates to support-agent only for support.
USER_PROFILES = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: billing-db}
spec: {kind: mcp, hosts: [billing-db.local], pathPrefix: /mcp}
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: tickets}
spec: {kind: mcp, hosts: [tickets.local]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: orchestrator}
spec:
  principals: [spiffe://cluster.local/ns/orchestrator/sa/orchestrator]
  hosts: [orchestrator.local]
  mission: takes people's requests and hands them on
  mcp: [{server: tickets, tools: [read]}]
  agents:
    - agent: billing-agent
      grant: {mcp: [{server: billing-db, tools: [refund, balance, ping]}]}
    - agent: support-agent
      grant: {users: {groups: [support]}, mcp: [{server: tickets, tools: [read]}]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: billing-agent}
spec:
  principals: [spiffe://cluster.local/ns/billing-agent/sa/billing-agent]
  hosts: [billing-agent.local]
  mission: refunds for finance, the customer's own
  mcp:
    - server: billing-db
      tools: [refund]
      users: {groups: [finance]}
      when: 'mcp.tool.arguments.customer == user.claims.customer_id'
    - {server: billing-db, tools: [balance], users: {subjects: [alice]}}
    - {server: billing-db, tools: [ping]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: support-agent}
spec:
  principals: [spiffe://cluster.local/ns/support-agent/sa/support-agent]
  hosts: [support-agent.local]
  mission: reads tickets
  mcp: [{server: tickets, tools: [read]}]
"""


def hmac_signed(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token keyed with `secret`: the RS/HS confusion, keyed with an RSA public key's PEM."""
    head = base64.urlsafe_b64encode(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": kid})).rstrip(b"=")
    body = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=")
    signature = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def public_pem(key: SigningKey) -> bytes:
    return key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def request_authentication(jwks_file: Path, payload_key: str = ISSUER) -> dict[str, Any]:
    """Envoy's jwt_authn filter as Istio's RequestAuthentication configures it for one jwtRule
    (`forwardOriginalToken: false`): a token, if present, must verify; none is allowed; the
    verified payload goes to the dynamic metadata under `payload_key` (SPEC §10: the issuer;
    Istio itself writes `payload`), and the token is removed from the request."""
    provider = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"filename": str(jwks_file)},
        "forward": False,
        "payload_in_metadata": payload_key,
        "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
    }
    requires = {"requires_any": {"requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]}}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"origins-0": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
            "bypass_cors_preflight": True,
        },
    }
