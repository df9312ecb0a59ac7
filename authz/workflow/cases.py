"""`mandate test`: policy unit tests, YAML cases beside the policies, decided by the pipeline `serve` runs.

A case is a request described as `mandate explain --request` reads it (caller, target, protocol
fields, chain hops) and the decision expected. Each is decided by `authz/explain.py` against the
compiled set: the Authorizer's own `decide`, with a chain written to a private in-process store
the way a real one is, so a test can never pass on a second reading of the policy.

Cases live in the policy directory's `tests/` folder (`--tests` for another): `mandate serve`
reads only the YAML files directly in its directory, so it never sees them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authz.explain import DescribedRequest, RequestFileError, describe, explain
from authz.policy.compiled import CompiledScope, PolicySet

EXPECT_FIELDS = {
    "decision": "decision",
    "reason": "reason",
    "status": "status",
    "rule": "rule",
    "refusedByHop": "refused_by_hop",
}
CASE_FIELDS = {"name", "request", "expect"}
DECISIONS = ("allow", "deny", "would_deny")


class CaseFileError(ValueError):
    """A test file that cannot be read as cases; `file:line: message`."""


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    line: int
    request: dict[str, Any]
    expect: dict[str, Any]  # report keys (explain's) -> expected value

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Outcome:
    case: Case
    report: dict[str, Any]
    mismatches: list[str] = field(default_factory=list)  # "reason: expected x, got y"

    @property
    def passed(self) -> bool:
        return not self.mismatches


def case_files(directory: Path) -> list[Path]:
    """The YAML files under a tests directory, sorted (subfolders too)."""
    if not directory.is_dir():
        raise CaseFileError(f"{directory}: no tests directory (put YAML test cases in it, or give --tests)")
    return sorted(path for path in directory.rglob("*") if path.suffix in (".yaml", ".yml") and path.is_file())


def read_cases(path: Path) -> list[Case]:
    """The cases of one file: a mapping with `tests:`, a list of cases each with a line to point at."""
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CaseFileError(f"{path}:0: cannot read test cases: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"tests"} or not isinstance(data["tests"], list):
        raise CaseFileError(f"{path}:1: a test file is a mapping with one key, `tests`, a list of cases")
    nodes = next(value for key, value in root.value if key.value == "tests").value
    return [_case(item, node.start_mark.line + 1, path) for item, node in zip(data["tests"], nodes, strict=True)]


def _case(item: Any, line: int, path: Path) -> Case:
    where = f"{path}:{line}"
    if not isinstance(item, dict) or not {"name", "request", "expect"} <= set(item):
        raise CaseFileError(f"{where}: a case needs name, request and expect")
    if unknown := sorted(set(item) - CASE_FIELDS):
        raise CaseFileError(f"{where}: unknown field(s) {', '.join(unknown)}; a case has name, request, expect")
    expect = item["expect"]
    if isinstance(expect, str):
        expect = {"decision": expect}
    if not isinstance(expect, dict) or expect.get("decision") not in DECISIONS:
        raise CaseFileError(f"{where}: expect needs decision: allow, deny or would_deny")
    if unknown := sorted(set(expect) - set(EXPECT_FIELDS)):
        raise CaseFileError(f"{where}: unknown expect field(s) {', '.join(unknown)}; known: {', '.join(EXPECT_FIELDS)}")
    expected = {EXPECT_FIELDS[key]: value for key, value in expect.items()}
    return Case(str(item["name"]), str(path), line, item["request"], expected)


def described(case: Case) -> DescribedRequest:
    """The case's request, read exactly as `mandate explain --request` reads a file."""
    try:
        return describe(case.request, case.where)
    except RequestFileError as exc:
        raise CaseFileError(str(exc)) from None


def run_case(policy: PolicySet, case: Case) -> Outcome:
    report = explain(policy, described(case))
    outcome = Outcome(case, report)
    for key, want in case.expect.items():
        got = report.get(key)
        if got != want and str(got) != str(want):
            outcome.mismatches.append(f"{key}: expected {want!r}, got {got!r}")
    return outcome


def exercised(report: dict[str, Any]) -> Iterator[str]:
    """What one decision exercised: the rules that allowed it along the chain, and its target."""
    if report.get("rule"):
        yield report["rule"]
    for hop in report.get("hops", []):
        if hop.get("allows") and hop.get("rule"):
            yield hop["rule"]
    if report.get("target"):
        yield f"target {report['target']}"


def coverable(policy: PolicySet) -> list[str]:
    """Every rule of every profile, grants' rules included (by their labels), and every target."""
    labels: list[str] = []
    for profile in policy.profiles.values():
        _scope_labels(profile.scope, labels)
    labels += [f"target {name}" for name in policy.targets]
    return list(dict.fromkeys(labels))  # an egress rule is filed under each host of its target


def _scope_labels(scope: CompiledScope, labels: list[str]) -> None:
    for rules in (*scope.mcp.values(), *scope.egress.values(), *scope.http.values()):
        labels += [rule.label for rule in rules]
    for agent_rules in scope.agents.values():
        for rule in agent_rules:
            labels.append(rule.label)
            if rule.grant is not None:
                _scope_labels(rule.grant, labels)
