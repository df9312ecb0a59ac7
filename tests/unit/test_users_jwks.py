"""An issuer's keys from `jwksUri` (SPEC §10): fetched over real HTTPS (a certificate of the tests'
PKI) with the issuer's `caFile` or the system trust store (SSL_CERT_FILE), kept as the answer's
cache-control says, fetched again for a new `kid` at most every 10 s, and never waited for
without a bound: an issuer whose keys cannot be had fails closed."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from jwt.algorithms import RSAAlgorithm

from authz.check.decision import Refusal
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, to_check_request
from authz.policy.compiler import compile_directory
from authz.policy.loader import PolicyLoadError
from authz.reasons import TOKEN_KEYS_UNAVAILABLE, TOKEN_UNKNOWN_KEY
from authz.users import keys
from authz.users.keys import REFRESH_EVERY, FileKeys, RemoteKeys, max_age
from authz.users.verify import Issuer, UserSettings
from tests.harness.answers import outcome
from tests.harness.jwks_server import JwksServer
from tests.harness.pki import MeshPKI
from tests.harness.users import ISSUER, USER_PROFILES, Idp, bearer, ec_key, jwks, principal, rsa_key, users_settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> MeshPKI:
    return MeshPKI(tmp_path_factory.mktemp("jwks-pki"))


@pytest.fixture
def idp() -> Idp:
    return Idp()


@pytest.fixture
def server(pki: MeshPKI, idp: Idp) -> Iterator[JwksServer]:
    running = JwksServer(pki.server, jwks(*idp.keys)).start()
    yield running
    running.stop()


class Ticking:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings_for(remote: RemoteKeys) -> UserSettings:
    issuer = Issuer(ISSUER, ("mandate",), frozenset({"RS256", "ES256"}), remote)
    return UserSettings("authorization", "groups", {ISSUER: issuer})


def user_of(settings: UserSettings, token: str) -> str:
    user = settings.from_header(f"Bearer {token}", time.time())
    assert user is not None
    return user.sub


def refusal(settings: UserSettings, token: str) -> str:
    with pytest.raises(Refusal) as refused:
        settings.from_header(f"Bearer {token}", time.time())
    return refused.value.verdict.reason


def ping(policy_dir: Path, token: str) -> tuple[str, str]:
    authorizer = Authorizer(compile_directory(policy_dir))
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ping"}}'
    request = AuthzInput("POST", "/mcp", "billing-db.local", bearer(token), body, principal("billing-agent"))
    return outcome(CheckResponse.FromString(authorizer.check_bytes(to_check_request(request).SerializeToString())))


def write_policy(directory: Path, settings: str) -> Path:
    (directory / "policy.yaml").write_text(settings + "---" + USER_PROFILES)
    return directory


# --- trust -------------------------------------------------------------------------------------


def test_keys_fetched_over_https_with_the_issuers_ca_file_verify_its_tokens(server, pki, idp, tmp_path):
    policy = write_policy(tmp_path, users_settings(jwks_uri=server.uri, ca_file=pki.ca_cert))
    assert ping(policy, idp.token("alice")) == ("allow", "allowed")
    assert ping(policy, idp.token("alice", key=idp.keys[1])) == ("allow", "allowed")  # ES256
    assert server.fetches == 1


def test_the_system_trust_store_is_used_honouring_ssl_cert_file(server, pki, idp, monkeypatch):
    untrusted = settings_for(RemoteKeys(server.uri, None))
    assert refusal(untrusted, idp.token("alice")) == TOKEN_KEYS_UNAVAILABLE  # the tests' CA is in no system store
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_cert))
    assert user_of(settings_for(RemoteKeys(server.uri, None)), idp.token("alice")) == "alice"


def test_a_ca_file_that_is_not_a_certificate_is_a_load_error(server, tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    write_policy(tmp_path, users_settings(jwks_uri=server.uri, ca_file=bogus))
    with pytest.raises(PolicyLoadError, match="caFile"):
        compile_directory(tmp_path)


def test_a_redirect_is_not_followed(server, pki, idp):
    server.redirect_to = "https://127.0.0.1:1/elsewhere.json"
    assert refusal(settings_for(RemoteKeys(server.uri, str(pki.ca_cert))), idp.token("alice")) == TOKEN_KEYS_UNAVAILABLE


# --- failing closed, with a bound -----------------------------------------------------------------


def test_keys_that_cannot_be_fetched_fail_closed(pki, idp, tmp_path):
    policy = write_policy(tmp_path, users_settings(jwks_uri="https://127.0.0.1:9/jwks.json", ca_file=pki.ca_cert))
    assert ping(policy, idp.token("alice")) == ("deny", TOKEN_KEYS_UNAVAILABLE)


def test_a_request_waits_for_a_hanging_fetch_at_most_its_bound(server, pki, idp):
    server.hang.set()
    remote = RemoteKeys(server.uri, str(pki.ca_cert))
    started = time.monotonic()
    assert refusal(settings_for(remote), idp.token("alice")) == TOKEN_KEYS_UNAVAILABLE
    assert time.monotonic() - started < keys.FETCH_TIMEOUT  # it did not wait for the fetch to give up
    server.release.set()  # the fetch ends; its keys serve the next request
    deadline = time.monotonic() + 10
    while remote.jwks is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert user_of(settings_for(remote), idp.token("alice")) == "alice"


def test_a_failed_fetch_is_not_retried_for_every_request(pki, idp):
    clock = Ticking()
    remote = RemoteKeys("https://127.0.0.1:9/jwks.json", str(pki.ca_cert), clock)
    settings = settings_for(remote)
    for _ in range(5):
        assert refusal(settings, idp.token("alice")) == TOKEN_KEYS_UNAVAILABLE
    assert remote.fetches == 1
    clock.now += REFRESH_EVERY
    assert refusal(settings, idp.token("alice")) == TOKEN_KEYS_UNAVAILABLE
    assert remote.fetches == 2


# --- rotation and caching ------------------------------------------------------------------------


def test_a_new_kid_is_fetched_once_and_the_old_one_holds_until_removed(server, pki, idp):
    clock = Ticking()
    remote = RemoteKeys(server.uri, str(pki.ca_cert), clock)
    settings = settings_for(remote)
    old, new = idp.keys[0], rsa_key("rsa-2")
    assert user_of(settings, idp.token("alice", key=old)) == "alice"
    server.document = jwks(old, new)  # the issuer publishes a new key beside the old
    clock.now += REFRESH_EVERY
    assert user_of(settings, idp.token("bob", key=new)) == "bob"
    assert server.fetches == 2
    assert user_of(settings, idp.token("carol", key=old)) == "carol"
    assert refusal(settings, idp.token("dave", key=rsa_key("rsa-3"))) == TOKEN_UNKNOWN_KEY  # within 10 s: no fetch
    assert server.fetches == 2
    server.document = jwks(new)  # the old key is withdrawn
    clock.now += 300  # the JWKS's max-age: refreshed in the background, the keys in hand serve meanwhile
    settings.from_header(f"Bearer {idp.token('erin', key=new)}", time.time())
    deadline = time.monotonic() + 10
    while remote.jwks is not None and remote.holds(keys.fingerprint(old.jwk())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.fetches == 3
    assert refusal(settings, idp.token("carol", key=old)) == TOKEN_UNKNOWN_KEY  # even the token verified before


def test_keys_are_kept_as_the_answers_cache_control_says(server, pki, idp):
    clock = Ticking()
    server.cache_control = "public, max-age=60"
    remote = RemoteKeys(server.uri, str(pki.ca_cert), clock)
    settings = settings_for(remote)
    assert user_of(settings, idp.token("alice")) == "alice"
    clock.now += 59
    assert user_of(settings, idp.token("bob")) == "bob"
    assert server.fetches == 1
    clock.now += 2
    assert user_of(settings, idp.token("carol")) == "carol"  # stale keys serve while the refresh runs
    deadline = time.monotonic() + 10
    while server.fetches < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.fetches == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("max-age=60", 60.0),
        ("public, max-age=3600, must-revalidate", 3600.0),
        ('max-age="120"', 120.0),
        ("no-store", REFRESH_EVERY),
        ("no-cache, max-age=600", REFRESH_EVERY),
        ("max-age=0", REFRESH_EVERY),
        ("max-age=99999999", keys.MAX_MAX_AGE),
        ("", keys.DEFAULT_MAX_AGE),
        ("max-age=abc", keys.DEFAULT_MAX_AGE),
    ],
)
def test_the_cache_control_an_answer_gives_is_read_within_bounds(header, seconds):
    assert max_age(header) == seconds
    assert REFRESH_EVERY <= seconds <= keys.MAX_MAX_AGE and not math.isinf(seconds)


def test_a_fetched_jwks_keeps_its_usable_signature_keys_and_skips_the_rest(server, pki, idp):
    usable = ec_key("ec-ok")
    server.document = (
        b'{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"hs"},{"kty":"RSA","use":"enc","kid":"e","n":"x","e":"AQAB"},'
        + jwks(usable)[len(b'{"keys":[') :]
    )
    settings = settings_for(RemoteKeys(server.uri, str(pki.ca_cert)))
    assert user_of(settings, idp.token("alice", key=usable)) == "alice"


# --- jwksFile ----------------------------------------------------------------------------------


def test_a_jwks_file_is_read_again_for_a_new_kid_once_it_changed_at_most_every_10_s(idp, tmp_path):
    clock = Ticking()
    path = idp.write_jwks(tmp_path / "jwks.json")
    source = FileKeys(str(path), clock)
    settings = settings_for(source)
    new = rsa_key("rsa-2")
    path.write_bytes(jwks(*idp.keys, new))  # a mounted Secret, rotated
    assert refusal(settings, idp.token("alice", key=new)) == TOKEN_UNKNOWN_KEY  # read less than 10 s ago
    clock.now += REFRESH_EVERY
    assert user_of(settings, idp.token("alice", key=new)) == "alice"


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"{", "not JSON"),
        (b'{"keys": {}}', "not a JWKS"),
        (b'{"keys": []}', "no usable signature key"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "symmetric keys are never used"),
        (b'{"keys": [{"kty": "RSA", "alg": "HS256", "n": "x", "e": "AQAB"}]}', "alg 'HS256'"),
    ],
)
def test_a_broken_jwks_file_is_a_load_error(tmp_path, document, problem):
    path = tmp_path / "jwks.json"
    path.write_bytes(document)
    write_policy(tmp_path, users_settings(path))
    with pytest.raises(PolicyLoadError, match=problem):
        compile_directory(tmp_path)


def test_a_jwks_file_holding_a_private_key_is_a_load_error(idp, tmp_path):
    private = orjson.loads(RSAAlgorithm.to_jwk(idp.keys[0].private))
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [private]}))
    write_policy(tmp_path, users_settings(path))
    with pytest.raises(PolicyLoadError, match="private key"):
        compile_directory(tmp_path)


@pytest.mark.parametrize(
    ("issuer", "problem"),
    [
        ("{issuer: i, audiences: [m], jwksFile: /a, jwksUri: 'https://x'}", "exactly one of jwksFile and jwksUri"),
        ("{issuer: i, audiences: [m]}", "exactly one of jwksFile and jwksUri"),
        ("{issuer: i, audiences: [m], jwksUri: 'http://x/jwks'}", "https://"),
        ("{issuer: i, audiences: [m], jwksFile: relative.json}", "absolute path"),
        ("{issuer: i, audiences: [m], jwksFile: /a, caFile: /ca.pem}", "caFile is only for jwksUri"),
        ("{issuer: i, audiences: [], jwksFile: /a}", "audiences"),
        ("{issuer: i, audiences: [m], jwksFile: /a, algorithms: [none]}", "algorithms"),
        ("{issuer: i, audiences: [m], jwksFile: /a, algorithms: [HS256]}", "algorithms"),
    ],
)
def test_an_issuer_is_checked_at_load(tmp_path, issuer, problem):
    head = "apiVersion: mandate.dev/v1alpha1\nkind: Settings\nmetadata: {name: default}\n"
    settings = f"{head}spec:\n  users:\n    issuers: [{issuer}]\n"
    write_policy(tmp_path, settings)
    with pytest.raises(PolicyLoadError, match=problem):
        compile_directory(tmp_path)


def test_a_rule_with_users_in_a_set_without_users_settings_is_a_load_error(tmp_path):
    (tmp_path / "policy.yaml").write_text(USER_PROFILES)
    with pytest.raises(PolicyLoadError, match="no users.issuers"):
        compile_directory(tmp_path)
