"""An issuer's signing keys: a JWKS from a file (`jwksFile`) or an HTTPS URL (`jwksUri`), SPEC §10.

Keys belong to their issuer: each issuer has its own source, and a token is verified only with
keys of the issuer its `iss` names. A JWK without a `kid` is tried for any token (as Envoy's
jwt_authn does); a token without a `kid` tries every key.

Looking for a key never waits without a bound. A `kid` no key has makes the source look again
(the file re-read if it changed, the URL fetched) at most every REFRESH_EVERY seconds; a request
waits at most WAIT seconds for a fetch under way, which runs on a thread of its own. A fetched
JWKS is used for as long as its answer's `cache-control: max-age` says (DEFAULT_MAX_AGE without
one; never less than REFRESH_EVERY, never more than MAX_MAX_AGE) and refreshed in the background
after that, the old keys serving meanwhile. An issuer whose keys were never fetched fails closed
(`KeysUnavailable`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_JWKS_BYTES = 1 << 20
MAX_KEYS = 100
REFRESH_EVERY = 10.0  # seconds: the most often a source looks again for a `kid` it does not have
WAIT = 1.0  # seconds: the longest a request waits for a fetch under way
FETCH_TIMEOUT = 5.0
DEFAULT_MAX_AGE = 300.0
MAX_MAX_AGE = 86_400.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NOT_STORED = re.compile(r"(?:^|,)\s*no-(?:store|cache)\s*(?:,|=|$)", re.IGNORECASE)

log = logging.getLogger("mandate")


class KeysUnavailable(Exception):
    """The issuer's keys cannot be had now; tokens of that issuer are refused."""


class Jwks:
    """One JWKS document's signature keys, each parsed for an algorithm the first time one asks.

    `strict` (a file the operator wrote): every key must be a usable public signature key, or
    the document is refused. Fetched documents keep their usable keys and skip the rest."""

    def __init__(self, document: bytes, strict: bool) -> None:
        try:
            data = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        keys = data.get("keys") if type(data) is dict else None
        if type(keys) is not list:
            raise ValueError('not a JWKS: no "keys" list')
        if len(keys) > MAX_KEYS:
            raise ValueError(f"more than {MAX_KEYS} keys")
        self.keys: list[dict[str, Any]] = []
        for index, key in enumerate(keys):
            problem = _key_problem(key)
            if problem and strict:
                raise ValueError(f"key {index}: {problem}")
            if not problem:
                self.keys.append(key)
        if not self.keys:
            raise ValueError("no usable signature key")
        self.fingerprints = frozenset(fingerprint(key) for key in self.keys)
        self._parsed: dict[tuple[int, str], PyJWK | None] = {}

    def candidates(self, kid: str | None, algorithm: str) -> tuple[list[tuple[bytes, PyJWK]], bool]:
        """Keys that may have signed a token with this `kid` and `alg`, with their fingerprints, and
        whether any key was meant for that `kid` at all (False: look for it again)."""
        found: list[tuple[bytes, PyJWK]] = []
        named = False
        for index, key in enumerate(self.keys):
            key_id = key.get("kid")
            if kid is not None and key_id is not None and key_id != kid:
                continue
            named = True
            parsed = self._parse(index, algorithm)
            if parsed is not None:
                found.append((fingerprint(key), parsed))
        return found, named

    def _parse(self, index: int, algorithm: str) -> PyJWK | None:
        """The key for `algorithm`; None when it is another algorithm's (its `alg`, `kty` or curve)."""
        slot = (index, algorithm)
        if slot in self._parsed:
            return self._parsed[slot]
        key = self.keys[index]
        parsed: PyJWK | None = None
        if key.get("alg", algorithm) == algorithm:
            try:
                parsed = PyJWK(key, algorithm)
            except (PyJWKError, PyJWTError, ValueError, TypeError):
                parsed = None
        self._parsed[slot] = parsed
        return parsed


def fingerprint(key: dict[str, Any]) -> bytes:
    return orjson.dumps(key, option=orjson.OPT_SORT_KEYS)


def _key_problem(key: object) -> str:
    """Why a JWKS entry is not a usable public signature key ("" when it is)."""
    if not isinstance(key, dict):
        return "not an object"
    if key.get("use", "sig") != "sig":
        return f'"use" is {key.get("use")!r}, not "sig"'
    if key.get("kty") not in ("RSA", "EC", "OKP"):
        return f"kty {key.get('kty')!r} is not RSA, EC or OKP (symmetric keys are never used)"
    if "d" in key:
        return "it holds a private key: publish only the public part"
    if not isinstance(key.get("kid", ""), str) or not isinstance(key.get("alg", ""), str):
        return '"kid" and "alg" must be strings'
    algorithm = key.get("alg")
    if algorithm is not None and algorithm not in ALGORITHMS:
        return f"alg {algorithm!r} is not one of {', '.join(ALGORITHMS)}"
    try:
        PyJWK(key, algorithm or None)
    except (PyJWKError, PyJWTError, ValueError, TypeError) as exc:
        return f"not a usable key: {exc}"
    return ""


class FileKeys:
    """A JWKS file, read at load (a broken one is a load error) and read again, at most every
    REFRESH_EVERY seconds, when a token names a `kid` it lacks and the file has changed (a
    mounted Secret rotated without a policy reload)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._stamp = _stamp(path)
        self.jwks = Jwks(_read(path), strict=True)
        self._looked = clock()

    def current(self) -> Jwks:
        return self.jwks

    def look_again(self) -> Jwks:
        now = self._clock()
        if now - self._looked >= REFRESH_EVERY:
            self._looked = now
            try:
                stamp = _stamp(self.path)
                if stamp != self._stamp:
                    self.jwks, self._stamp = Jwks(_read(self.path), strict=True), stamp
            except (OSError, ValueError) as exc:
                log.warning("keeping the keys read before from %s: %s", self.path, exc)
        return self.jwks

    def holds(self, key: bytes) -> bool:
        return key in self.jwks.fingerprints


def _stamp(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        document = file.read(MAX_JWKS_BYTES + 1)
    if len(document) > MAX_JWKS_BYTES:
        raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
    return document


class RemoteKeys:
    """A JWKS URL (HTTPS; the system trust store, honouring SSL_CERT_FILE, or `ca_file`)."""

    def __init__(self, uri: str, ca_file: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.uri, self.ca_file = uri, ca_file
        self._clock = clock
        self.jwks: Jwks | None = None
        self._fresh_until = -math.inf
        self._attempted = -math.inf
        self._under_way: threading.Event | None = None
        self._lock = threading.Lock()
        self.fetches = 0  # attempts started, for tests and the log
        self.error = ""  # why the last attempt failed

    def current(self) -> Jwks:
        """The keys to verify with now: fresh ones, or stale ones while newer are fetched."""
        jwks = self.jwks
        if jwks is not None and self._clock() < self._fresh_until:
            return jwks
        fetch = self._fetch()
        if jwks is None and fetch is not None:
            fetch.wait(WAIT)
        return self._have()

    def look_again(self) -> Jwks:
        """For a `kid` no key has: fetch now unless that was tried less than REFRESH_EVERY ago."""
        fetch = self._fetch()
        if fetch is not None:
            fetch.wait(WAIT)
        return self._have()

    def holds(self, key: bytes) -> bool:
        jwks = self.jwks
        return jwks is not None and key in jwks.fingerprints

    def _have(self) -> Jwks:
        jwks = self.jwks
        if jwks is None:
            raise KeysUnavailable(f"the keys at {self.uri} could not be fetched ({self.error or 'fetch under way'})")
        return jwks

    def _fetch(self) -> threading.Event | None:
        """The fetch under way, or a new one; None when the last began less than REFRESH_EVERY ago."""
        with self._lock:
            under_way = self._under_way
            if under_way is not None and not under_way.is_set():
                return under_way
            now = self._clock()
            if now - self._attempted < REFRESH_EVERY:
                return None
            self._attempted = now
            self.fetches += 1
            done = self._under_way = threading.Event()
        threading.Thread(target=self._run, args=(done,), name="jwks-fetch", daemon=True).start()
        return done

    def _run(self, done: threading.Event) -> None:
        try:
            document, max_age = fetch_jwks(self.uri, self.ca_file)
            jwks = Jwks(document, strict=False)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the old keys (or none) stay
            self.error = str(exc)[:300] or type(exc).__name__
            log.warning("cannot fetch the JWKS at %s: %s", self.uri, self.error)
        else:
            self.jwks, self.error = jwks, ""
            self._fresh_until = self._clock() + max_age
        finally:
            done.set()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A JWKS is read where it was configured, never where an answer points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_jwks(uri: str, ca_file: str | None, timeout: float = FETCH_TIMEOUT) -> tuple[bytes, float]:
    """The JWKS document at `uri` and how long to keep it."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirects())
    request = urllib.request.Request(uri, headers={"accept": "application/jwk-set+json, application/json"})
    with opener.open(request, timeout=timeout) as response:
        document = response.read(MAX_JWKS_BYTES + 1)
        cache_control = response.headers.get("cache-control", "")
    if len(document) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
    return document, max_age(cache_control)


def max_age(cache_control: str) -> float:
    """Seconds to keep a JWKS by its `cache-control`, within [REFRESH_EVERY, MAX_MAX_AGE]."""
    if _NOT_STORED.search(cache_control):
        return REFRESH_EVERY
    found = _MAX_AGE.search(cache_control)
    seconds = float(found.group(1)) if found else DEFAULT_MAX_AGE
    return min(max(seconds, REFRESH_EVERY), MAX_MAX_AGE)


_remote: dict[tuple[str, str | None], RemoteKeys] = {}
_remote_lock = threading.Lock()


def remote_keys(uri: str, ca_file: str | None) -> RemoteKeys:
    """One source per URL and trust for the whole process: a policy reload keeps the keys
    fetched and the pace of fetching."""
    with _remote_lock:
        found = _remote.get((uri, ca_file))
        if found is None:
            found = _remote[(uri, ca_file)] = RemoteKeys(uri, ca_file)
        return found
