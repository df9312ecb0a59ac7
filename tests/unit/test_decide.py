"""Decisions on the example policies, and attempts to get around each deny (SPEC §3–4, §6)."""

from __future__ import annotations

import orjson
import pytest

from authz.check.request import AuthzInput
from tests.harness.example_policies import BILLING, BILLING_HOST, GITHUB_HOST, ORCHESTRATOR, SUPPORT, TRIAGE
from tests.harness.requests import a2a, http, mcp, tool


def outcome(authorizer, request: AuthzInput) -> tuple[str, int, str]:
    decision = authorizer.decide(request)
    return decision.result, decision.verdict.status, decision.verdict.reason


class TestMcp:
    def test_allowed_tool_resource_prompt(self, authorizer):
        assert outcome(authorizer, tool("list_issues", repo="acme/web"))[0] == "allow"
        assert outcome(authorizer, mcp("resources/read", uri="repo://acme/readme"))[0] == "allow"
        assert outcome(authorizer, mcp("prompts/get", name="triage"))[0] == "allow"
        assert (
            outcome(authorizer, mcp("completion/complete", ref={"type": "ref/prompt", "name": "triage"}))[0] == "allow"
        )

    def test_rule_that_allowed_is_named(self, authorizer):
        assert authorizer.decide(tool("get_me")).verdict.rule == "support-agent.mcp[0]"

    def test_denied_tool_says_which_and_why(self, authorizer):
        decision = authorizer.decide(tool("create_issue", repo="acme/web"))
        assert (decision.result, decision.verdict.status, decision.verdict.reason) == ("deny", 403, "tool_not_allowed")
        assert "'create_issue'" in decision.verdict.message and "'github'" in decision.verdict.message

    def test_denied_resource_and_prompt(self, authorizer):
        assert outcome(authorizer, mcp("resources/read", uri="repo://evil/secrets")) == (
            "deny",
            403,
            "resource_not_allowed",
        )
        assert outcome(authorizer, mcp("prompts/get", name="jailbreak")) == ("deny", 403, "prompt_not_allowed")
        assert (
            outcome(authorizer, mcp("completion/complete", ref={"type": "ref/resource", "uri": "repo://evil/x"}))[2]
            == "resource_not_allowed"
        )

    def test_extension_methods_need_a_methods_entry(self, authorizer):
        assert outcome(authorizer, mcp("logging/setLevel", level="debug")) == ("deny", 403, "method_not_allowed")

    def test_plumbing_needs_some_rule_for_the_server(self, authorizer):
        assert outcome(authorizer, mcp("initialize"))[0] == "allow"
        assert outcome(authorizer, mcp("tools/list"))[0] == "allow"
        billing_db = "billing-db-mcp.billing.svc.cluster.local"
        assert outcome(authorizer, mcp("initialize", host=billing_db)) == ("deny", 403, "server_not_allowed")
        get_stream = AuthzInput(method="GET", path="/mcp", host=billing_db, source_principal=SUPPORT)
        assert outcome(authorizer, get_stream) == ("deny", 403, "server_not_allowed")

    def test_when_condition(self, authorizer):
        assert outcome(authorizer, tool("list_issues", repo="acme/web"))[0] == "allow"
        decision = authorizer.decide(tool("list_issues", repo="evil/web"))
        assert decision.verdict.reason == "tool_not_allowed" and "`when` condition is false" in decision.verdict.message

    def test_when_that_errors_denies(self, write_policies):
        from authz.check.pipeline import Authorizer
        from authz.policy.compiler import compile_directory

        directory = write_policies(
            t="""
            apiVersion: mandate.dev/v1alpha1
            kind: Target
            metadata: {name: github}
            spec: {kind: mcp, hosts: [github-mcp.tools.svc.cluster.local]}
            """,
            p=f"""
            apiVersion: mandate.dev/v1alpha1
            kind: MissionProfile
            metadata: {{name: support-agent}}
            spec:
              principals: [{SUPPORT}]
              mission: test
              mcp: [{{server: github, tools: ["*"], when: 'mcp.tool.arguments.repo.startsWith("acme/")'}}]
            """,
        )
        authorizer = Authorizer(compile_directory(directory))
        assert outcome(authorizer, tool("list_issues", repo="acme/x"))[0] == "allow"
        assert outcome(authorizer, tool("list_issues")) == ("deny", 403, "condition_error")  # no `repo`
        assert outcome(authorizer, tool("list_issues", repo=5)) == ("deny", 403, "condition_error")

    def test_path_prefix(self, authorizer):
        assert outcome(authorizer, mcp("initialize", path="/admin")) == ("deny", 403, "path_outside_target")
        assert outcome(authorizer, mcp("initialize", path="/mcpx")) == ("deny", 403, "path_outside_target")


class TestBypassAttempts:
    """For each deny, try to get the same effect past it."""

    def test_tool_name_case_and_whitespace(self, authorizer):
        for name in (
            "Create_Issue",
            "create_issue ",
            " create_issue",
            "create_issue\u0000",
            "list_issues\ncreate_issue",
        ):
            assert outcome(authorizer, tool(name))[0] == "deny", name

    def test_duplicate_key_smuggling(self, authorizer):
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_me","name":"create_issue"}}'
        request = AuthzInput(method="POST", path="/mcp", host=GITHUB_HOST, body=body, source_principal=SUPPORT)
        assert outcome(authorizer, request) == ("deny", 400, "duplicate_json_key")

    def test_unicode_escaped_method_is_the_same_method(self, authorizer):
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools\\u002fcall","params":{"name":"create_issue"}}'
        request = AuthzInput(method="POST", path="/mcp", host=GITHUB_HOST, body=body, source_principal=SUPPORT)
        assert outcome(authorizer, request)[2] == "tool_not_allowed"

    def test_batch_smuggling(self, authorizer):
        batch = orjson.dumps(
            [
                {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_me"}},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "create_issue"}},
            ]
        )
        request = AuthzInput(method="POST", path="/mcp", host=GITHUB_HOST, body=batch, source_principal=SUPPORT)
        decision = authorizer.decide(request)
        assert decision.verdict.reason == "tool_not_allowed" and decision.jsonrpc_ids == (1, 2)

    def test_header_disagreeing_with_body(self, authorizer):
        request = mcp("tools/call", headers={"mcp-method": "tools/call", "mcp-name": "get_me"}, name="create_issue")
        assert outcome(authorizer, request) == ("deny", 400, "mcp_header_mismatch")

    def test_partial_body(self, authorizer):
        request = tool("get_me")
        request.headers["x-envoy-auth-partial-body"] = "true"
        assert outcome(authorizer, request) == ("deny", 400, "partial_body")
        cut = tool("get_me")
        cut.headers["content-length"] = str(len(cut.body) + 100)  # Envoy 1.40 may say "false" here
        assert outcome(authorizer, cut) == ("deny", 400, "partial_body")

    def test_ambiguous_path_deny_keeps_the_jsonrpc_id(self, authorizer):
        decision = authorizer.decide(mcp("tools/call", path="/mcp/..%2Fadmin", name="get_me"))
        assert (decision.verdict.reason, decision.jsonrpc_ids) == ("ambiguous_path", (1,))

    def test_path_tricks_to_leave_the_prefix(self, authorizer):
        for path in ("/mcp/../admin", "/mcp/%2e%2e/admin", "/mcp%2F..%2Fadmin", "/mcp\\..\\admin", "/mcp/..%252Fadmin"):
            assert outcome(authorizer, mcp("initialize", path=path))[0] == "deny", path

    def test_egress_path_tricks(self, authorizer):
        assert outcome(authorizer, http("GET", "api.github.com", "/repos/acme/web"))[0] == "allow"
        for path in (
            "/repos/acme/../evil/x",
            "/repos/acme/..%2Fevil",
            "/repos/acme%2F../evil",
            "/repos/evil/x?/repos/acme/x",
        ):
            assert outcome(authorizer, http("GET", "api.github.com", path))[0] == "deny", path

    def test_egress_method_and_host(self, authorizer):
        assert outcome(authorizer, http("DELETE", "api.github.com", "/zen")) == ("deny", 403, "egress_not_allowed")
        assert outcome(authorizer, http("get", "api.github.com", "/zen"))[0] == "allow"
        assert outcome(authorizer, http("GET", "API.GITHUB.COM:443", "/zen"))[0] == "allow"
        assert outcome(authorizer, http("GET", "api.github.com.evil.io", "/zen")) == ("deny", 403, "unknown_target")

    def test_identity_headers_do_not_make_a_caller(self, authorizer):
        request = tool("get_me", principal="")
        request.headers.update({"x-caller-identity": SUPPORT, "x-forwarded-client-cert": f"URI={SUPPORT}"})
        assert outcome(authorizer, request) == ("deny", 401, "no_identity")

    def test_unknown_caller_and_foreign_trust_domain(self, authorizer):
        assert outcome(authorizer, tool("get_me", principal="spiffe://cluster.local/ns/x/sa/y")) == (
            "deny",
            403,
            "unknown_caller",
        )
        assert outcome(authorizer, tool("get_me", principal="spiffe://evil.org/ns/support/sa/support-agent"))[1] == 401

    def test_destination_principal_picks_the_target_before_host(self, authorizer):
        """A sidecar inbound call is classified by who answers, whatever Host the client wrote."""
        request = a2a("SendMessage", host="status-page.ops.svc.cluster.local")
        request.destination_principal = BILLING
        assert outcome(authorizer, request)[0] == "allow"
        request = tool("get_me")
        request.destination_principal = "spiffe://cluster.local/ns/billing/sa/billing-db-mcp"
        assert outcome(authorizer, request) == ("deny", 403, "server_not_allowed")


class TestA2a:
    def test_allowed_methods_in_both_generations(self, authorizer):
        for method in ("SendMessage", "message/send", "GetTask", "tasks/get"):
            assert outcome(authorizer, a2a(method))[0] == "allow", method

    def test_method_outside_the_rule(self, authorizer):
        assert outcome(authorizer, a2a("CancelTask")) == ("deny", 403, "a2a_method_not_allowed")
        assert outcome(authorizer, a2a("tasks/cancel")) == ("deny", 403, "a2a_method_not_allowed")

    def test_unknown_method(self, authorizer):
        assert outcome(authorizer, a2a("tasks/purge")) == ("deny", 403, "unknown_a2a_method")

    def test_agent_without_rule(self, authorizer):
        assert outcome(
            authorizer, a2a("SendMessage", principal=BILLING, host="support-agent.support.svc.cluster.local")
        ) == (
            "deny",
            403,
            "agent_not_allowed",
        )

    def test_card_needs_only_the_right_to_call(self, authorizer):
        card = http("GET", BILLING_HOST, "/.well-known/agent-card.json")
        assert outcome(authorizer, card)[0] == "allow"
        card.source_principal = BILLING  # billing-agent has no rule to call itself
        assert outcome(authorizer, card)[2] == "agent_not_allowed"

    def test_default_methods_are_every_method(self, authorizer):
        request = a2a("CancelTask", principal=ORCHESTRATOR, host="support-agent.support.svc.cluster.local")
        assert outcome(authorizer, request)[0] == "allow"

    def test_grpc_binding_is_unsupported(self, authorizer):
        request = AuthzInput(
            method="POST",
            path="/a2a.v1.A2AService/SendMessage",
            host=BILLING_HOST,
            headers={"content-type": "application/grpc"},
            body=b"\x00\x00\x00\x00\x00",
            source_principal=SUPPORT,
        )
        assert outcome(authorizer, request) == ("deny", 403, "unsupported_binding")


class TestHttpAndDryRun:
    def test_http_target(self, authorizer):
        assert outcome(authorizer, http("GET", "status-page.ops.svc.cluster.local", "/api/v1/health"))[0] == "allow"
        assert outcome(authorizer, http("POST", "status-page.ops.svc.cluster.local", "/api/v1/health")) == (
            "deny",
            403,
            "http_not_allowed",
        )
        assert outcome(authorizer, http("GET", "status-page.ops.svc.cluster.local", "/admin")) == (
            "deny",
            403,
            "http_not_allowed",
        )

    def test_dry_run_allows_and_marks_would_deny(self, authorizer):
        decision = authorizer.decide(tool("delete_repo", principal=TRIAGE))
        assert decision.result == "would_deny" and decision.enforced_allow
        assert decision.verdict.reason == "tool_not_allowed"
        assert authorizer.decide(tool("add_label", principal=TRIAGE)).result == "allow"

    def test_namespace_wildcard_principal(self, authorizer):
        assert (
            authorizer.decide(tool("add_label", principal="spiffe://cluster.local/ns/triage/sa/other")).profile
            == "triage-bot"
        )
        assert (
            authorizer.decide(tool("add_label", principal="spiffe://cluster.local/ns/triage2/sa/x")).verdict.reason
            == "unknown_caller"
        )

    def test_dry_run_does_not_cover_unauthenticated(self, authorizer):
        assert authorizer.decide(tool("delete_repo", principal="")).result == "deny"


def test_decision_ids_are_unique(authorizer):
    assert len({authorizer.decide(tool("get_me")).id for _ in range(200)}) == 200


@pytest.mark.parametrize("garbage", [b"\xff" * 10, b"{" * 5000, b'{"jsonrpc":"2.0"' + b" " * 100_000])
def test_garbage_bodies_are_400(authorizer, garbage):
    request = AuthzInput(method="POST", path="/mcp", host=GITHUB_HOST, body=garbage, source_principal=SUPPORT)
    assert outcome(authorizer, request)[1] == 400
