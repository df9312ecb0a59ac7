"""Name lists: `*` matches any run of characters; nothing else is special (SPEC §3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authz.policy.globs import GlobSet


def reference_match(pattern: str, name: str) -> bool:
    """A slow, obviously-correct matcher to compare against."""
    if not pattern:
        return not name
    if pattern[0] == "*":
        return any(reference_match(pattern[1:], name[i:]) for i in range(len(name) + 1))
    return bool(name) and name[0] == pattern[0] and reference_match(pattern[1:], name[1:])


ALPHABET = st.sampled_from(list("ab*.?[]/\\\n^$"))


@given(st.lists(st.text(ALPHABET, max_size=6), max_size=4), st.text(ALPHABET, max_size=8))
def test_globset_agrees_with_reference(patterns, name):
    assert (name in GlobSet(patterns)) == any(reference_match(p, name) for p in patterns)


def test_regex_metacharacters_are_literal():
    names = GlobSet(["repo.read", "a?b", "[x]"])
    assert "repo.read" in names and "repoXread" not in names
    assert "a?b" in names and "acb" not in names
    assert "[x]" in names and "x" not in names


def test_names_are_case_sensitive():
    assert "Get_Me" not in GlobSet(["get_me"])


def test_star_spans_slashes_and_empty():
    uris = GlobSet(["repo://acme/*"])
    assert "repo://acme/" in uris and "repo://acme/a/b" in uris and "repo://acmex/a" not in uris


def test_empty_list_matches_nothing():
    assert "" not in GlobSet([]) and not GlobSet([])
