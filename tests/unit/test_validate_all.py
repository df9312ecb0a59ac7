"""`mandate validate` reports every problem of every file in one run, each `file:line: message`,
with "did you mean" for misspelt names, and warns about rules that can never match."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from authz.cli import main
from tests.harness.example_policies import EXAMPLES, REPO

PROFILE = """
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: {name}}}
spec:
  principals: [spiffe://cluster.local/ns/{name}/sa/{name}]
  mission: a test profile
{body}
"""


def profile(name: str, body: str = "") -> str:
    return PROFILE.format(name=name, body=body)


def validate(directory: Path, capsys, *extra: str) -> tuple[int, list[str], str]:
    code = main(["validate", "--policies", str(directory), *extra])
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


def test_every_error_of_every_file_is_reported_in_one_run(tmp_path: Path, capsys) -> None:
    policies = Path(shutil.copytree(EXAMPLES, tmp_path / "policies"))
    agents = policies / "agents.yaml"
    text = agents.read_text()
    text = text.replace(
        "      tools: [get_me, list_issues, get_issue]\n", "      tool: [get_me, list_issues, get_issue]\n"
    )
    text = text.replace("acceptFrom: [support-agent, orchestrator]", "acceptFrom: [support-agent, orchestrater]")
    text = text.replace(
        "      tools: [list_issues, add_label]", "      tools: [list_issues, add_label]\n      when: 'mcp.method =='"
    )
    agents.write_text(text)
    (policies / "extra.yaml").write_text("apiVersion: mandate.dev/v1alpha1\nkind: Target\nmetadata: {name: x\n")
    (policies / "more.yaml").write_text(profile("newcomer", "  mcp:\n    - server: githib\n      tools: [get_me]"))
    code, errors, _ = validate(policies, capsys)
    assert code == 1 and errors[-1] == "5 error(s)"
    assert errors[:-1] == [
        f"{agents}:11: unknown field 'spec.mcp.0.tool' (did you mean 'tools'?)",
        f"{agents}:40: acceptFrom names unknown profile 'orchestrater' (did you mean 'orchestrator'?)",
        errors[2],
        errors[3],
        f"{policies / 'more.yaml'}:9: 'githib' is not a Target (did you mean 'github'?)",
    ]
    assert errors[2].startswith(f"{agents}:74: when: CEL does not compile")
    assert errors[3].startswith(f"{policies / 'extra.yaml'}:4: invalid YAML: while parsing a flow mapping")


def test_a_document_the_loader_refused_is_not_also_called_unknown(write_policies, capsys) -> None:
    directory = write_policies(
        target="apiVersion: mandate.dev/v1alpha1\nkind: Target\nmetadata: {name: tools}\n"
        "spec: {kind: mcp, host: [t]}\n",
        caller=profile("caller", "  mcp:\n    - server: tools\n      tools: [read]"),
    )
    code, errors, _ = validate(directory, capsys)
    assert code == 1 and errors == [
        f"{directory / 'target.yaml'}:4: unknown field 'spec.host' (did you mean 'hosts'?)",
        "1 error(s)",
    ]


def test_a_misspelt_kind_has_a_suggestion(write_policies, capsys) -> None:
    directory = write_policies(a=profile("a").replace("kind: MissionProfile", "kind: MisionProfile"))
    _, errors, _ = validate(directory, capsys)
    assert errors[0].endswith("got 'MisionProfile' (did you mean 'MissionProfile'?)")


WARNED = {
    "caller": profile(
        "caller",
        "  mcp:\n"
        "    - server: tools\n"
        "      resources: ['doc://*']\n"
        "      when: 'mcp.tool.name == \"read\"'\n"
        "  egress:\n"
        "    - host: api.example.com\n"
        "      when: 'a2a.method == \"x\"'\n"
        "  agents:\n"
        "    - agent: picky\n"
        "    - agent: helper\n"
        "      grant:\n"
        "        mcp: [{server: other, tools: [x]}]\n",
    ),
    "picky": profile("picky", "  hosts: [picky.local]\n  delegation: {acceptFrom: [someone-else]}\n"),
    "someone": profile("someone-else"),
    "helper": profile("helper", "  mcp:\n    - server: tools\n      tools: [read]\n"),
    "loner": profile("loner", "  hosts: [loner.local]\n"),
    "chained": profile(
        "chained", "  delegation: {requireChain: true}\n  mcp:\n    - server: tools\n      tools: [read]\n"
    ),
    "targets": "\n---\n".join(
        f"apiVersion: mandate.dev/v1alpha1\nkind: Target\nmetadata: {{name: {name}}}\n"
        f"spec: {{kind: {kind}, hosts: [{host}]}}"
        for name, kind, host in (
            ("tools", "mcp", "tools.local"),
            ("other", "mcp", "other.local"),
            ("api", "egress", "api.example.com"),
        )
    ),
}


def test_rules_that_can_never_match_are_warnings_with_file_and_line(write_policies, capsys) -> None:
    directory = write_policies(**WARNED)
    code, warnings, out = validate(directory, capsys)
    assert code == 0 and out.strip().endswith("6 warning(s)")
    found = {(Path(w.split(":")[0]).name, w.split(": warning: ")[1]) for w in warnings}
    assert found == {
        ("caller.yaml", "`when` reads `mcp.tool`, but the rule lists no tools: no request it allows has one"),
        ("caller.yaml", "this egress rule's `when` reads `a2a`, which its requests never have"),
        ("caller.yaml", "'picky' accepts calls only from someone-else: this rule can never be used"),
        (
            "caller.yaml",
            (
                "neither 'helper' nor an agent it may call has a mcp rule for server 'other': "
                "this grant rule can never allow anything"
            ),
        ),
        ("loner.yaml", "no agents rule names 'loner': no caller may reach it at its hosts"),
        (
            "chained.yaml",
            (
                "requireChain is true but no agents rule names 'chained': it never holds a chain, "
                "so none of its rules can match"
            ),
        ),
    }
    assert all(w.split(":")[1].isdigit() and int(w.split(":")[1]) > 1 for w in warnings)
    assert main(["validate", str(directory), "--strict"]) == 1


def test_the_example_policies_have_no_warnings(capsys) -> None:
    code, warnings, out = validate(EXAMPLES, capsys)
    assert (code, warnings) == (0, []) and "warning" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", str(EXAMPLES)],
        ["validate", "--policies", str(EXAMPLES)],
        ["explain", str(EXAMPLES), "--request", str(REPO / "examples" / "list-issues.yaml")],
        ["explain", "--policies", str(EXAMPLES), "--request", str(REPO / "examples" / "list-issues.yaml")],
        ["test", str(EXAMPLES)],
        ["test", "--policies", str(EXAMPLES)],
    ],
)
def test_every_command_takes_the_directory_as_policies_or_positional(argv: list[str], capsys) -> None:
    assert main(argv) == 0
