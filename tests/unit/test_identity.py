"""SPIFFE identity: parsing, source order, and what never counts as identity (SPEC §2)."""

from __future__ import annotations

import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from hypothesis import example, given, settings
from hypothesis import strategies as st

from authz.check.identity import IdentityError, parse_spiffe_id, resolve_caller
from authz.check.request import AuthzInput, to_check_request
from tests.harness.example_policies import GITHUB_HOST, TRIAGE

DOMAINS = frozenset({"cluster.local"})
ALICE = "spiffe://cluster.local/ns/a/sa/alice"


def test_istio_form_is_split_into_namespace_and_service_account():
    parsed = parse_spiffe_id(ALICE)
    assert (parsed.trust_domain, parsed.namespace, parsed.service_account) == ("cluster.local", "a", "alice")
    other = parse_spiffe_id("spiffe://cluster.local/workload/x")
    assert (other.namespace, other.service_account, other.path) == ("", "", "/workload/x")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "cluster.local/ns/a/sa/b",
        "http://cluster.local/ns/a",
        "spiffe://",
        "spiffe://cluster.local",
        "spiffe://cluster.local/",
        "spiffe://Cluster.Local/ns/a",
        "spiffe://cluster.local/ns//sa/b",
        "spiffe://cluster.local/ns/./sa/b",
        "spiffe://cluster.local/ns/../sa/b",
        "spiffe://cluster.local/ns/a%2Fb",
        "spiffe://cluster.local/ns/a/sa/b?x",
        "spiffe://cluster.local/ns/a/sa/b#f",
        "spiffe://user@cluster.local/ns/a",
        "spiffe://cluster.local:8080/ns/a",
        "spiffe://cluster.local/ns/a/sa/b/",
        "spiffe://cluster.local/" + "a" * 2100,
    ],
)
def test_invalid_spiffe_ids_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_spiffe_id(bad)


@given(st.text(max_size=80))
def test_parser_never_crashes_and_round_trips(text):
    try:
        parsed = parse_spiffe_id(text)
    except ValueError:
        return
    assert parsed.principal == text == f"spiffe://{parsed.trust_domain}{parsed.path}"


def test_source_principal_wins_over_istio_metadata():
    request = AuthzInput(source_principal=ALICE, istio_authn_principal="spiffe://cluster.local/ns/b/sa/bob")
    assert resolve_caller(request, DOMAINS, trust_xfcc=False).principal == ALICE


def test_istio_authn_metadata_is_the_fallback():
    request = AuthzInput(istio_authn_principal=ALICE)
    assert resolve_caller(request, DOMAINS, trust_xfcc=False).principal == ALICE


def test_xfcc_is_ignored_unless_trusted():
    request = AuthzInput(headers={"x-forwarded-client-cert": f"By=spiffe://cluster.local/ns/gw/sa/gw;URI={ALICE}"})
    with pytest.raises(IdentityError) as caught:
        resolve_caller(request, DOMAINS, trust_xfcc=False)
    assert caught.value.reason == "no_identity"
    assert resolve_caller(request, DOMAINS, trust_xfcc=True).principal == ALICE


def test_xfcc_never_overrides_the_peer_certificate():
    request = AuthzInput(
        source_principal=ALICE, headers={"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/x/sa/admin"}
    )
    assert resolve_caller(request, DOMAINS, trust_xfcc=True).principal == ALICE


def test_xfcc_with_two_different_uris_is_ambiguous():
    header = f'URI={ALICE},URI="spiffe://cluster.local/ns/x/sa/admin"'
    with pytest.raises(IdentityError) as caught:
        resolve_caller(AuthzInput(headers={"x-forwarded-client-cert": header}), DOMAINS, trust_xfcc=True)
    assert caught.value.reason == "ambiguous_identity"


def test_identity_headers_are_never_identity():
    request = AuthzInput(headers={"x-caller-identity": ALICE, "x-spiffe-id": ALICE, "x-forwarded-for": ALICE})
    with pytest.raises(IdentityError) as caught:
        resolve_caller(request, DOMAINS, trust_xfcc=False)
    assert caught.value.reason == "no_identity"


def test_foreign_trust_domain():
    with pytest.raises(IdentityError) as caught:
        resolve_caller(AuthzInput(source_principal="spiffe://evil.org/ns/a/sa/alice"), DOMAINS, trust_xfcc=False)
    assert caught.value.reason == "untrusted_trust_domain"


def test_unparseable_principal():
    with pytest.raises(IdentityError) as caught:
        resolve_caller(AuthzInput(source_principal="alice"), DOMAINS, trust_xfcc=False)
    assert caught.value.reason == "invalid_identity"


# --- to the letter of the SPIFFE ID standard (red-team finding A) ------------------------------

TRUST_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
SEGMENT_CHARS = TRUST_DOMAIN_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def is_spiffe_workload_id(text: str) -> bool:
    """The standard read plainly, with no regular expression to get wrong the same way: scheme
    `spiffe://`, a trust domain of 1–255 of its characters, then one or more `/`-separated path
    segments of letters, digits, `.`, `-`, `_`, none empty, `.` or `..`; 2048 bytes at most."""
    if len(text.encode("utf-8", "surrogatepass")) > 2048 or text[:9] != "spiffe://":
        return False
    trust_domain, slash, path = text[9:].partition("/")
    if not slash or not 1 <= len(trust_domain) <= 255 or any(char not in TRUST_DOMAIN_CHARS for char in trust_domain):
        return False
    for segment in path.split("/"):
        if segment in ("", ".", "..") or any(char not in SEGMENT_CHARS for char in segment):
            return False
    return True


# Characters near the edge of the allowed sets: controls, newlines, URI delimiters, `%`, uppercase,
# other scripts' letters and digits, look-alikes (Kelvin sign, dotless i), surrogates.
EDGE_CHARS = st.sampled_from(
    [*"aZ09.-_/:@?#%+ \t\n\r\x00\x0b\x0c\x1f\x7f\x85\u2028\u212a\u0131\u00e9\u0661\uff11", "\ud800"]
)
VALID_TRUST_DOMAIN = st.text(st.sampled_from(sorted(TRUST_DOMAIN_CHARS)), min_size=1, max_size=20)
VALID_SEGMENT = st.text(st.sampled_from(sorted(SEGMENT_CHARS)), min_size=1, max_size=8)


@st.composite
def near_spiffe_ids(draw: st.DrawFn) -> str:
    """A valid ID, or one with a fault or two: a character swapped, added or dropped anywhere,
    a bad segment, a different scheme, or a length around the 255-byte trust domain and
    2048-byte ID limits. About half are valid."""
    scheme, trust_domain = "spiffe://", draw(VALID_TRUST_DOMAIN)
    segments = draw(st.lists(VALID_SEGMENT, min_size=1, max_size=5))
    faults = draw(st.lists(st.sampled_from(["char", "segment", "scheme", "long domain", "long id"]), max_size=2))
    if "segment" in faults:
        bad = draw(st.sampled_from(["", ".", ".."]) | st.text(EDGE_CHARS, min_size=1, max_size=2))
        segments.insert(draw(st.integers(0, len(segments))), bad)
    if "scheme" in faults:
        scheme = draw(st.sampled_from(["SPIFFE://", "Spiffe://", "spiffe:/", "spiffe:///", "spiffe:", ""]))
    if "long domain" in faults:
        trust_domain = draw(st.sampled_from(["a" * 254, "a" * 255, "a" * 256, "cluster.local" + "x" * 243]))
    if "long id" in faults:
        used = len(scheme) + len(trust_domain) + len(segments) + sum(map(len, segments))
        segments.append("s" * (2047 - used + draw(st.integers(-1, 1))))  # one byte short of the limit, at it, over it
    text = scheme + trust_domain + "".join("/" + segment for segment in segments)
    for _ in range(faults.count("char")):
        where = draw(st.integers(0, len(text)))
        text = text[:where] + draw(EDGE_CHARS) + text[where + draw(st.integers(0, 1)) :]
    return text


@settings(max_examples=3000, deadline=None)
@given(near_spiffe_ids() | st.text(max_size=60) | st.text(EDGE_CHARS, max_size=40).map("spiffe://td/{}".format))
@example("spiffe://cluster.local/ns/triage/sa/bot\n")
@example("spiffe://cluster.local\n/ns/triage/sa/bot")
@example("spiffe://cluster.local/ns/triage\n/sa/bot")
@example("spiffe://Cluster.local/ns/a/sa/b")
@example("spiffe://cluster.local/ns/a/sa/\u212a")  # KELVIN SIGN, lowercase k under casefold
def test_parser_agrees_with_the_standard_read_plainly(text: str) -> None:
    try:
        parsed = parse_spiffe_id(text)
    except ValueError:
        assert not is_spiffe_workload_id(text), text
        return
    assert is_spiffe_workload_id(text), text
    assert parsed.principal == text == f"spiffe://{parsed.trust_domain}{parsed.path}"


@pytest.mark.parametrize(
    "bad",
    [
        "spiffe://cluster.local/ns/triage/sa/bot\n",
        "spiffe://cluster.local\n/ns/triage/sa/bot",
        "spiffe://cluster.local/ns/triage/sa/bot\r\n",
        "spiffe://" + "a" * 256 + "/ns/a/sa/b",
    ],
)
def test_newlines_and_oversized_trust_domains_are_not_spiffe_ids(bad):
    with pytest.raises(ValueError):
        parse_spiffe_id(bad)
    with pytest.raises(IdentityError) as caught:
        resolve_caller(AuthzInput(source_principal=bad), DOMAINS | {"a" * 256}, trust_xfcc=False)
    assert caught.value.reason == "invalid_identity"


def test_a_principal_with_a_trailing_newline_is_refused_and_never_forwarded(authorizer):
    check = to_check_request(
        AuthzInput(
            method="POST",
            path="/mcp",
            host=GITHUB_HOST,
            source_principal=TRIAGE + "\n",
            body=orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
    )
    response = CheckResponse.FromString(authorizer.check_bytes(check.SerializeToString()))
    assert response.denied_response.status.code == 401
    assert response.dynamic_metadata.fields["reason"].string_value == "invalid_identity"
    assert "x-caller-identity" not in {option.header.key for option in response.denied_response.headers}


@pytest.mark.parametrize(
    "uri",
    [
        f"{ALICE}\n",
        f'"{ALICE}\n"',
        f'"{ALICE}',
        f'{ALICE}"',
        f'""{ALICE}""',
        f"{ALICE[:-1]}\\{ALICE[-1]}",
        f'"{ALICE[:-1]}\\{ALICE[-1]}"',
        f"{ALICE}\u00a0",
        f"\v{ALICE}",
    ],
)
def test_xfcc_uri_is_read_as_envoy_writes_it_and_no_looser(uri):
    request = AuthzInput(headers={"x-forwarded-client-cert": f"Hash=abc;URI={uri};DNS=a"})
    with pytest.raises(IdentityError) as caught:
        resolve_caller(request, DOMAINS, trust_xfcc=True)
    assert caught.value.reason == "invalid_identity"


@pytest.mark.parametrize(
    "header",
    [f'URI="{ALICE}"', f"By=x;URI={ALICE}", f'Subject="CN=a,\\"b;c\\"";URI={ALICE}', f"By=x; URI={ALICE} ,By=y"],
)
def test_xfcc_as_envoy_writes_it(header):
    request = AuthzInput(headers={"x-forwarded-client-cert": header})
    assert resolve_caller(request, DOMAINS, trust_xfcc=True).principal == ALICE


def test_xfcc_quote_left_open_is_refused():
    """Where the quote ends decides which URI= belongs to which element; nobody may guess."""
    request = AuthzInput(headers={"x-forwarded-client-cert": f'Subject="CN=a;URI={ALICE}'})
    with pytest.raises(IdentityError) as caught:
        resolve_caller(request, DOMAINS, trust_xfcc=True)
    assert caught.value.reason == "invalid_identity"
