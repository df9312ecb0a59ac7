"""Which entries of an MCP list answer a caller may see: those a call by it could be allowed (SPEC §9)."""

from __future__ import annotations

from authz.check.decide import scope_may_allow
from authz.check.protocols.mcp import McpAction
from authz.policy.compiled import PolicySet


def test_a_scope_may_allow_what_a_rule_for_the_server_names_whatever_its_when_says(example_policy: PolicySet):
    support = example_policy.profiles["support-agent"].scope  # its github rule has a `when`
    assert scope_may_allow(support, "github", McpAction("tools/call", "tool", "list_issues"))
    assert scope_may_allow(support, "github", McpAction("resources/read", "resource", "repo://acme/readme"))
    assert scope_may_allow(support, "github", McpAction("prompts/get", "prompt", "triage"))
    assert not scope_may_allow(support, "github", McpAction("tools/call", "tool", "create_issue"))
    assert not scope_may_allow(support, "github", McpAction("resources/read", "resource", "repo://other/x"))
    assert not scope_may_allow(support, "billing-db", McpAction("tools/call", "tool", "lookup_invoice"))
