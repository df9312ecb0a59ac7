"""SPIFFE identity: parsing, source order, and what never counts as identity (SPEC §2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.identity import IdentityError, parse_spiffe_id, resolve_caller
from authz.request import AuthzInput

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
        "", "cluster.local/ns/a/sa/b", "http://cluster.local/ns/a", "spiffe://", "spiffe://cluster.local",
        "spiffe://cluster.local/", "spiffe://Cluster.Local/ns/a", "spiffe://cluster.local/ns//sa/b",
        "spiffe://cluster.local/ns/./sa/b", "spiffe://cluster.local/ns/../sa/b", "spiffe://cluster.local/ns/a%2Fb",
        "spiffe://cluster.local/ns/a/sa/b?x", "spiffe://cluster.local/ns/a/sa/b#f", "spiffe://user@cluster.local/ns/a",
        "spiffe://cluster.local:8080/ns/a", "spiffe://cluster.local/ns/a/sa/b/", "spiffe://cluster.local/" + "a" * 2100,
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
    request = AuthzInput(headers={"x-forwarded-client-cert": f'By=spiffe://cluster.local/ns/gw/sa/gw;URI={ALICE}'})
    with pytest.raises(IdentityError) as caught:
        resolve_caller(request, DOMAINS, trust_xfcc=False)
    assert caught.value.reason == "no_identity"
    assert resolve_caller(request, DOMAINS, trust_xfcc=True).principal == ALICE


def test_xfcc_never_overrides_the_peer_certificate():
    request = AuthzInput(source_principal=ALICE, headers={"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/x/sa/admin"})
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
