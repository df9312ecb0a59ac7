"""`mandate explain` on an MCP list request: what the caller's list would contain, scope by
scope along its chain, and, given the server's answer, what the response path keeps of it."""

from __future__ import annotations

import orjson

from authz.cli import main
from authz.explain import describe, explain, render_text
from tests.harness.example_policies import EXAMPLES, GITHUB_HOST, REPO, SUPPORT, TRIAGE

TOOLS = ["get_me", "list_issues", "create_issue", "get_issue", "delete_repo"]


def listing(source: str = SUPPORT, method: str = "tools/list", answer: object = None, **more: object):
    return describe(
        {
            "source": source,
            "host": GITHUB_HOST,
            "path": "/mcp",
            "body": {"jsonrpc": "2.0", "id": 4, "method": method},
            **({"answer": answer} if answer is not None else {}),
            **more,
        },
        "test",
    )


def answer(names: list[str]) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": 4, "result": {"tools": [{"name": name} for name in names]}}


def test_a_list_request_shows_the_names_each_scope_gives_and_what_it_keeps_of_the_answer(example_policy):
    (listed,) = explain(example_policy, listing(answer=answer(TOOLS)))["lists"]
    assert listed["method"] == "tools/list"
    assert listed["scopes"] == [
        {"hop": "support-agent", "scope": "its own mission", "names": ["get_me", "list_issues", "get_issue"]}
    ]
    assert (listed["kept"], listed["removed"]) == (
        ["get_me", "list_issues", "get_issue"],
        ["create_issue", "delete_repo"],
    )


def test_a_chained_caller_sees_every_scope_along_its_chain(example_policy):
    report = explain(example_policy, listing(chain=["orchestrator", "support-agent"], method="prompts/list"))
    (listed,) = report["lists"]
    assert [(scope["hop"], scope["names"]) for scope in listed["scopes"]] == [
        ("support-agent", ["triage"]),
        ("orchestrator", []),  # its grant names no prompts: the delegate's prompts/list is empty
    ]
    assert "prompts/list keeps the prompts whose name every scope names:" in render_text(report)


def test_a_dry_run_caller_is_said_to_lose_nothing(example_policy):
    (listed,) = explain(example_policy, listing(source=TRIAGE, answer=answer(TOOLS)))["lists"]
    assert listed["dry_run"] and listed["kept"] == TOOLS and listed["removed"] == []


def test_an_answer_the_response_path_would_refuse_is_said_to_be_refused(example_policy):
    (listed,) = explain(example_policy, listing(answer={"jsonrpc": "2.0", "id": 4, "result": {"tools": "x"}}))["lists"]
    assert listed["answer"].startswith("refused: ")


def test_other_requests_have_no_list(example_policy):
    call = describe(
        {
            "source": SUPPORT,
            "host": GITHUB_HOST,
            "path": "/mcp",
            "body": {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_me"}},
        },
        "t",
    )
    assert explain(example_policy, call)["lists"] == []


def test_the_example_list_request_explains_from_the_command_line(capsys):
    assert (
        main(
            ["explain", "--policies", str(EXAMPLES), "--request", str(REPO / "examples" / "list-tools.yaml"), "--json"]
        )
        == 0
    )
    (listed,) = orjson.loads(capsys.readouterr().out)["lists"]
    assert listed["removed"] == ["create_issue", "delete_repo"]
