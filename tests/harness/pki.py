"""A throwaway PKI for mTLS tests (EC P-256, written as PEM files).

`MeshPKI(dir)` creates a trusted CA, an untrusted CA and Envoy's server certificate (DNS
`localhost`, IP 127.0.0.1, URI SAN `spiffe://cluster.local/ns/mesh/sa/envoy`). Client SVIDs
carry their SPIFFE ID as the only URI SAN, as Istio's do.

httpx (0.28) and httpx2 both mishandle `verify=<path>` combined with `cert=`: httpx silently
drops the client certificate, httpx2 raises. Always pass an `ssl.SSLContext` built by
`client_ssl_context`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
ENVOY_SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/ns/mesh/sa/envoy"

_Key = ec.EllipticCurvePrivateKey


def spiffe_id(ns: str, sa: str) -> str:
    """Istio's SPIFFE ID form for a namespace and service account."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}"


@dataclass(frozen=True)
class CertPair:
    """Paths of a PEM certificate and its unencrypted PKCS#8 key."""

    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: _Key) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(common_name: str) -> tuple[x509.Certificate, _Key]:
    """A self-signed CA valid for two days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    ca_cert: x509.Certificate, ca_key: _Key, common_name: str, sans: list[x509.GeneralName], *, server: bool
) -> tuple[x509.Certificate, _Key]:
    """A leaf certificate for a server (serverAuth) or a client (clientAuth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


class MeshPKI:
    """Trusted CA, untrusted CA, Envoy's server pair, and client SVIDs on demand."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ca, self._ca_key = make_ca("mandate-e2e-ca")
        self._rogue_ca, self._rogue_ca_key = make_ca("untrusted-e2e-ca")
        self.ca_cert = _write_cert(self.dir / "ca.crt", self._ca)
        self.untrusted_ca_cert = _write_cert(self.dir / "untrusted-ca.crt", self._rogue_ca)
        cert, key = make_leaf(
            self._ca,
            self._ca_key,
            "envoy",
            [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.UniformResourceIdentifier(ENVOY_SPIFFE_ID),
            ],
            server=True,
        )
        self.server = CertPair(_write_cert(self.dir / "envoy.crt", cert), _write_key(self.dir / "envoy.key", key))
        self._issued: dict[tuple[str, str, bool], CertPair] = {}

    def client_cert(self, ns: str, sa: str, *, untrusted: bool = False) -> CertPair:
        """A client SVID for `spiffe://cluster.local/ns/<ns>/sa/<sa>` (cached per identity)."""
        cache_key = (ns, sa, untrusted)
        if cache_key not in self._issued:
            ca, ca_key = (self._rogue_ca, self._rogue_ca_key) if untrusted else (self._ca, self._ca_key)
            cert, key = make_leaf(
                ca, ca_key, f"{sa}.{ns}", [x509.UniformResourceIdentifier(spiffe_id(ns, sa))], server=False
            )
            stem = f"client-{'untrusted-' if untrusted else ''}{ns}-{sa}"
            self._issued[cache_key] = CertPair(
                _write_cert(self.dir / f"{stem}.crt", cert), _write_key(self.dir / f"{stem}.key", key)
            )
        return self._issued[cache_key]

    def ssl_context(self, client: CertPair | None) -> ssl.SSLContext:
        """A client context trusting this PKI's CA, presenting `client` if given."""
        return client_ssl_context(self.ca_cert, client)


def client_ssl_context(ca_cert: Path, client: CertPair | None = None) -> ssl.SSLContext:
    """`ssl.create_default_context(cafile=ca)` plus the client chain; pass as `verify=`."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context
