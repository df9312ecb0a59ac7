"""Step 5: does every scope along the chain allow every action in the request?

Rules within one scope are alternatives (any may allow); scopes along a chain are
conjunctive (all must allow), so privilege can only narrow as work is delegated.
"""

from __future__ import annotations

from typing import Any

from authz.check.classify import Action, Classified, HttpAction
from authz.check.decision import Verdict, allow, refused
from authz.check.delegation import Chain
from authz.check.identity import SpiffeId
from authz.check.protocols.a2a import A2aAction
from authz.check.protocols.mcp import McpAction
from authz.check.request import AuthzInput
from authz.policy.compiled import CompiledMcpRule, CompiledPathRule, CompiledScope, CompiledUsers
from authz.policy.conditions import Condition
from authz.reasons import (
    A2A_METHOD_NOT_ALLOWED,
    AGENT_NOT_ALLOWED,
    CONDITION_ERROR,
    EGRESS_NOT_ALLOWED,
    HTTP_NOT_ALLOWED,
    METHOD_NOT_ALLOWED,
    PROMPT_NOT_ALLOWED,
    RESOURCE_NOT_ALLOWED,
    SERVER_NOT_ALLOWED,
    TOOL_NOT_ALLOWED,
    UNKNOWN_A2A_METHOD,
    USER_NOT_ALLOWED,
    USER_REQUIRED,
)
from authz.users.user import ActingUser

_NOT_ALLOWED = {
    "tool": TOOL_NOT_ALLOWED,
    "resource": RESOURCE_NOT_ALLOWED,
    "prompt": PROMPT_NOT_ALLOWED,
    "method": METHOD_NOT_ALLOWED,
}
_PATH_NOT_ALLOWED = {"egress": EGRESS_NOT_ALLOWED, "http": HTTP_NOT_ALLOWED}
_WHAT = {"tool": "tool", "resource": "resource", "prompt": "prompt", "method": "method", "plumbing": "session traffic"}


class _Context:
    """What a `when` may read; each CEL root is built only once some `when` reads it."""

    __slots__ = (
        "_roots",
        "caller",
        "chain",
        "classified",
        "condition_errored",
        "failed_condition",
        "request",
        "user",
        "user_refusal",
    )

    def __init__(
        self, caller: SpiffeId, request: AuthzInput, classified: Classified, chain: Chain, user: ActingUser | None
    ) -> None:
        self.caller, self.request, self.classified, self.chain, self.user = caller, request, classified, chain, user
        self._roots: dict[str, dict[str, Any]] = {}  # source, request, chain, user: the same for every action
        self.failed_condition = ""  # why the last consulted `when` did not allow
        self.condition_errored = False
        self.user_refusal = ""  # user_required or user_not_allowed, when a `users` entry did not admit the user

    def admits(self, users: CompiledUsers) -> bool:
        """Whether the request's user is one `users` names; remembers why not."""
        user = self.user
        if user is None:
            self.user_refusal = USER_REQUIRED
            return False
        if users.admits(user):
            return True
        if not self.user_refusal:
            self.user_refusal = USER_NOT_ALLOWED
        return False

    def holds(self, condition: Condition, action: Action) -> bool:
        try:
            if condition.holds(_Variables(self, action)):
                return True
            self.failed_condition = "its `when` condition is false"
        except Exception as exc:  # noqa: BLE001 - a runtime CEL error denies, it never allows
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            self.failed_condition = f"its `when` condition failed: {detail}"
            self.condition_errored = True
        return False

    def root(self, name: str) -> dict[str, Any]:
        found = self._roots.get(name)
        if found is None:
            found = self._roots[name] = _REQUEST_ROOTS[name](self)
        return found


class _Variables:
    """The CEL activation for one action, as a mapping that builds a root when it is read."""

    __slots__ = ("_action", "_context")

    def __init__(self, context: _Context, action: Action) -> None:
        self._context, self._action = context, action

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name == "mcp":
            return _mcp_root(self._context.classified, self._action)
        if name == "a2a":
            return _a2a_root(self._context.classified, self._action)
        return self._context.root(name)


def decide(
    caller: SpiffeId, request: AuthzInput, classified: Classified, chain: Chain, user: ActingUser | None = None
) -> Verdict:
    context = _Context(caller, request, classified, chain, user)
    rule = ""
    for action in classified.actions:
        verdict = _decide_action(action, classified, chain, context)
        if not verdict.allowed:
            return verdict
        rule = rule or verdict.rule
    return allow(rule)


def _decide_action(action: Action, classified: Classified, chain: Chain, context: _Context) -> Verdict:
    if isinstance(action, A2aAction) and action.binding == "jsonrpc" and not action.method:
        return refused(UNKNOWN_A2A_METHOD, f"{action.wire_method[:100]!r} is not an A2A method")
    caller_rule = ""
    for position, hop in enumerate(chain.scopes):
        context.failed_condition, context.condition_errored, context.user_refusal = "", False, ""
        granted_to = hop.scope.users
        if granted_to is not None and not _needs_only_a_rule(action) and not context.admits(granted_to):
            held = f"refused: the scope that {hop.given_by!r} delegated along chain {chain.id} holds"
            return _user_refused(context, held, hop.given_by)
        rule, refusal = _scope_allows(hop.scope, action, classified, context)
        if rule is None:
            reason, what = refusal
            if context.user_refusal:
                return _user_refused(context, f"{what} refused: a rule of {hop.given_by!r} names it", hop.given_by)
            if context.failed_condition:
                reason = CONDITION_ERROR if context.condition_errored else reason
                why = f"a rule of {hop.given_by!r} names it but {context.failed_condition}"
            elif position == 0:
                why = f"it is not in the mission of {hop.given_by!r}"
            else:
                why = f"it is outside the scope that {hop.given_by!r} delegated along chain {chain.id}"
            message = f"{what} refused: {why}"
            return refused(reason, message, hop.given_by)
        caller_rule = caller_rule or rule
    return allow(caller_rule)


def _scope_allows(
    scope: CompiledScope, action: Action, classified: Classified, context: _Context
) -> tuple[str | None, tuple[str, str]]:
    """(label of the allowing rule, _) or (None, (reason, description of what was refused))."""
    target = classified.target.name
    if isinstance(action, McpAction):
        mcp_rules = scope.mcp.get(target, ())
        what = (
            f"MCP {_WHAT[action.kind]} {action.name!r} on server {target!r}"
            if action.name
            else f"MCP {_WHAT[action.kind]} on server {target!r}"
        )
        if not mcp_rules:
            return None, (SERVER_NOT_ALLOWED, f"MCP server {target!r}")
        return _first_match(mcp_rules, action, context, _mcp_rule_covers), (
            _NOT_ALLOWED.get(action.kind, METHOD_NOT_ALLOWED),
            what,
        )
    if isinstance(action, A2aAction):
        agent_rules = scope.agents.get(target, ())
        if not agent_rules:
            return None, (AGENT_NOT_ALLOWED, f"calling agent {target!r}")
        if action.is_card:
            return agent_rules[0].label, ("", "")
        return _first_match(agent_rules, action, context, _agent_rule_covers), (
            A2A_METHOD_NOT_ALLOWED,
            f"A2A {action.method} on agent {target!r}",
        )
    rules = (scope.egress if classified.protocol == "egress" else scope.http).get(target, ())
    what = f"{action.method} {action.path[:200]} on {classified.protocol} target {target!r}"
    reason = _PATH_NOT_ALLOWED[classified.protocol]
    host = classified.host
    return _first_match(rules, action, context, lambda rule, a: _path_rule_covers(rule, a, host)), (reason, what)


def _first_match(rules, action, context: _Context, covers) -> str | None:  # type: ignore[no-untyped-def]
    """The first rule that covers the action, admits the user and whose `when` holds; a failing
    `when` never allows. Session plumbing needs only a rule that covers it."""
    for rule in rules:
        if not covers(rule, action):
            continue
        if action_is_plumbing(action):
            return rule.label
        if rule.users is not None and not context.admits(rule.users):
            continue
        if rule.when is None or context.holds(rule.when, action):
            return rule.label
    return None


def _needs_only_a_rule(action: Action) -> bool:
    """Session plumbing and agent cards: any rule for the server or agent allows them."""
    return action_is_plumbing(action) or (isinstance(action, A2aAction) and action.is_card)


def _user_refused(context: _Context, what: str, hop: str) -> Verdict:
    """A refusal for the user (never naming whom a rule is for: that is another profile's contents)."""
    if context.user_refusal == USER_REQUIRED:
        why = "only for some users, and the request acts for none (no user token, and its chain records none)"
    else:
        user = context.user
        who = repr(user.user.sub) if user is not None else "the user"
        why = f"only for some users, and not for {who}"
    return refused(context.user_refusal, f"{what} {why}", hop)


def scope_may_allow(scope: CompiledScope, target: str, action: McpAction) -> bool:
    """Whether a rule of `scope` for MCP server `target` names the action, whatever its `when` says:
    an entry of a list answer stays when every scope along the chain may allow calling it (SPEC §9)."""
    return any(_mcp_rule_covers(rule, action) for rule in scope.mcp.get(target, ()))


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


def _source_root(context: _Context) -> dict[str, Any]:
    caller = context.caller
    return {
        "principal": caller.principal,
        "identity": {
            "trustDomain": caller.trust_domain,
            "namespace": caller.namespace,
            "serviceAccount": caller.service_account,
        },
    }


def _request_root(context: _Context) -> dict[str, Any]:
    request, classified = context.request, context.classified
    return {"method": request.method, "path": classified.path, "host": classified.host, "headers": request.headers}


def _chain_root(context: _Context) -> dict[str, Any]:
    chain = context.chain
    return {"depth": chain.depth, "root": chain.hops[0], "hops": list(chain.hops)}


def _user_root(context: _Context) -> dict[str, Any]:
    """`user.{sub,iss,groups,claims}`; an empty map when the request acts for no user."""
    user = context.user
    return {} if user is None else user.root()


_REQUEST_ROOTS = {"source": _source_root, "request": _request_root, "chain": _chain_root, "user": _user_root}


def _mcp_root(classified: Classified, action: Action) -> dict[str, Any]:
    mcp: dict[str, Any] = {
        "method": "",
        "server": "",
        "tool": {"name": "", "arguments": {}},
        "resource": {"uri": ""},
        "prompt": {"name": ""},
    }
    if isinstance(action, McpAction):
        mcp["method"] = action.method
        mcp["server"] = classified.target.name
        if action.kind == "tool":
            mcp["tool"] = {"name": action.name, "arguments": action.arguments}
        elif action.kind == "resource":
            mcp["resource"] = {"uri": action.name}
        elif action.kind == "prompt":
            mcp["prompt"] = {"name": action.name}
    return mcp


def _a2a_root(classified: Classified, action: Action) -> dict[str, Any]:
    if isinstance(action, A2aAction):
        return {"method": action.method, "agent": classified.target.name}
    return {"method": "", "agent": ""}
