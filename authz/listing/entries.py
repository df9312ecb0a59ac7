"""Which entries of a list answer stay: those a call by the same caller, under the same chain,
could be allowed. The rules are the compiled ones a Check reads (`decide.scope_may_allow`);
a `when` is assumed to hold, since it may allow some call of the entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authz.check.decide import scope_may_allow
from authz.check.delegation import Chain
from authz.check.protocols.mcp import McpAction
from authz.policy.compiled import CompiledScope, PolicySet


class Unreadable(Exception):
    """An answer of a shape Mandate does not know: refused, never passed on. The message names
    no entry, so a refusal cannot show what the caller may not see."""


@dataclass(frozen=True)
class ListKind:
    """Where a list method's answer keeps its entries, what names one, and the call it stands for."""

    key: str  # in `result`
    field: str  # in each entry
    kind: str  # the McpAction kind a call of the entry has
    call: str  # the method that calls it


LISTS = {
    "tools/list": ListKind("tools", "name", "tool", "tools/call"),
    "prompts/list": ListKind("prompts", "name", "prompt", "prompts/get"),
    "resources/list": ListKind("resources", "uri", "resource", "resources/read"),
    "resources/templates/list": ListKind("resourceTemplates", "uriTemplate", "resource", "resources/read"),
}
# The list a result's top-level key says it answers, for answers whose request Mandate did not see.
SHAPES = {kind.key: method for method, kind in LISTS.items()}


@dataclass
class Counts:
    """What filtering one list did; `would_remove` are kept only because a dry-run profile refused them."""

    kept: int = 0
    removed: int = 0
    would_remove: int = 0


class EntryRules:
    """What one caller may call on one MCP server: every scope along its chain must name the entry.

    A refusal by a dry-run profile's scope (the caller's own, or the first refusing hop's)
    keeps the entry, as the call itself would be let through, and counts it in `would_remove`."""

    def __init__(self, policy: PolicySet, chain: Chain, server: str) -> None:
        self.server = server
        self.dry_run = policy.profiles[chain.hops[-1]].dry_run
        self._scopes: tuple[tuple[CompiledScope, bool], ...] = tuple(
            (hop.scope, policy.profiles[hop.given_by].dry_run) for hop in chain.scopes
        )

    def verdict(self, kind: ListKind, name: str) -> str:
        """ "keep", "remove" or "would_remove" for the entry called `name`."""
        action = McpAction(kind.call, kind.kind, name)
        for scope, dry_run in self._scopes:
            if not scope_may_allow(scope, self.server, action):
                return "would_remove" if self.dry_run or dry_run else "remove"
        return "keep"

    def filter(self, method: str, result: Any) -> tuple[dict[str, Any], Counts]:
        """`result` with the entries the caller may not call removed; every other field, and the
        order of the kept entries, as they were."""
        kind = LISTS[method]
        if not isinstance(result, dict):
            raise Unreadable(f"the {method} answer's result is not an object")
        entries = result.get(kind.key)
        if not isinstance(entries, list):
            raise Unreadable(f"the {method} answer's result has no {kind.key} list")
        counts = Counts()
        kept = []
        for entry in entries:
            name = entry.get(kind.field) if isinstance(entry, dict) else None
            if not isinstance(name, str):
                raise Unreadable(f"an entry of the {method} answer has no string {kind.field}")
            verdict = self.verdict(kind, name)
            if verdict == "remove":
                counts.removed += 1
                continue
            counts.kept += 1
            counts.would_remove += verdict == "would_remove"
            kept.append(entry)
        return {**result, kind.key: kept}, counts
