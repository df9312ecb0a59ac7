"""A large policy set is read one document at a time, each profile compiled as it is read, with
the garbage collector paused (authz/policy/loader.py, compiler.py). None of that may change what
is loaded: the values are PyYAML's safe loader's, the compiled set is the same whichever order
the documents come in (a Target or profile named before it is read), and building a set leaves
nothing for the collector to find, which is what makes pausing it harmless.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.policy.compiled import PolicySet, PrincipalIndex
from authz.policy.compiler import compile_directory
from authz.policy.conditions import Condition
from authz.policy.globs import GlobSet
from authz.policy.loader import load_text
from authz.policy.model import DOCUMENT_KINDS
from loadtest.micro.policyset import write_policy_set
from tests.harness.example_policies import EXAMPLES

TRICKY = textwrap.dedent(
    """
    apiVersion: mandate.dev/v1alpha1
    kind: MissionProfile
    metadata:
      name: tricky
      labels: {team: "007", quoted: 'yes', plain: "1.5"}
    spec:
      principals: ['spiffe://cluster.local/ns/a/sa/*']
      mission: !!str 12
      mode: dry-run
      mcp:
        - &base {server: github, tools: [get_me, "list_*"], when: 'mcp.tool.name != "x"'}
        - <<: *base
          prompts: [triage]
        - {server: jira, tools: [get_issue]}
      delegation: {maxDepth: 3, requireChain: yes, allowReentry: off}
    ---
    apiVersion: mandate.dev/v1alpha1
    kind: Settings
    metadata: {name: default}
    spec: {maxDepth: 0x7, trustForwardedClientCert: true, chainTTL: 1h30m}
    """
)


def shape(value: Any) -> Any:
    """A compiled structure as plain values: globs by their patterns, conditions by their text."""
    if isinstance(value, GlobSet):
        return ("glob", value.patterns)
    if isinstance(value, Condition):
        return ("when", value.source)
    if isinstance(value, PrincipalIndex):
        return ("principals", shape(value.exact), shape(value.namespaces))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if type(value).__name__ == "CompiledTarget":  # its workload is the profile, shaped on its own
            workload = value.workload.name if value.workload else None
            return (value.name, value.kind, value.path_prefix, workload, repr(value.a2a))
        return tuple((f.name, shape(getattr(value, f.name))) for f in dataclasses.fields(value) if f.name != "version")
    if isinstance(value, dict):
        return tuple((key, shape(item)) for key, item in value.items())
    if isinstance(value, tuple | list | frozenset):
        return tuple(shape(item) for item in (sorted(value) if isinstance(value, frozenset) else value))
    return value if isinstance(value, str | int | bool | type(None)) else type(value).__name__


@pytest.mark.parametrize("text", [TRICKY, *(path.read_text() for path in sorted(EXAMPLES.glob("*.yaml")))])
def test_documents_hold_the_values_the_safe_loader_reads(text: str) -> None:
    documents, errors = load_text(text, "p.yaml")
    assert not errors
    expected = [DOCUMENT_KINDS[data["kind"]].model_validate(data) for data in yaml.safe_load_all(text) if data]
    assert [sourced.document for sourced in documents] == expected


def test_an_error_found_on_the_fast_path_still_names_its_line() -> None:
    text = TRICKY.replace("mode: dry-run", "mode: dry-run\n  colour: red").replace("maxDepth: 3", "maxDepth: 99")
    _, errors = load_text(text, "p.yaml")
    assert [str(error) for error in errors] == [
        "p.yaml:17: spec.delegation.maxDepth: Input should be less than or equal to 64",
        "p.yaml:11: unknown field 'spec.colour'",
    ]


def test_a_repeated_key_merged_in_is_named_with_its_line() -> None:
    text = TRICKY.replace("prompts: [triage]", "prompts: [triage]\n      server: jira")
    _, errors = load_text(text, "p.yaml")
    assert [str(error) for error in errors] == ["p.yaml:15: duplicate key 'server'"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("generated")
    write_policy_set(directory, 300, seed=3)
    return directory


def test_the_compiled_set_does_not_depend_on_the_order_documents_are_read(generated: Path, tmp_path: Path) -> None:
    """Targets and Settings read last: every reference to them, and every egress host, waits
    for the whole set, and must come out as when they were read first."""
    reordered = tmp_path / "reordered"
    shutil.copytree(generated, reordered)
    for name in ("settings.yaml", "targets.yaml"):
        (reordered / name).rename(reordered / f"zz-{name}")
    first, last = compile_directory(generated), compile_directory(reordered)
    assert shape(last) == shape(first)
    assert any(profile.scope.egress for profile in last.profiles.values())


def test_an_unknown_reference_read_before_anything_else_is_still_an_error(generated: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(generated, broken)
    (broken / "targets.yaml").rename(broken / "zz-targets.yaml")
    text = (broken / "profiles-000.yaml").read_text()
    (broken / "profiles-000.yaml").write_text(text.replace("host: pypi.org", "host: pypi.example", 1))
    with pytest.raises(Exception, match="egress host 'pypi.example' is not a host of any Target of kind egress"):
        compile_directory(broken)


def compiled_without_the_collector(directory: Path) -> tuple[PolicySet, int]:
    gc.collect()
    gc.disable()
    try:
        policy = compile_directory(directory)
        return policy, gc.collect()
    finally:
        gc.enable()


def test_building_a_set_leaves_nothing_for_the_collector(generated: Path) -> None:
    compile_directory(generated)  # first imports and caches
    policy, found = compiled_without_the_collector(generated)
    assert found == 0 and len(policy.profiles) == 300
    assert gc.isenabled()


PLAIN_SCALARS = ["yes", "No", "on", "OFF", "1", "01", "+1", "0x1F", "0o17", "1e3", "1_000", ".inf", "-.NaN", "~"]
PLAIN_SCALARS += ["null", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "12:30:45", "abc", "a b", "=", "<<x"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), st.sampled_from(PLAIN_SCALARS)))
def test_every_plain_scalar_reads_as_the_safe_loader_reads_it(labels: dict[str, str]) -> None:
    """Tags are resolved once per distinct scalar: each must still come out as PyYAML's safe
    loader makes it (a string, or a bool, int, float, date, null that a label refuses, or a
    scalar it cannot build at all)."""
    lines = "".join(f"    {key}: {value}\n" for key, value in labels.items()) or "    {}\n"
    text = "apiVersion: mandate.dev/v1alpha1\nkind: Target\nmetadata:\n  name: t\n  labels:\n" + lines
    text += "spec: {kind: mcp, hosts: [t.example]}\n"
    documents, errors = load_text(text, "p.yaml")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:  # `=` is a value key PyYAML cannot build: refused, with a line, not raised
        assert [error.message.split(":")[0] for error in errors] == ["invalid YAML"] and not documents
        assert errors[0].line >= 6  # the labels start on line 6
        return
    if all(isinstance(value, str) for value in data["metadata"]["labels"].values()):
        assert not errors and [d.document for d in documents] == [DOCUMENT_KINDS["Target"].model_validate(data)]
    else:
        assert errors and not documents
