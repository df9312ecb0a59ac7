"""The registry of reasons is the only place a reason is spelled, and the docs show it as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from authz import reasons
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput
from tests.harness.example_policies import GITHUB_HOST, REPO, SUPPORT

AUTHZ = REPO / "authz"


def test_the_docs_reason_table_is_the_registry():
    text = (REPO / "docs" / "policy.md").read_text()
    generated = re.search(r"<!-- reasons:begin[^\n]*-->\n(.*?)<!-- reasons:end -->", text, re.DOTALL)
    assert generated is not None, "docs/policy.md lost its generated reason table"
    assert generated.group(1) == reasons.markdown(), "run `python -m authz.reasons` and paste it into docs/policy.md"


@pytest.mark.parametrize("path", sorted(p for p in AUTHZ.rglob("*.py") if p.name != "reasons.py"), ids=str)
def test_no_step_spells_a_reason_itself(path: Path):
    """A reason written as a string outside the registry could drift from its status and docs."""
    text = re.sub(r"__setattr__\(self, \"\w+\"", "", path.read_text())  # attribute names, such as Verdict's "allowed"
    spelled = [name for name in reasons.REGISTRY if re.search(rf"[\"']{name}[\"']", text)]
    assert spelled == []


def test_every_reason_has_a_status_and_a_meaning():
    for reason in reasons.REGISTRY.values():
        assert reason.status in (200, 400, 401, 403, 429, 502), reason.name
        assert reason.meaning.endswith("."), reason.name
    assert {r.chain_outcome for r in reasons.REGISTRY.values()} >= {"forged", "unknown", "not_held", "revoked"}


def test_a_refusal_takes_its_status_from_the_registry(example_policy):
    decision = Authorizer(example_policy).decide(AuthzInput("POST", "/mcp", GITHUB_HOST, {}, b"{", SUPPORT))
    assert decision.verdict.reason == reasons.INVALID_JSON
    assert decision.verdict.status == reasons.status_of(reasons.INVALID_JSON) == 400
