"""Step 5: does every scope along the chain allow every action in the request?

Rules within one scope are alternatives (any may allow); scopes along a chain are
conjunctive (all must allow), so privilege can only narrow as work is delegated.
"""

from __future__ import annotations

from typing import Any

from .chain import Chain
from .classify import Action, Classified, HttpAction
from .identity import SpiffeId
from .policy.compiler import CompiledMcpRule, CompiledPathRule, CompiledScope
from .policy.conditions import Condition
from .protocols.a2a import A2aAction
from .protocols.mcp import McpAction
from .request import AuthzInput
from .verdict import FORBIDDEN, Verdict, allow

_NOT_ALLOWED = {"tool": "tool_not_allowed", "resource": "resource_not_allowed", "prompt": "prompt_not_allowed", "method": "method_not_allowed"}
_WHAT = {"tool": "tool", "resource": "resource", "prompt": "prompt", "method": "method", "plumbing": "session traffic"}


class _Context:
    """Builds the CEL activation only if some `when` is actually consulted."""

    __slots__ = ("caller", "request", "classified", "chain", "_base", "failed_condition", "condition_errored")

    def __init__(self, caller: SpiffeId, request: AuthzInput, classified: Classified, chain: Chain) -> None:
        self.caller, self.request, self.classified, self.chain = caller, request, classified, chain
        self._base: dict[str, Any] | None = None
        self.failed_condition = ""  # why the last consulted `when` did not allow
        self.condition_errored = False

    def holds(self, condition: Condition, action: Action) -> bool:
        if self._base is None:
            self._base = _base_activation(self.caller, self.request, self.classified, self.chain)
        variables = {**self._base, **_action_activation(self.classified, action)}
        try:
            if condition.holds(variables):
                return True
            self.failed_condition = "its `when` condition is false"
        except Exception as exc:  # noqa: BLE001 - a runtime CEL error denies, it never allows
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            self.failed_condition = f"its `when` condition failed: {detail}"
            self.condition_errored = True
        return False


def decide(caller: SpiffeId, request: AuthzInput, classified: Classified, chain: Chain) -> Verdict:
    context = _Context(caller, request, classified, chain)
    rule = ""
    for action in classified.actions:
        verdict = _decide_action(action, classified, chain, context)
        if not verdict.allowed:
            return verdict
        rule = rule or verdict.rule
    return allow(rule)


def _decide_action(action: Action, classified: Classified, chain: Chain, context: _Context) -> Verdict:
    if isinstance(action, A2aAction) and action.binding == "jsonrpc" and not action.method:
        return Verdict(False, "unknown_a2a_method", f"{action.wire_method[:100]!r} is not an A2A method", FORBIDDEN)
    caller_rule = ""
    for position, hop in enumerate(chain.scopes):
        context.failed_condition, context.condition_errored = "", False
        rule, refusal = _scope_allows(hop.scope, action, classified, context)
        if rule is None:
            reason, what = refusal
            if context.failed_condition:
                reason = "condition_error" if context.condition_errored else reason
                why = f"a rule of {hop.given_by!r} names it but {context.failed_condition}"
            elif position == 0:
                why = f"it is not in the mission of {hop.given_by!r}"
            else:
                why = f"it is outside the scope that {hop.given_by!r} delegated along chain {chain.id}"
            message = f"{what} refused: {why}"
            return Verdict(False, reason, message, FORBIDDEN, hop=hop.given_by)
        caller_rule = caller_rule or rule
    return allow(caller_rule)


def _scope_allows(
    scope: CompiledScope, action: Action, classified: Classified, context: _Context
) -> tuple[str | None, tuple[str, str]]:
    """(label of the allowing rule, _) or (None, (reason, description of what was refused))."""
    target = classified.target.name
    if isinstance(action, McpAction):
        rules = scope.mcp.get(target, ())
        what = f"MCP {_WHAT[action.kind]} {action.name!r} on server {target!r}" if action.name else f"MCP {_WHAT[action.kind]} on server {target!r}"
        if not rules:
            return None, ("server_not_allowed", f"MCP server {target!r}")
        return _first_match(rules, action, context, _mcp_rule_covers), (_NOT_ALLOWED.get(action.kind, "method_not_allowed"), what)
    if isinstance(action, A2aAction):
        rules = scope.agents.get(target, ())
        if not rules:
            return None, ("agent_not_allowed", f"calling agent {target!r}")
        if action.is_card:
            return rules[0].label, ("", "")
        return _first_match(rules, action, context, _agent_rule_covers), (
            "a2a_method_not_allowed",
            f"A2A {action.method} on agent {target!r}",
        )
    rules = (scope.egress if classified.protocol == "egress" else scope.http).get(target, ())
    what = f"{action.method} {action.path[:200]} on {classified.protocol} target {target!r}"
    reason = f"{classified.protocol}_not_allowed"
    host = classified.host
    return _first_match(rules, action, context, lambda rule, a: _path_rule_covers(rule, a, host)), (reason, what)


def _first_match(rules, action, context: _Context, covers) -> str | None:  # type: ignore[no-untyped-def]
    """The first rule that covers the action and whose `when` holds; a failing `when` never allows."""
    for rule in rules:
        if not covers(rule, action):
            continue
        if rule.when is None or action_is_plumbing(action) or context.holds(rule.when, action):
            return rule.label
    return None


def action_is_plumbing(action: Action) -> bool:
    return isinstance(action, McpAction) and action.kind == "plumbing"


def _mcp_rule_covers(rule: CompiledMcpRule, action: McpAction) -> bool:
    kind = action.kind
    if kind == "plumbing":
        return True
    if kind == "tool":
        return action.name in rule.tools
    if kind == "resource":
        return action.name in rule.resources
    if kind == "prompt":
        return action.name in rule.prompts
    return action.name in rule.methods


def _agent_rule_covers(rule, action: A2aAction) -> bool:  # type: ignore[no-untyped-def]
    return rule.methods is None or action.method in rule.methods


def _path_rule_covers(rule: CompiledPathRule, action: HttpAction, host: str) -> bool:
    return (rule.host is None or rule.host == host) and action.path in rule.paths and action.method in rule.methods


# --- CEL activation (SPEC §3) ------------------------------------------------------------


def _base_activation(caller: SpiffeId, request: AuthzInput, classified: Classified, chain: Chain) -> dict[str, Any]:
    return {
        "source": {
            "principal": caller.principal,
            "identity": {
                "trustDomain": caller.trust_domain,
                "namespace": caller.namespace,
                "serviceAccount": caller.service_account,
            },
        },
        "request": {
            "method": request.method,
            "path": classified.path,
            "host": classified.host,
            "headers": request.headers,
        },
        "chain": {"depth": chain.depth, "root": chain.hops[0], "hops": list(chain.hops)},
    }


def _action_activation(classified: Classified, action: Action) -> dict[str, Any]:
    mcp: dict[str, Any] = {
        "method": "",
        "server": "",
        "tool": {"name": "", "arguments": {}},
        "resource": {"uri": ""},
        "prompt": {"name": ""},
    }
    a2a = {"method": "", "agent": ""}
    if isinstance(action, McpAction):
        mcp["method"] = action.method
        mcp["server"] = classified.target.name
        if action.kind == "tool":
            mcp["tool"] = {"name": action.name, "arguments": action.arguments}
        elif action.kind == "resource":
            mcp["resource"] = {"uri": action.name}
        elif action.kind == "prompt":
            mcp["prompt"] = {"name": action.name}
    elif isinstance(action, A2aAction):
        a2a = {"method": action.method, "agent": classified.target.name}
    return {"mcp": mcp, "a2a": a2a}
