"""Path hygiene: match on the normalised path, deny the ambiguous (SPEC §4.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.check.protocols.paths import AmbiguousPath, host_key, normalize_path, resolve_path, under_prefix


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/mcp", "/mcp"),
        ("/mcp?x=1", "/mcp"),
        ("//repos//acme/", "/repos/acme/"),
        ("/repos/./acme", "/repos/acme"),
        ("/a/b/../c", "/a/c"),
        ("/%72epos/acme", "/repos/acme"),
        ("/caf%C3%A9", "/café"),
        ("/", "/"),
    ],
)
def test_normalisation(raw, normalized):
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "/repos%2Facme",
        "/repos%2facme",
        "/a%5Cb",
        "/a\\b",
        "/a/../../etc",
        "/..",
        "/%2e%2e/admin",
        "/a%252Fb",
        "/a%25",
        "/a%zz",
        "/a%",
        "/a%00b",
        "/a\x00",
        "/%ff",
        "relative",
        "/a#frag",
        "",
    ],
)
def test_ambiguous_paths_are_refused(raw):
    with pytest.raises(AmbiguousPath):
        normalize_path(raw)


SEGMENT = st.sampled_from(["a", "b", ".", "..", "", "%2e", "%2E%2E", "%61", "c%20d"])


@given(st.lists(SEGMENT, max_size=8))
def test_normalised_paths_are_canonical(segments):
    try:
        normalized = normalize_path("/" + "/".join(segments))
    except AmbiguousPath:
        return
    assert normalize_path(normalized) == normalized  # idempotent
    assert "//" not in normalized
    assert all(part not in (".", "..") for part in normalized.split("/"))


def test_prefix_is_segment_aware():
    assert under_prefix("/mcp", "/mcp") and under_prefix("/mcp/x", "/mcp") and under_prefix("/mcp/", "/mcp/")
    assert not under_prefix("/mcpx", "/mcp") and not under_prefix("/", "/mcp")


def test_host_key_ignores_port_and_case():
    assert host_key("API.GitHub.com:443") == "api.github.com"
    assert host_key("[::1]:8080") == "[::1]"
    assert host_key("api.github.com") == "api.github.com"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="/.a%2Fe\\-_~:@!", max_size=14))
def test_fast_path_agrees_with_the_general_case(path):
    """`normalize_path` skips the general resolution for plain paths; it must never differ."""
    try:
        expected = resolve_path(path, path)
    except AmbiguousPath:
        expected = None
    try:
        got = normalize_path(path)
    except AmbiguousPath:
        got = None
    assert got == expected
