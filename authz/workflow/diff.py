"""`mandate diff OLD NEW`: what a policy change grants and revokes, for the reviewer.

Both sets must compile (as `mandate validate` checks them); the comparison is then of the
documents as written, read by the loader: each set becomes a set of facts (support-agent may
call tool `create_issue` on github; billing-agent accepts calls from orchestrator; ...), and
the change is what one set has and the other has not. Facts that allow something are granted
or revoked; limits (conditions, delegation settings, targets' addresses, Settings) are listed as
changed, and so is every request header a Target or rule sets or removes (a credential sent to a
new upstream is a change to review: a value is shown as written, `{secret:PATH}` naming a path,
never a secret); a profile's mode is reported when it switches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.policy.loader import load_directory
from authz.policy.model import MissionProfile, RequestHeaders, Scope, Settings, Target

EVERY_A2A_METHOD = "* (every A2A method)"


@dataclass(frozen=True, order=True)
class Fact:
    profile: str  # the profile it is about; "" for targets and settings
    what: str  # e.g. "tool", "egress", "grant to billing-agent: tool"
    detail: str  # e.g. "github: create_issue"
    grants: bool = True  # allows something (else: a limit or an address)


@dataclass
class PolicyFacts:
    facts: set[Fact] = field(default_factory=set)
    modes: dict[str, str] = field(default_factory=dict)  # profile -> enforce | dry-run


def policy_facts(directory: str | Path) -> PolicyFacts:
    result = PolicyFacts()
    for sourced in load_directory(directory):
        document = sourced.document
        if isinstance(document, MissionProfile):
            _profile_facts(document, result)
        elif isinstance(document, Target):
            _target_facts(document, result.facts)
        elif isinstance(document, Settings):
            for key, value in document.spec.model_dump(by_alias=True).items():
                result.facts.add(Fact("", "setting", f"{key}: {value}", grants=False))
    return result


def _profile_facts(document: MissionProfile, result: PolicyFacts) -> None:
    name, spec = document.metadata.name, document.spec
    result.modes[name] = spec.mode
    facts = result.facts
    facts.add(Fact(name, "profile", name))
    facts.update(Fact(name, "governs", principal) for principal in spec.principals)
    facts.update(Fact(name, "reached at", host, grants=False) for host in spec.hosts)
    facts.update(Fact(name, what, detail, grants) for what, detail, grants in scope_facts(spec))
    delegation = spec.delegation
    facts.update(Fact(name, "accepts calls from", caller) for caller in delegation.accept_from)
    for key, value in delegation.model_dump(by_alias=True, exclude={"accept_from"}).items():
        facts.add(Fact(name, "delegation", f"{key}: {value}", grants=False))


def scope_facts(scope: Scope, prefix: str = "") -> list[tuple[str, str, bool]]:
    """(what, detail, grants) for every permission of a scope; a grant's with `grant to X: ` before."""
    found: list[tuple[str, str, bool]] = []
    for rule in scope.mcp:
        found.append((f"{prefix}mcp server", rule.server, True))
        for what, names in (("tool", rule.tools), ("resource", rule.resources), ("prompt", rule.prompts)):
            found += [(f"{prefix}{what}", f"{rule.server}: {item}", True) for item in names]
        found += [(f"{prefix}mcp method", f"{rule.server}: {item}", True) for item in rule.methods]
        found += header_facts(f"{prefix}request header", f"mcp {rule.server}", rule.request_headers)
        if rule.when:
            found.append((f"{prefix}condition", f"mcp {rule.server}: {rule.when}", False))
    for agent in scope.agents:
        found.append((f"{prefix}calls agent", agent.agent, True))
        methods = agent.methods if agent.methods is not None else [EVERY_A2A_METHOD]
        found += [(f"{prefix}a2a method", f"{agent.agent}: {method}", True) for method in methods]
        found += header_facts(f"{prefix}request header", f"agent {agent.agent}", agent.request_headers)
        if agent.when:
            found.append((f"{prefix}condition", f"agent {agent.agent}: {agent.when}", False))
        if agent.grant is not None:
            found += scope_facts(agent.grant, f"{prefix}grant to {agent.agent}: ")
    for section, rules in (("egress", scope.egress), ("http", scope.http)):
        for rule in rules:
            where = rule.host if section == "egress" else rule.target  # type: ignore[union-attr]
            found += [(f"{prefix}{section}", f"{m} {where}{p}", True) for m in rule.methods for p in rule.paths]
            found += header_facts(f"{prefix}request header", f"{section} {where}", rule.request_headers)
            if rule.when:
                found.append((f"{prefix}condition", f"{section} {where}: {rule.when}", False))
    return found


def header_facts(what: str, where: str, headers: RequestHeaders | None) -> list[tuple[str, str, bool]]:
    """One limit per header set (with its value as written) or removed."""
    if headers is None:
        return []
    found = [(what, f"{where}: set {name}: {value}", False) for name, value in headers.set.items()]
    return found + [(what, f"{where}: remove {name}", False) for name in headers.remove]


def _target_facts(document: Target, facts: set[Fact]) -> None:
    name, spec = document.metadata.name, document.spec
    facts.add(Fact("", "target", f"{name} ({spec.kind})", grants=False))
    facts.update(Fact("", "target address", f"{name}: {address}", grants=False) for address in spec.principals)
    facts.update(Fact("", "target address", f"{name}: {host}", grants=False) for host in spec.hosts)
    if spec.path_prefix:
        facts.add(Fact("", "target address", f"{name}: pathPrefix {spec.path_prefix}", grants=False))
    facts.update(
        Fact("", what, detail, grants)
        for what, detail, grants in header_facts("request header", name, spec.request_headers)
    )


@dataclass
class PolicyDiff:
    granted: list[Fact]
    revoked: list[Fact]
    changed: list[tuple[str, Fact]]  # ("added" | "removed", fact) of limits and addresses
    modes: list[tuple[str, str, str]]  # (profile, old mode, new mode)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # requests decided differently

    @property
    def empty(self) -> bool:
        return not (self.granted or self.revoked or self.changed or self.modes or self.decisions)


def diff_facts(old: PolicyFacts, new: PolicyFacts) -> PolicyDiff:
    added, removed = sorted(new.facts - old.facts), sorted(old.facts - new.facts)
    changed = sorted(
        [("added", fact) for fact in added if not fact.grants] + [("removed", f) for f in removed if not f.grants]
    )
    modes = [
        (profile, old.modes[profile], mode)
        for profile, mode in sorted(new.modes.items())
        if profile in old.modes and old.modes[profile] != mode
    ]
    return PolicyDiff([f for f in added if f.grants], [f for f in removed if f.grants], changed, modes)
