"""Warnings `mandate validate` adds to a set that loads: rules that can never match.

A warning never stops a set from loading (`mandate serve` does not compute them); each is a
rule, grant or profile that is valid but cannot take effect as written:

- a `when` that reads what its rule's requests never carry: `a2a` on an MCP, egress or http rule,
  `mcp` on an agents, egress or http rule, `mcp.tool` on an MCP rule with no tools (likewise
  `mcp.resource`, `mcp.prompt`);
- a grant's rule for a server, agent, host or target that neither its delegate nor any agent the
  delegate may call has a rule for (along a chain every scope must allow, so the grant alone can
  never allow it);
- an agents rule naming a profile whose `acceptFrom` leaves the caller out;
- a profile with `hosts` that no agents rule (or grant) names: nothing allowed can reach it there;
  and with `requireChain`, one never called holds no chain, so none of its rules can match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from authz.policy.globs import GlobSet
from authz.policy.loader import PolicyError, load_directory
from authz.policy.model import MissionProfile, Scope

Loc = tuple[str | int, ...]
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_READ = re.compile(r"\b(mcp|a2a)\s*\.\s*(\w+)")
_MCP_PARTS = {"tool": "tools", "resource": "resources", "prompt": "prompts"}


def warnings(directory: str | Path) -> list[PolicyError]:
    profiles = [(d.document, d) for d in load_directory(directory) if isinstance(d.document, MissionProfile)]
    by_name = {document.metadata.name: document for document, _ in profiles}
    called = {name for document, _ in profiles for name in _called(document.spec)}
    found: list[PolicyError] = []
    for document, source in profiles:
        found += [
            source.error(f"warning: {message}", *loc)
            for message, loc in _scope_warnings(document.spec, ("spec",), by_name, document.metadata.name)
        ]
        found += [source.error(f"warning: {message}", *loc) for message, loc in _reach_warnings(document, called)]
    return sorted(found, key=lambda warning: (warning.file, warning.line))


def _called(scope: Scope) -> Iterator[str]:
    for rule in scope.agents:
        yield rule.agent
        if rule.grant is not None:
            yield from _called(rule.grant)


def _reads(when: str) -> set[tuple[str, str]]:
    return set(_READ.findall(_STRING.sub("''", when)))


def _scope_warnings(
    scope: Scope, loc: Loc, profiles: dict[str, MissionProfile], caller: str
) -> Iterator[tuple[str, Loc]]:
    for index, rule in enumerate(scope.mcp):
        reads = _reads(rule.when or "")
        if any(root == "a2a" for root, _ in reads):
            yield "this MCP rule's `when` reads `a2a`, which MCP requests never have", (*loc, "mcp", index, "when")
        for part, listed in _MCP_PARTS.items():
            if ("mcp", part) in reads and not getattr(rule, listed):
                yield (
                    f"`when` reads `mcp.{part}`, but the rule lists no {listed}: no request it allows has one",
                    (*loc, "mcp", index, "when"),
                )
    for section, rules in (("agents", scope.agents), ("egress", scope.egress), ("http", scope.http)):
        for index, rule in enumerate(rules):
            roots = {root for root, _ in _reads(rule.when or "")} - ({"a2a"} if section == "agents" else set())
            for root in sorted(roots):
                yield (
                    f"this {section} rule's `when` reads `{root}`, which its requests never have",
                    (*loc, section, index, "when"),
                )
    for index, rule in enumerate(scope.agents):
        callee = profiles.get(rule.agent)
        if callee is not None and callee.spec.delegation.accept_from:
            accepted = GlobSet(callee.spec.delegation.accept_from)
            if caller not in accepted:
                yield (
                    (
                        f"{rule.agent!r} accepts calls only from {', '.join(callee.spec.delegation.accept_from)}: "
                        "this rule can never be used"
                    ),
                    (*loc, "agents", index),
                )
        if rule.grant is not None and callee is not None:
            yield from _grant_warnings(rule.grant, callee, profiles, (*loc, "agents", index, "grant"))
            yield from _scope_warnings(rule.grant, (*loc, "agents", index, "grant"), profiles, rule.agent)


def _grant_warnings(
    grant: Scope, callee: MissionProfile, profiles: dict[str, MissionProfile], loc: Loc
) -> Iterator[tuple[str, Loc]]:
    """A grant limits its delegate and every hop after it: a grant rule for what none of them has a
    rule for of its own can never allow anything."""
    reachable = _downstream(callee, profiles)
    sections = (
        ("mcp", [r.server for r in grant.mcp], {r.server for p in reachable for r in p.spec.mcp}, "server"),
        ("agents", [r.agent for r in grant.agents], {r.agent for p in reachable for r in p.spec.agents}, "agent"),
        ("egress", [r.host for r in grant.egress], {r.host for p in reachable for r in p.spec.egress}, "host"),
        ("http", [r.target for r in grant.http], {r.target for p in reachable for r in p.spec.http}, "target"),
    )
    name = callee.metadata.name
    for section, granted, owned, what in sections:
        for index, item in enumerate(granted):
            if item not in owned:
                message = f"neither {name!r} nor an agent it may call has a {section} rule for {what} {item!r}"
                yield f"{message}: this grant rule can never allow anything", (*loc, section, index)


def _downstream(start: MissionProfile, profiles: dict[str, MissionProfile]) -> list[MissionProfile]:
    """`start` and every profile it may call, directly or through others (by their own rules)."""
    seen = {start.metadata.name: start}
    pending = [start]
    while pending:
        for rule in pending.pop().spec.agents:
            callee = profiles.get(rule.agent)
            if callee is not None and rule.agent not in seen:
                seen[rule.agent] = callee
                pending.append(callee)
    return list(seen.values())


def _reach_warnings(document: MissionProfile, called: set[str]) -> Iterator[tuple[str, Loc]]:
    name, spec = document.metadata.name, document.spec
    if name in called:
        return
    if spec.delegation.require_chain:
        yield (
            (
                f"requireChain is true but no agents rule names {name!r}: it never holds a chain, "
                "so none of its rules can match"
            ),
            ("spec", "delegation", "requireChain"),
        )
    elif spec.hosts:
        yield f"no agents rule names {name!r}: no caller may reach it at its hosts", ("spec", "hosts")
