"""`mandate test`: YAML cases beside the policies, decided by the pipeline `serve` runs, with
failures explained, coverage, JUnit, and exit codes CI can use (0 pass, 1 failures, 2 errors)."""

from __future__ import annotations

import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from authz.cli import main
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import EXAMPLES

CREATE_ISSUE = """
    request:
      source: spiffe://cluster.local/ns/support/sa/support-agent
      host: github-mcp.tools.svc.cluster.local
      path: /mcp
      body: {jsonrpc: "2.0", id: 1, method: tools/call, params: {name: create_issue, arguments: {repo: acme/web}}}
"""
REFUND_FOR_SUPPORT = """
    request:
      source: spiffe://cluster.local/ns/billing/sa/billing-agent
      host: billing-db-mcp.billing.svc.cluster.local
      path: /mcp
      chain: [support-agent, billing-agent]
      body: {jsonrpc: "2.0", id: 2, method: tools/call, params: {name: refund, arguments: {invoice: 7}}}
"""


def suite(tmp_path: Path, *cases: str) -> Path:
    """A copy of the example policies whose tests/ holds only `cases` (YAML list items)."""
    policies = Path(shutil.copytree(EXAMPLES, tmp_path / "policies"))
    shutil.rmtree(policies / "tests")
    (policies / "tests").mkdir()
    body = "".join(textwrap.indent(textwrap.dedent(case).strip() + "\n", "  ") for case in cases)
    (policies / "tests" / "cases.yaml").write_text("tests:\n" + body.replace("  name:", "- name:"))
    return policies


def case(name: str, request: str, expect: str) -> str:
    return f"name: {name}\n{textwrap.dedent(request).strip()}\nexpect: {expect}\n"


def test_the_example_policies_pass_their_own_suite(capsys) -> None:
    assert main(["test", "--policies", str(EXAMPLES), "--coverage"]) == 0
    out = capsys.readouterr().out
    assert "19 passed, 0 failed" in out and "FAIL" not in out
    assert "not exercised: target orchestrator" in out  # no profile may call the orchestrator


def test_serve_never_reads_the_tests_folder(tmp_path: Path) -> None:
    policies = suite(tmp_path, case("x", CREATE_ISSUE, "deny"))
    (policies / "tests" / "not-a-policy.yaml").write_text("kind: Nonsense\n")
    assert compile_directory(policies).version == compile_directory(EXAMPLES).version


def test_a_failing_case_is_printed_with_the_rule_that_decided_and_exit_1(tmp_path: Path, capsys) -> None:
    policies = suite(
        tmp_path,
        case("create issue is refused", CREATE_ISSUE, "{decision: deny, reason: tool_not_allowed}"),
        case("refund for support is allowed", REFUND_FOR_SUPPORT, "allow"),
    )
    assert main(["test", str(policies)]) == 1
    out = capsys.readouterr().out
    assert "1 passed, 1 failed" in out
    failure = out[out.index("FAIL") :]
    assert failure.startswith(f"FAIL  {policies}/tests/cases.yaml:9: refund for support is allowed")
    assert "decision: expected 'allow', got 'deny'" in failure
    assert "refused_by_hop: support-agent" in failure
    assert "support-agent: its grant to 'billing-agent': REFUSES (tool_not_allowed)" in failure


def test_junit_names_every_case_and_its_failure(tmp_path: Path) -> None:
    policies = suite(
        tmp_path,
        case("refused", CREATE_ISSUE, "deny"),
        case("wrongly expected", CREATE_ISSUE, "{decision: deny, reason: server_not_allowed}"),
    )
    report = tmp_path / "junit.xml"
    assert main(["test", str(policies), "--junit", str(report)]) == 1
    suite_element = ET.parse(report).getroot().find("testsuite")
    assert suite_element is not None and (suite_element.get("tests"), suite_element.get("failures")) == ("2", "1")
    failures = [testcase for testcase in suite_element if testcase.find("failure") is not None]
    assert [testcase.get("name") for testcase in failures] == ["wrongly expected"]
    assert "reason: expected 'server_not_allowed', got 'tool_not_allowed'" in failures[0].find("failure").get("message")


def test_coverage_names_the_rules_and_grants_no_case_exercised(tmp_path: Path, capsys) -> None:
    policies = suite(tmp_path, case("refused", REFUND_FOR_SUPPORT, "deny"))
    assert main(["test", str(policies), "--coverage"]) == 0
    missed = {line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if "not exercised" in line}
    assert {
        "support-agent.mcp[0]",
        "support-agent.agents[0].grant.mcp[0]",
        "orchestrator.agents[1].grant.mcp[0]",
    } <= missed
    assert "billing-agent.mcp[0]" not in missed  # its own rule allowed; the grant refused


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ("tests: [{name: x, request: {source: a}, expect: maybe}]\n", "expect needs decision"),
        ("tests: [{name: x, request: {sauce: a}, expect: deny}]\n", "unknown field(s) sauce"),
        ("tests: [{name: x, request: {}, expect: deny, extra: 1}]\n", "unknown field(s) extra"),
        ("tests: [{name: x, request: {}, expect: {decision: deny, rules: r}}]\n", "unknown expect field(s) rules"),
        ("- name: x\n", "a mapping with one key, `tests`"),
        ("tests: [\n", "cannot read test cases"),
    ],
)
def test_an_unreadable_case_is_exit_2_with_file_and_line(tmp_path: Path, capsys, cases: str, message: str) -> None:
    policies = suite(tmp_path, case("fine", CREATE_ISSUE, "deny"))
    (policies / "tests" / "cases.yaml").write_text(cases)
    assert main(["test", str(policies)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{policies}/tests/cases.yaml:") and message in err


def test_a_broken_policy_set_is_exit_2_with_every_error(tmp_path: Path, capsys) -> None:
    policies = suite(tmp_path, case("x", CREATE_ISSUE, "deny"))
    agents = policies / "agents.yaml"
    agents.write_text(agents.read_text().replace("server: github", "server: gitlab"))
    assert main(["test", "--policies", str(policies)]) == 2
    assert "no test ran" in capsys.readouterr().err


def test_no_cases_is_exit_2(tmp_path: Path, capsys) -> None:
    policies = suite(tmp_path, case("x", CREATE_ISSUE, "deny"))
    shutil.rmtree(policies / "tests")
    assert main(["test", str(policies)]) == 2
    assert "no tests directory" in capsys.readouterr().err


def test_the_directory_given_two_different_ways_is_a_usage_error(capsys) -> None:
    assert main(["test", str(EXAMPLES), "--policies", "elsewhere"]) == 2
    assert "given twice" in capsys.readouterr().err
