"""Who may call the admin API: loopback only, unless it is authenticated (a bearer key, mTLS, or both).

The admin API can revoke chains and reload policy, so a listener another host can reach without
credentials is refused at start. A bearer key file holds one key a line (so keys rotate by
adding the new one first, then removing the old); it is read again whenever it changes, so a key
removed is refused from the next call on, without a restart, and a file that turns unusable keeps
the keys last read from it. A call must carry `authorization: Bearer <key>` matching one of them,
compared in constant time, or it is refused with UNAUTHENTICATED. With `--admin-client-ca` the
TLS handshake itself requires a client certificate that CA signed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from authz.serve.grpc_server import split_address

MIN_KEY_LENGTH = 32  # characters: `openssl rand -hex 32` gives 64
log = logging.getLogger("mandate")


class AdminConfigError(ValueError):
    """The admin listener's flags do not hold together; the message is one line for the operator."""


@dataclass(frozen=True)
class AdminSettings:
    listen: str = ""  # empty: no admin listener
    key_file: str | None = None  # bearer keys, one a line
    tls_cert: str | None = None  # the listener's certificate chain (PEM)
    tls_key: str | None = None
    client_ca: str | None = None  # mTLS: clients must present a certificate this CA signed

    @property
    def authenticated(self) -> bool:
        return bool(self.key_file or self.client_ca)


def check_settings(settings: AdminSettings) -> None:
    """Refuse, before anything listens, a listener that would be open to the network without credentials."""
    if not settings.listen:
        return
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise AdminConfigError("--admin-tls-cert and --admin-tls-key go together")
    if settings.client_ca and not settings.tls_cert:
        raise AdminConfigError("--admin-client-ca (mTLS) needs --admin-tls-cert and --admin-tls-key")
    host, _ = split_address(settings.listen, "the admin API")
    if not settings.authenticated and not is_loopback(host):
        raise AdminConfigError(
            f"refusing --admin-listen {settings.listen}: it is not a loopback address and the admin API has no "
            "authentication (give --admin-key FILE and/or --admin-client-ca, or listen on 127.0.0.1)"
        )
    if settings.key_file:
        read_keys(settings.key_file)
    for flag, path in (
        ("--admin-tls-cert", settings.tls_cert),
        ("--admin-tls-key", settings.tls_key),
        ("--admin-client-ca", settings.client_ca),
    ):
        if path and not os.access(path, os.R_OK):
            raise AdminConfigError(f"{flag} {path}: cannot read it")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def read_keys(path: str) -> list[bytes]:
    """The bearer keys of a key file, one a line; an unusable file is an AdminConfigError."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AdminConfigError(f"--admin-key {path}: cannot read it: {exc}") from None
    keys = [line.strip() for line in lines if line.strip()]
    if not keys:
        raise AdminConfigError(f"--admin-key {path}: the file holds no key")
    if any(len(key) < MIN_KEY_LENGTH or not key.isascii() or " " in key for key in keys):
        raise AdminConfigError(
            f"--admin-key {path}: every key must be at least {MIN_KEY_LENGTH} ASCII characters without spaces "
            "(e.g. `openssl rand -hex 32`)"
        )
    return [key.encode("ascii") for key in keys]


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)  # through a Secret volume's symlinks
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class BearerKeys(grpc.ServerInterceptor):
    """Lets a call through only with `authorization: Bearer <one of the keys in path>`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp = _stamp(path)
        self._digests = [_digest(key) for key in read_keys(path)]
        self._refuse = grpc.unary_unary_rpc_method_handler(_unauthenticated)

    def _current(self) -> list[bytes]:
        """The keys' digests, read again if the file changed since; the last good ones if it broke."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return self._digests
        try:
            digests = [_digest(key) for key in read_keys(self.path)]
        except AdminConfigError as exc:
            self._stamp = stamp  # said once per change
            log.warning("%s; the admin keys read before stay in use", exc)
            return self._digests
        if _stamp(self.path) == stamp:  # not written while it was read: a half-written key is no key
            self._stamp, self._digests = stamp, digests
            log.info("admin key file %s changed: its keys are in use", self.path)
        return self._digests

    def accepts(self, metadata: Sequence[tuple[str, Any]]) -> bool:
        """Every key is compared, each in constant time over equal-length digests, whatever matched."""
        digests = self._current()
        presented = next((value for name, value in metadata if name == "authorization"), "")
        if isinstance(presented, bytes):
            presented = presented.decode("latin-1")
        scheme, _, key = str(presented).partition(" ")
        digest = _digest(key.strip().encode("utf-8", "replace"))
        matched = False
        for known in digests:
            matched |= hmac.compare_digest(digest, known)
        return matched and scheme.lower() == "bearer"

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        if self.accepts(details.invocation_metadata):
            return continuation(details)
        return self._refuse


def _unauthenticated(request: bytes, context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "the admin API needs `authorization: Bearer <key>` (--admin-key)")


def server_credentials(settings: AdminSettings) -> grpc.ServerCredentials | None:
    """TLS for the listener when a certificate is given; mTLS when a client CA is."""
    if not settings.tls_cert or not settings.tls_key:
        return None
    ca = Path(settings.client_ca).read_bytes() if settings.client_ca else None
    pair = (Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)
