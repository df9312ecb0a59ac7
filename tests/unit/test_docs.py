"""The docs describe the product as it is, and never point outside the repository."""

from __future__ import annotations

import inspect
import re

import pytest

from authz.policy import model
from tests.harness.example_policies import REPO

PAGES = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "ANALYSIS.md", *(REPO / "docs").glob("*.md")])


def _fields() -> set[str]:
    strict = [c for _, c in inspect.getmembers(model, inspect.isclass) if issubclass(c, model._Strict)]
    return {field.alias or name for cls in strict for name, field in cls.model_fields.items()}


def test_the_policy_reference_names_every_field_of_the_format():
    reference = (REPO / "docs" / "policy.md").read_text()
    missing = sorted(name for name in _fields() if not re.search(rf"[`.\[]{re.escape(name)}\b", reference))
    assert missing == [], "describe these fields in docs/policy.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_stays_in_the_repository_and_resolves(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(REPO), f"{page.name} links outside the repository: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"
