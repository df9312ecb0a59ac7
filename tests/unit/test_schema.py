"""`mandate schema`: the JSON Schema of a policy document, generated from the loader's models, is
published as docs/policy.schema.json, describes every field, accepts every policy the repository
shows and refuses what the loader refuses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from authz.cli import main
from authz.policy.loader import load_text
from authz.workflow.schema import PUBLISHED, policy_schema, schema_text
from tests.harness.chain_cast import cast, documents
from tests.harness.chain_policies import write_chain_policy_set
from tests.harness.example_policies import EXAMPLES, REPO
from tests.harness.policies import write_policy_set

VALIDATOR = jsonschema.Draft202012Validator(policy_schema())


def test_the_published_schema_is_the_generated_one() -> None:
    assert (REPO / PUBLISHED).read_text() == schema_text(), "run `mandate schema -o docs/policy.schema.json`"


def test_mandate_schema_prints_it(capsys) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == schema_text()


def test_the_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(policy_schema())


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for name, value in (node.get("properties") or {}).items():
            yield f"{where}.{name}", value
        for key, value in node.items():
            yield from _properties(value, f"{where}.{key}" if key != "properties" else where)
    elif isinstance(node, list):
        for item in node:
            yield from _properties(item, where)


def test_every_field_is_described() -> None:
    undescribed = sorted(where for where, field in _properties(policy_schema()) if not field.get("description"))
    assert undescribed == []


def _yaml_blocks(page: Path) -> Iterator[str]:
    """The page's YAML blocks that hold a policy document (others show Istio or Helm YAML)."""
    blocks = re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.DOTALL)
    yield from (block for block in blocks if "mandate.dev/v1alpha1" in block)


def shown_policies(tmp: Path) -> Iterator[tuple[str, Any]]:
    """Every policy document the repository shows: policies/, the docs and README, and the test sets."""
    files = sorted(EXAMPLES.glob("*.yaml"))
    files += sorted(write_policy_set(tmp / "e2e").glob("*.yaml"))
    files += sorted(write_chain_policy_set(tmp / "chains").glob("*.yaml"))
    texts = [(str(path.relative_to(path.parents[1])), path.read_text()) for path in files]
    texts += [(f"chain_cast {name}", text) for name, text in documents(cast()).items()]
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        texts += [(page.name, block) for block in _yaml_blocks(page)]
    for name, text in texts:
        for document in yaml.safe_load_all(text):
            if isinstance(document, dict) and document.get("apiVersion") == "mandate.dev/v1alpha1":
                yield name, document


def test_every_policy_the_repository_shows_is_valid(tmp_path: Path) -> None:
    shown = list(shown_policies(tmp_path))
    assert len(shown) > 20 and {document["kind"] for _, document in shown} == {"Target", "MissionProfile", "Settings"}
    invalid = [
        (name, document["metadata"]["name"], error.message)
        for name, document in shown
        for error in VALIDATOR.iter_errors(document)
    ]
    assert invalid == []


PROFILE = {
    "apiVersion": "mandate.dev/v1alpha1",
    "kind": "MissionProfile",
    "metadata": {"name": "p"},
    "spec": {
        "principals": ["spiffe://cluster.local/ns/a/sa/b"],
        "mission": "m",
        "mcp": [{"server": "s", "tools": ["t"]}],
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """PROFILE with `value` at the dotted `path` (a fresh copy)."""
    document = yaml.safe_load(yaml.safe_dump(PROFILE))
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return document


_DELETE = object()
BROKEN = {
    "a misspelt field": ("spec.mcp.0.tool", ["t"]),
    "a snake_case key": ("spec.require_chain", True),
    "an unknown kind": ("kind", "Profile"),
    "another apiVersion": ("apiVersion", "mandate.dev/v1"),
    "no mission": ("spec.mission", _DELETE),
    "no principals": ("spec.principals", []),
    "an unknown mode": ("spec.mode", "audit"),
    "a string for a list": ("spec.mcp.0.tools", "t"),
    "a number for a name": ("metadata.name", 7),
    "a depth out of range": ("spec.delegation", {"maxDepth": 0}),
}


def test_the_valid_document_the_broken_ones_start_from_is_valid() -> None:
    assert list(VALIDATOR.iter_errors(PROFILE)) == []
    assert load_text(yaml.safe_dump(PROFILE), "p.yaml")[1] == []


@pytest.mark.parametrize("change", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_document_is_rejected_by_the_schema_as_by_the_loader(change: tuple[str, Any]) -> None:
    document = _with(*change)
    assert list(VALIDATOR.iter_errors(document)), "the schema accepts it"
    assert load_text(yaml.safe_dump(document), "p.yaml")[1], "the loader accepts it"
