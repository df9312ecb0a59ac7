"""`mandate diff OLD NEW` on real edits of copies of the example policies: what each change
grants and revokes, modes switched, and which recorded decisions change."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import orjson
import pytest

from authz.check.pipeline import Authorizer
from authz.cli import main
from authz.policy.compiler import compile_directory
from authz.serve.audit import AuditLog
from tests.harness.example_policies import EXAMPLES
from tests.harness.requests import http, tool


@pytest.fixture
def sets(tmp_path: Path) -> tuple[Path, Path]:
    old = Path(shutil.copytree(EXAMPLES, tmp_path / "old"))
    return old, Path(shutil.copytree(EXAMPLES, tmp_path / "new"))


def edit(directory: Path, old: str, new: str, file: str = "agents.yaml") -> None:
    path = directory / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {file}"
    path.write_text(text.replace(old, new))


def diff_json(old: Path, new: Path, *extra: str, capsys) -> dict:
    assert main(["diff", str(old), str(new), "--format", "json", *extra]) == 0
    return orjson.loads(capsys.readouterr().out)


def facts(found: list[dict]) -> set[tuple[str, str, str]]:
    return {(fact["profile"], fact["what"], fact["detail"]) for fact in found}


def test_each_kind_of_change_is_reported_as_granted_revoked_switched_or_changed(sets, capsys) -> None:
    old, new = sets
    edit(new, "tools: [get_me, list_issues, get_issue]\n", "tools: [get_me, list_issues, create_issue]\n")
    edit(new, 'paths: ["/zen", "/repos/acme/*"]', 'paths: ["/zen"]')
    edit(
        new,
        "        mcp: [{server: billing-db, tools: [lookup_invoice]}]",
        "        mcp: [{server: billing-db, tools: [lookup_invoice, refund]}]",
    )
    edit(new, "  mode: dry-run\n", "")
    edit(new, "acceptFrom: [support-agent, orchestrator]", "acceptFrom: [support-agent]")
    edit(new, "hosts: [api.github.com]", "hosts: [api.github.com, uploads.github.com]", "targets.yaml")
    report = diff_json(old, new, capsys=capsys)
    assert facts(report["granted"]) == {
        ("support-agent", "tool", "github: create_issue"),
        ("support-agent", "grant to billing-agent: tool", "billing-db: refund"),
    }
    assert facts(report["revoked"]) == {
        ("support-agent", "tool", "github: get_issue"),
        ("support-agent", "egress", "GET api.github.com/repos/acme/*"),
        ("billing-agent", "accepts calls from", "orchestrator"),
    }
    assert report["modes"] == [{"profile": "triage-bot", "old": "dry-run", "new": "enforce"}]
    assert [(c["change"], c["what"], c["detail"]) for c in report["changed"]] == [
        ("added", "target address", "github-api: uploads.github.com")
    ]


def test_an_edge_to_a_new_target_and_a_changed_condition(sets, capsys) -> None:
    old, new = sets
    edit(new, "    - target: status-page\n", "    - target: status-page\n      when: 'request.method == \"GET\"'\n")
    edit(
        new,
        "  mcp:\n    - server: billing-db\n      tools: [lookup_invoice, refund]\n",
        "  mcp:\n    - server: billing-db\n      tools: [lookup_invoice, refund]\n"
        "    - server: github\n      tools: [get_me]\n",
    )
    report = diff_json(old, new, capsys=capsys)
    assert ("billing-agent", "mcp server", "github") in facts(report["granted"])
    assert ("billing-agent", "tool", "github: get_me") in facts(report["granted"])
    assert [(c["change"], c["profile"], c["what"]) for c in report["changed"]] == [
        ("added", "support-agent", "condition")
    ]


def test_markdown_is_a_pull_request_comment(sets, capsys) -> None:
    old, new = sets
    edit(new, "  mode: dry-run\n", "")
    assert main(["diff", str(old), str(new), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Mandate policy diff: ")
    assert "### Modes switched (1)\n\n- **triage-bot**: dry-run -> enforce (its refusals are now enforced)" in out


def test_no_change_says_so_and_exit_code_tells_ci(sets, capsys) -> None:
    old, new = sets
    assert main(["diff", str(old), str(new), "--exit-code"]) == 0
    assert "No change in what any profile may do." in capsys.readouterr().out
    edit(new, "  mode: dry-run\n", "")
    assert main(["diff", str(old), str(new), "--exit-code"]) == 1


def test_recorded_test_cases_show_which_decisions_change(sets, capsys) -> None:
    old, new = sets
    edit(new, "tools: [get_me, list_issues, get_issue]\n", "tools: [get_me, list_issues, get_issue, create_issue]\n")
    report = diff_json(old, new, "--requests", str(old / "tests"), capsys=capsys)
    assert [(d["old"]["decision"], d["new"]["decision"]) for d in report["decisions"]] == [("deny", "allow")]
    assert report["decisions"][0]["request"].endswith("support-agent never writes to GitHub")


def test_recorded_audit_lines_show_which_decisions_change(sets, tmp_path: Path, capsys) -> None:
    old, new = sets
    authorizer, audit = Authorizer(compile_directory(old)), AuditLog(io.BytesIO())
    requests = [tool("list_issues", repo="acme/web"), tool("create_issue"), http("GET", "api.github.com", "/zen")]
    lines = [audit.line(authorizer.decide(request), "d", 1.0, 0) for request in requests]
    recorded = tmp_path / "audit.jsonl"
    recorded.write_bytes(
        b"a log line, not JSON\n" + b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    )
    edit(new, "tools: [get_me, list_issues, get_issue]\n", "tools: [get_me, get_issue, create_issue]\n")
    edit(new, 'paths: ["/zen", "/repos/acme/*"]', 'paths: ["/repos/acme/*"]')
    assert main(["diff", str(old), str(new), "--requests", str(recorded)]) == 0
    out = capsys.readouterr().out
    assert "Decisions that change: 3 of 3 recorded requests" in out
    assert f"{recorded}:2: support-agent -> github list_issues: allow (allowed) -> deny (tool_not_allowed)" in out
    assert f"{recorded}:3: support-agent -> github create_issue: deny (tool_not_allowed) -> allow (allowed)" in out
    assert f"{recorded}:4: support-agent -> github-api /zen: allow (allowed) -> deny (egress_not_allowed)" in out


def test_a_broken_set_is_exit_2_with_its_errors(sets, capsys) -> None:
    old, new = sets
    edit(
        new,
        "    - server: billing-db\n      tools: [lookup_invoice, refund]",
        "    - server: billing\n      tools: [refund]",
    )
    assert main(["diff", str(old), str(new)]) == 2
    assert f"{new / 'agents.yaml'}:" in capsys.readouterr().err


def test_a_credential_sent_somewhere_new_is_a_change_the_reviewer_sees(sets, tmp_path: Path, capsys) -> None:
    """Headers a Target or rule sets or removes are listed as changed, values as written: a
    `{secret:PATH}` names its path, and the secret itself appears nowhere in the report."""
    old, new = sets
    token = tmp_path / "github-token"
    token.write_text("ghp-canary-0123456789\n")
    edit(
        new,
        "  hosts: [api.github.com]\n",
        f"  hosts: [api.github.com]\n  requestHeaders: {{set: {{authorization: 'Bearer {{secret:{token}}}'}}}}\n",
        "targets.yaml",
    )
    edit(
        new,
        "tools: [get_me, list_issues, get_issue]\n",
        "tools: [get_me, list_issues, get_issue]\n"
        "      requestHeaders: {set: {x-agent: '{profile}'}, remove: [x-debug]}\n",
    )
    report = diff_json(old, new, capsys=capsys)
    assert [(c["change"], c["profile"], c["what"], c["detail"]) for c in report["changed"]] == [
        ("added", "", "request header", f"github-api: set authorization: Bearer {{secret:{token}}}"),
        ("added", "support-agent", "request header", "mcp github: remove x-debug"),
        ("added", "support-agent", "request header", "mcp github: set x-agent: {profile}"),
    ]
    assert report["granted"] == [] and report["revoked"] == []
    for form in ("json", "markdown", "text"):
        assert main(["diff", str(old), str(new), "--format", form]) == 0
        assert "ghp-canary" not in capsys.readouterr().out
