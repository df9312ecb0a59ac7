"""Turn validated documents into lookup tables, once per policy load.

Everything the request path needs is precomputed here: principal and host indexes,
GlobSets for every name list, CEL programs, A2A method names normalised to v1.0, and
egress hosts resolved to their targets. The request path then does only dict lookups.

Documents arrive one at a time and each profile is compiled as it is read, so a set of
100,000 profiles never holds all their validated documents at once (ANALYSIS.md, "100,000
profiles"). What needs the whole set (a reference to a profile or Target read later, an egress
host of a later Target, the principal and host indexes) is settled once every document is in.
"""

from __future__ import annotations

import gc
import hashlib
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from authz.check.identity import parse_spiffe_id
from authz.check.protocols.a2a import A2A_METHODS, A2aRouter, to_v1_method
from authz.check.protocols.paths import host_key
from authz.check.response import CALLER_HEADER, DECISION_HEADER, FILTER_HEADER
from authz.policy.compiled import (
    CompiledAgentRule,
    CompiledMcpRule,
    CompiledPathRule,
    CompiledProfile,
    CompiledScope,
    CompiledSettings,
    CompiledTarget,
    CompiledUsers,
    PolicySet,
    PrincipalIndex,
)
from authz.policy.conditions import Condition, ConditionError, Results
from authz.policy.globs import GlobSet
from authz.policy.headers import RequestHeaders, compile_headers, merged, name_problem
from authz.policy.loader import (
    Origin,
    PolicyError,
    PolicyLoadError,
    SourcedDocument,
    iter_directory,
    policy_files,
)
from authz.policy.model import (
    AgentRule,
    EgressRule,
    Grant,
    HttpRule,
    McpRule,
    MissionProfile,
    Scope,
    Settings,
    SettingsSpec,
    Target,
    Users,
    parse_duration,
)
from authz.policy.model import Issuer as IssuerSpec
from authz.policy.model import RequestHeaders as RequestHeadersSpec
from authz.policy.secrets import Secrets
from authz.policy.suggest import did_you_mean
from authz.users.keys import FileKeys, RemoteKeys, remote_keys
from authz.users.verify import Issuer, UserSettings

Loc = tuple[str | int, ...]
T = TypeVar("T")
GIL_EVERY = 100  # items a loop over the whole set handles before it lets other threads run
_OF_PROFILES = ("profile", "accepted")  # references to a profile, not to a Target

# --- compiling ---------------------------------------------------------------------------


def compile_directory(directory: str | Path, read_secrets: bool = True) -> PolicySet:
    """Load, validate and compile a policy directory; raises PolicyLoadError with every error.
    `read_secrets` False: the offline tools' `--no-secret-files` (SecretFile)."""
    digest = hashlib.sha256()
    for path in policy_files(Path(directory)):
        digest.update(path.name.encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            pass  # iter_directory reports the unreadable file
    load_errors: list[PolicyError] = []
    compiler = _Compiler(iter_directory(directory, load_errors), load_errors, Secrets(read_secrets))
    return compiler.compile(digest.hexdigest()[:12])


def compile_documents(documents: Iterable[SourcedDocument], version: str = "inline") -> PolicySet:
    return _Compiler(documents, []).compile(version)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a set is built: building one makes no cycles
    (tests/unit/test_large_sets.py), and every collection would walk the millions of objects a
    large set is made of, again and again (at 10,000 profiles, three quarters of the load time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _now_and_then(items: Iterable[T]) -> Iterator[T]:
    """`items`, letting other threads have the GIL every GIL_EVERY of them: compiled (mypyc) code
    never offers it by itself, so a loop over 100,000 profiles would hold it for a second while
    a reload runs beside the Checks (ANALYSIS.md, "100,000 profiles")."""
    for count, item in enumerate(items):
        if count % GIL_EVERY == GIL_EVERY - 1:
            time.sleep(0)
        yield item


@dataclass(slots=True)
class _Profile:
    """What the compiler keeps of a profile once its document is read and dropped."""

    origin: Origin
    hosts: tuple[str, ...]
    agent: CompiledTarget  # the profile as a target of kind agent


@dataclass(slots=True)
class _Egress:
    """A scope's egress rules, keyed by the target of their host once every Target is read."""

    origin: Origin
    rules: list[tuple[str, CompiledPathRule, Loc]]  # (host key, rule, where)
    into: dict[str, tuple[CompiledPathRule, ...]]  # the scope's own `egress`, filled in place


class _Compiler:
    def __init__(
        self, documents: Iterable[SourcedDocument], load_errors: list[PolicyError], secrets: Secrets | None = None
    ) -> None:
        self.documents = documents
        self.load_errors = load_errors
        self.errors: list[PolicyError] = []
        self.rejected: set[str] = set()  # names of documents the loader refused (their errors say why)
        self.settings_documents: list[tuple[Settings, SourcedDocument]] = []
        self.targets: dict[str, tuple[Target, SourcedDocument]] = {}
        self.profiles: dict[str, _Profile] = {}
        self.compiled: dict[str, CompiledProfile] = {}
        self.first_seen: dict[str, Origin] = {}
        self.egress_hosts: dict[str, str] = {}  # host -> target name
        # Checks that wait for the whole set: (origin, name, what it must be, where)
        self._references: list[tuple[Origin, str, str, Loc]] = []
        self._egress: list[_Egress] = []
        # Thousands of profiles repeat the same name lists, conditions and hosts: compile each once.
        self._globsets: dict[tuple[str, ...], GlobSet] = {}
        self._conditions: dict[str, Condition] = {}
        self._routers: dict[tuple[str, str, str], A2aRouter] = {}
        self._strings: dict[str, str] = {}
        self._results = Results()  # shared by this set's conditions, dropped with it
        self._first_users: tuple[Origin, Loc] | None = None  # the first rule with `users`
        self._secrets = secrets or Secrets()  # the files `{secret:PATH}` values read, one per path
        self._target_headers: dict[str, RequestHeaders] = {}
        # Rules' own requestHeaders, merged over their Target's once all are read: (label, kind, target or host, own)
        self._rule_headers: list[tuple[str, str, str, RequestHeaders]] = []
        self._header_names: list[tuple[str, Origin, Loc]] = []  # checked once the chain header is known

    def compile(self, version: str) -> PolicySet:
        """The set, or PolicyLoadError with every error of every file: documents the loader
        refused leave the rest to be checked as a whole all the same."""
        with collector_paused(), self._letting_go():
            for source in self.documents:
                self._read(source)
            self.rejected = {error.document for error in self.load_errors if error.document}
            return self._finish(version)

    def _finish(self, version: str) -> PolicySet:
        settings = self._settings()
        if settings.users is None and self._first_users is not None:
            origin, loc = self._first_users
            message = "this rule names users, but the Settings name no users.issuers: no request would ever match"
            self.errors.append(origin.error(message, *loc))
        self._check_references()
        self._resolve_egress()
        callers = self._caller_index(settings)
        targets, by_principal, by_host = self._target_indexes(callers, settings)
        self._check_header_names(settings)
        if self.errors or self.load_errors:
            raise PolicyLoadError(sorted([*self.load_errors, *self.errors], key=lambda e: (e.file, e.line)))
        return PolicySet(
            version=version,
            settings=settings,
            profiles=self.compiled,
            targets=targets,
            callers=callers,
            targets_by_principal=by_principal,
            targets_by_host=by_host,
            egress_hosts={host: targets[name] for host, name in self.egress_hosts.items()},
            condition_headers=self._condition_headers(),
            condition_results=self._results,
            rule_headers=self._merged_rule_headers(targets),
            secrets=self._secrets,
        )

    @contextmanager
    def _letting_go(self) -> Iterator[None]:
        """However compiling ends, drop what was kept while reading a slice at a time: freed in one
        go with the compiler, at 100,000 profiles, it is a pause of tens of ms for every thread."""
        try:
            yield
        finally:
            for table in (self.first_seen, self.profiles):
                for _ in _now_and_then(range(len(table))):
                    table.popitem()
            for kept in (self._references, self._egress):
                for _ in _now_and_then(range(len(kept))):
                    kept.pop()

    # documents, one at a time

    def _read(self, source: SourcedDocument) -> None:
        """Keep a Settings or a Target; compile a profile at once (its document is then dropped)."""
        document = source.document
        if isinstance(document, Settings):
            self.settings_documents.append((document, source))
            return
        name = document.metadata.name
        other = self.first_seen.get(name)
        if other is not None:
            message = f"duplicate name {name!r} (also at {other.file}:{other.line('metadata', 'name')})"
            self.errors.append(source.error(message, "metadata", "name"))
            return
        self.first_seen[name] = source.origin
        if isinstance(document, Target):
            self.targets[name] = (document, source)
            if document.spec.request_headers is not None:
                loc = ("spec", "requestHeaders")
                self._target_headers[name] = self._request_headers(document.spec.request_headers, source.origin, loc)
            if document.spec.kind == "egress":
                for host in document.spec.hosts:
                    self.egress_hosts.setdefault(self._intern(host_key(host)), name)
            return
        compiled = self._profile(document, source)
        self.compiled[name] = compiled
        agent = CompiledTarget(name, "agent", None, compiled, self._a2a_router(document, source))
        self.profiles[name] = _Profile(source.origin, tuple(document.spec.hosts), agent)

    def _settings(self) -> CompiledSettings:
        spec = SettingsSpec()
        for index, (settings, source) in enumerate(self.settings_documents):
            if settings.metadata.name != "default":
                self.errors.append(source.error("the Settings document must be named 'default'", "metadata", "name"))
            if index > 0:
                self.errors.append(source.error("at most one Settings document is allowed"))
            else:
                spec = settings.spec
        return CompiledSettings(
            trust_domains=frozenset(spec.trust_domains),
            trust_forwarded_client_cert=spec.trust_forwarded_client_cert,
            max_depth=spec.max_depth,
            chain_header=spec.chain_header,
            chain_ttl_seconds=parse_duration(spec.chain_ttl),
            users=self._user_settings(spec, self.settings_documents[0][1]) if spec.users is not None else None,
        )

    def _user_settings(self, spec: SettingsSpec, source: SourcedDocument) -> UserSettings | None:
        """The issuers and their keys (a JWKS file is read now: a broken one is a load error)."""
        users = spec.users
        assert users is not None
        if users.header in (spec.chain_header, "x-caller-identity") or users.header.startswith(":"):
            self.errors.append(source.error(f"users.header cannot be {users.header!r}", "spec", "users", "header"))
        issuers: dict[str, Issuer] = {}
        for index, issuer in enumerate(users.issuers):
            loc = ("spec", "users", "issuers", index)
            if issuer.issuer in issuers:
                self.errors.append(source.error(f"issuer {issuer.issuer!r} is listed twice", *loc, "issuer"))
            try:
                keys = _issuer_keys(issuer)
            except (OSError, ValueError, ssl.SSLError) as exc:
                field = "jwksFile" if issuer.jwks_file is not None else "caFile"
                self.errors.append(source.error(f"{field}: {exc}", *loc, field))
                continue
            issuers[issuer.issuer] = Issuer(issuer.issuer, tuple(issuer.audiences), frozenset(issuer.algorithms), keys)
        return UserSettings(users.header, users.groups_claim, issuers)

    def _intern(self, text: str) -> str:
        return self._strings.setdefault(text, text)

    # references to what may be read later

    def _refer(self, origin: Origin, name: str, what: str, loc: Loc) -> None:
        """Check now what is already read; the rest once every document is in."""
        if what in _OF_PROFILES:
            if name not in self.profiles:
                self._references.append((origin, name, what, loc))
        elif name in self.targets:
            self._check_reference(origin, name, what, loc)
        else:
            self._references.append((origin, name, what, loc))

    def _check_references(self) -> None:
        for origin, name, what, loc in _now_and_then(self._references):
            self._check_reference(origin, name, what, loc)

    def _check_reference(self, origin: Origin, name: str, what: str, loc: Loc) -> None:
        """`what`: "profile" (an agents rule's agent), "accepted" (an acceptFrom entry), or the
        kind of Target a rule names (mcp, http)."""
        if name in self.rejected:
            return  # its own errors are reported; calling it unknown too would only mislead
        if what in _OF_PROFILES:
            if name not in self.profiles:
                message = (
                    f"agent {name!r} is not a MissionProfile"
                    if what == "profile"
                    else f"acceptFrom names unknown profile {name!r}"
                )
                self.errors.append(origin.error(message + did_you_mean(name, self.profiles), *loc))
            return
        found = self.targets.get(name)
        if found is None:
            kind = [target for target, (document, _) in self.targets.items() if document.spec.kind == what]
            self.errors.append(origin.error(f"{name!r} is not a Target{did_you_mean(name, kind)}", *loc))
        elif found[0].spec.kind != what:
            self.errors.append(origin.error(f"Target {name!r} is of kind {found[0].spec.kind}, not {what}", *loc))

    # profiles and their scopes

    def _profile(self, profile: MissionProfile, source: SourcedDocument) -> CompiledProfile:
        spec = profile.spec
        name = profile.metadata.name
        delegation = spec.delegation
        for index, accepted in enumerate(delegation.accept_from):
            if "*" not in accepted:
                self._refer(source.origin, accepted, "accepted", ("spec", "delegation", "acceptFrom", index))
        scope = self._scope(spec, source, name, ("spec",))
        return CompiledProfile(
            name=name,
            mission=spec.mission,
            dry_run=spec.mode == "dry-run",
            principals=tuple(spec.principals),
            scope=scope,
            delegates=self._delegates(spec, scope, source),
            max_depth=delegation.max_depth,
            accept_from=self._globset(delegation.accept_from) if delegation.accept_from else None,
            require_chain=delegation.require_chain,
            allow_reentry=delegation.allow_reentry,
        )

    def _delegates(self, spec: Scope, scope: CompiledScope, source: SourcedDocument) -> dict[str, CompiledScope]:
        """What each delegate may do on this profile's behalf (SPEC §5 "Deciding").

        Two rules for one agent that disagree on the grant would make that scope ambiguous,
        and a grant inside a grant is never consulted; both are load errors, not guesses.
        """
        positions: dict[str, list[int]] = {}
        for index, rule in enumerate(spec.agents):
            positions.setdefault(rule.agent, []).append(index)
            for inner, nested in enumerate(rule.grant.agents if rule.grant is not None else ()):
                if nested.grant is not None:
                    self.errors.append(
                        source.error(
                            f"this rule for {nested.agent!r} is inside a grant and cannot carry a grant of its own "
                            "(what a delegate passes on is set by its own profile)",
                            "spec",
                            "agents",
                            index,
                            "grant",
                            "agents",
                            inner,
                        )
                    )
        for agent, indexes in positions.items():
            if len(indexes) > 1 and any(spec.agents[index].grant is not None for index in indexes):
                self.errors.append(
                    source.error(
                        f"agents[{', '.join(map(str, indexes))}] all name {agent!r} and not all carry the same grant: "
                        "put the grant on a single rule for that agent",
                        "spec",
                        "agents",
                        indexes[1],
                        "agent",
                    )
                )
        return {agent: rules[0].grant if rules[0].grant is not None else scope for agent, rules in scope.agents.items()}

    def _scope(self, scope: Scope, source: SourcedDocument, label: str, loc: Loc) -> CompiledScope:
        mcp: dict[str, list[CompiledMcpRule]] = {}
        agents: dict[str, list[CompiledAgentRule]] = {}
        http: dict[str, list[CompiledPathRule]] = {}
        origin = source.origin
        for index, rule in enumerate(scope.mcp):
            where = (*loc, "mcp", index)
            self._refer(origin, rule.server, "mcp", (*where, "server"))
            compiled = self._mcp_rule(rule, f"{label}.mcp[{index}]", source, where)
            mcp.setdefault(self._intern(rule.server), []).append(compiled)
        for index, agent_rule in enumerate(scope.agents):
            where = (*loc, "agents", index)
            self._refer(origin, agent_rule.agent, "profile", (*where, "agent"))
            compiled_agent = self._agent_rule(agent_rule, f"{label}.agents[{index}]", source, where)
            agents.setdefault(self._intern(agent_rule.agent), []).append(compiled_agent)
        for index, http_rule in enumerate(scope.http):
            where = (*loc, "http", index)
            self._refer(origin, http_rule.target, "http", (*where, "target"))
            compiled_path = self._path_rule(http_rule, f"{label}.http[{index}]", source, where)
            http.setdefault(self._intern(http_rule.target), []).append(compiled_path)
        return CompiledScope(
            mcp={key: tuple(rules) for key, rules in mcp.items()},
            agents={key: tuple(rules) for key, rules in agents.items()},
            egress=self._egress_rules(scope.egress, source, label, loc),
            http={key: tuple(rules) for key, rules in http.items()},
            users=self._users(scope.users, source, loc) if isinstance(scope, Grant) else None,
        )

    def _egress_rules(
        self, rules: list[EgressRule], source: SourcedDocument, label: str, loc: Loc
    ) -> dict[str, tuple[CompiledPathRule, ...]]:
        """Egress rules keyed by the Target of their host: at once when every host's Target is
        already read (as when targets.yaml sorts before the profiles), else once all are."""
        egress: dict[str, tuple[CompiledPathRule, ...]] = {}
        if not rules:
            return egress
        pending = _Egress(source.origin, [], egress)
        for index, rule in enumerate(rules):
            where = (*loc, "egress", index)
            compiled = self._path_rule(rule, f"{label}.egress[{index}]", source, where)
            pending.rules.append((rule.host, compiled, where))
        if all(compiled.host in self.egress_hosts for _, compiled, _ in pending.rules):
            self._fill_egress(pending)
        else:
            self._egress.append(pending)
        return egress

    def _resolve_egress(self) -> None:
        for pending in _now_and_then(self._egress):
            self._fill_egress(pending)

    def _fill_egress(self, pending: _Egress) -> None:
        by_target: dict[str, list[CompiledPathRule]] = {}
        for host, rule, where in pending.rules:
            target = self.egress_hosts.get(rule.host or "")
            if target is None:
                hint = did_you_mean(host, self.egress_hosts)
                message = f"egress host {host!r} is not a host of any Target of kind egress{hint}"
                self.errors.append(pending.origin.error(message, *where, "host"))
                continue
            by_target.setdefault(target, []).append(rule)
        pending.into.update((target, tuple(rules)) for target, rules in by_target.items())

    def _mcp_rule(self, rule: McpRule, label: str, source: SourcedDocument, loc: Loc) -> CompiledMcpRule:
        compiled = CompiledMcpRule(
            label=label,
            tools=self._globset(rule.tools),
            resources=self._globset(rule.resources),
            prompts=self._globset(rule.prompts),
            methods=self._globset(rule.methods),
            when=self._condition(rule.when, source, loc),
            users=self._users(rule.users, source, loc),
        )
        self._rule_request_headers(rule.request_headers, label, ("mcp", rule.server), source, loc)
        return compiled

    def _agent_rule(self, rule: AgentRule, label: str, source: SourcedDocument, loc: Loc) -> CompiledAgentRule:
        methods = None
        if rule.methods is not None:
            normalized = []
            for index, method in enumerate(rule.methods):
                v1 = to_v1_method(method) if "*" not in method else method
                if v1 is None:
                    known = ", ".join(sorted(A2A_METHODS))
                    self.errors.append(
                        source.error(f"unknown A2A method {method!r}; known: {known}", *loc, "methods", index)
                    )
                else:
                    normalized.append(v1)
            methods = self._globset(normalized)
        grant = None
        if rule.grant is not None:
            grant = self._scope(rule.grant, source, f"{label}.grant", (*loc, "grant"))
        self._rule_request_headers(rule.request_headers, label, ("agent", rule.agent), source, loc)
        return CompiledAgentRule(
            label, methods, grant, self._condition(rule.when, source, loc), self._users(rule.users, source, loc)
        )

    def _path_rule(
        self, rule: EgressRule | HttpRule, label: str, source: SourcedDocument, loc: Loc
    ) -> CompiledPathRule:
        for index, path in enumerate(rule.paths):
            if path != "*" and not path.startswith("/"):
                self.errors.append(source.error(f"path {path!r} must start with '/' (or be '*')", *loc, "paths", index))
        host = self._intern(host_key(rule.host)) if isinstance(rule, EgressRule) else None
        reference = ("http", rule.target) if isinstance(rule, HttpRule) else ("egress", host or "")
        self._rule_request_headers(rule.request_headers, label, reference, source, loc)
        return CompiledPathRule(
            label=label,
            host=host,
            paths=self._globset(rule.paths),
            methods=self._globset(method.upper() for method in rule.methods),
            when=self._condition(rule.when, source, loc),
            users=self._users(rule.users, source, loc),
        )

    def _request_headers(self, spec: RequestHeadersSpec, origin: Origin, loc: Loc) -> RequestHeaders:
        """A `requestHeaders` entry: its values parsed (the secret files they read, read now); its
        names are checked once the Settings say which header carries chains."""
        compiled, problems = compile_headers(spec.set, spec.remove, self._secrets)
        for message, where in problems:
            self.errors.append(origin.error(message, *loc, *where))
        self._header_names.extend((name.lower(), origin, (*loc, "set", name)) for name in spec.set)
        self._header_names.extend(
            (name.lower(), origin, (*loc, "remove", index)) for index, name in enumerate(spec.remove)
        )
        return compiled

    def _rule_request_headers(
        self, spec: RequestHeadersSpec | None, label: str, target: tuple[str, str], source: SourcedDocument, loc: Loc
    ) -> None:
        """A rule's own requestHeaders, merged over its Target's once every Target is read. The
        request is shaped by the caller's own rule, so in a grant they would never apply."""
        if spec is None:
            return
        where = (*loc, "requestHeaders")
        if "grant" in loc:
            message = (
                "requestHeaders never apply in a grant: a request is shaped by the caller's own rule and its Target"
            )
            self.errors.append(source.error(message, *where))
            return
        self._rule_headers.append((label, *target, self._request_headers(spec, source.origin, where)))

    def _check_header_names(self, settings: CompiledSettings) -> None:
        own = {
            CALLER_HEADER: "the caller's verified SPIFFE ID",
            settings.chain_header: "the chain header, which carries delegation tokens",
            DECISION_HEADER: "the decision id",
            FILTER_HEADER: "it sends MCP list answers through Mandate's response path",
        }
        for name, origin, loc in self._header_names:
            problem = name_problem(name, own)
            if problem is not None:
                self.errors.append(origin.error(problem, *loc))

    def _merged_rule_headers(self, targets: dict[str, CompiledTarget]) -> dict[str, RequestHeaders]:
        """Each rule's own requestHeaders over its Target's (an agent, a profile, has none of its own)."""
        merged_headers: dict[str, RequestHeaders] = {}
        for label, kind, reference, own in self._rule_headers:
            name = self.egress_hosts.get(reference, "") if kind == "egress" else reference
            target = targets.get(name) if kind != "agent" else None
            merged_headers[label] = merged(target.request_headers if target is not None else None, own)
        return merged_headers

    def _users(self, users: Users | None, source: SourcedDocument, loc: Loc) -> CompiledUsers | None:
        """A rule's (or grant's) `users`; the first is remembered, so that a set with no users
        settings, whose requests never have a user, says which rule could never apply."""
        if users is None:
            return None
        if self._first_users is None:
            self._first_users = (source.origin, (*loc, "users"))
        return CompiledUsers(self._globset(users.groups), frozenset(users.subjects))

    def _globset(self, patterns: Iterable[str]) -> GlobSet:
        key = tuple(patterns)
        found = self._globsets.get(key)
        if found is None:
            found = self._globsets[key] = GlobSet(key)
        return found

    def _condition_headers(self) -> frozenset[str] | None:
        names: set[str] = set()
        for condition in self._conditions.values():
            if condition.headers is None:
                return None
            names |= condition.headers
        return frozenset(names)

    def _condition(self, text: str | None, source: SourcedDocument, loc: Loc) -> Condition | None:
        if text is None:
            return None
        found = self._conditions.get(text)
        if found is None:
            try:
                found = self._conditions[text] = Condition(text, self._results)
            except ConditionError as exc:
                self.errors.append(source.error(f"when: {exc}", *loc, "when"))
                return None
        return found

    # indexes

    def _caller_index(self, settings: CompiledSettings) -> PrincipalIndex[CompiledProfile]:
        index: PrincipalIndex[CompiledProfile] = PrincipalIndex()
        for name, profile in _now_and_then(self.profiles.items()):
            compiled = self.compiled[name]
            self._add_principals(index, compiled.principals, compiled, profile.origin, settings, "profile")
        return index

    def _target_indexes(
        self,
        callers: PrincipalIndex[CompiledProfile],
        settings: CompiledSettings,
    ) -> tuple[dict[str, CompiledTarget], PrincipalIndex[CompiledTarget], dict[str, CompiledTarget]]:
        """Agents (profiles) first, then explicit Targets, which win on a shared principal or host."""
        targets: dict[str, CompiledTarget] = {}
        by_principal: PrincipalIndex[CompiledTarget] = PrincipalIndex()
        by_host: dict[str, CompiledTarget] = {}
        self._agent_targets(targets, by_principal, by_host)
        self._explicit_targets(callers, settings, targets, by_principal, by_host)
        return targets, by_principal, by_host

    def _agent_targets(
        self,
        targets: dict[str, CompiledTarget],
        by_principal: PrincipalIndex[CompiledTarget],
        by_host: dict[str, CompiledTarget],
    ) -> None:
        """Every profile is also a target of kind agent, reached by its principals and hosts."""
        agent_hosts: dict[str, str] = {}
        for name, profile in _now_and_then(self.profiles.items()):
            agent = profile.agent
            targets[name] = agent
            for principal in self.compiled[name].principals:
                _put_principal(by_principal, principal, agent)
            for index, host in enumerate(profile.hosts):
                key = host_key(host)
                if key in agent_hosts:
                    message = f"host {host!r} is also claimed by profile {agent_hosts[key]!r}"
                    self.errors.append(profile.origin.error(message, "spec", "hosts", index))
                agent_hosts[key] = name
                by_host[key] = agent

    def _explicit_targets(
        self,
        callers: PrincipalIndex[CompiledProfile],
        settings: CompiledSettings,
        targets: dict[str, CompiledTarget],
        by_principal: PrincipalIndex[CompiledTarget],
        by_host: dict[str, CompiledTarget],
    ) -> None:
        """The Targets, over the agents: an MCP server with a profile of its own is an MCP target."""
        explicit_principals: PrincipalIndex[CompiledTarget] = PrincipalIndex()
        explicit_hosts: dict[str, str] = {}
        for name, (target, source) in self.targets.items():
            spec = target.spec
            workload = next((callers.get(p) for p in spec.principals if callers.get(p) is not None), None)
            compiled = CompiledTarget(
                name, spec.kind, spec.path_prefix, workload, request_headers=self._target_headers.get(name)
            )
            targets[name] = compiled
            self._add_principals(explicit_principals, spec.principals, compiled, source.origin, settings, "target")
            for principal in spec.principals:
                _put_principal(by_principal, principal, compiled)
            for index, host in enumerate(spec.hosts):
                key = host_key(host)
                if "*" in key:
                    message = f"host {host!r}: wildcards are not supported in hosts"
                    self.errors.append(source.error(message, "spec", "hosts", index))
                if key in explicit_hosts:
                    message = f"host {host!r} is also claimed by target {explicit_hosts[key]!r}"
                    self.errors.append(source.error(message, "spec", "hosts", index))
                explicit_hosts[key] = name
                by_host[key] = compiled
            if not spec.principals and not spec.hosts:
                self.errors.append(source.error("a Target needs at least one of principals or hosts", "spec"))

    def _a2a_router(self, profile: MissionProfile, source: SourcedDocument) -> A2aRouter:
        """The profile's `spec.a2a` as a router (one per distinct declaration).

        A declared JSON-RPC or card path that an HTTP+JSON route also places, for the same verb,
        is served by whichever route the app lists first: the SDK's `add_a2a_routes_to_fastapi`
        lists the card and JSON-RPC routes first, an app assembled by hand may not. Mandate
        cannot see the order, so the declaration is refused rather than read one way."""
        declared = profile.spec.a2a
        key = (declared.jsonrpc_path, declared.rest_prefix, declared.card_path)
        router = self._routers.get(key)
        if router is None:
            router = self._routers[key] = A2aRouter(*key)
        for field_name, verb, path in (
            ("jsonrpcPath", "POST", router.jsonrpc_path),
            ("cardPath", "GET", router.card_path),
        ):
            method = router.rest_method(verb, path)
            if method is not None:
                self.errors.append(
                    source.error(
                        f"a2a.{field_name} {path!r} is also where the HTTP+JSON routes (restPrefix "
                        f"{router.rest_prefix!r}) serve {verb} {method}: pick a path no route places",
                        "spec",
                        "a2a",
                        field_name,
                    )
                )
        return router

    def _add_principals(
        self,
        index: PrincipalIndex,  # type: ignore[type-arg]
        principals: Iterable[str],
        value: object,
        source: Origin,
        settings: CompiledSettings,
        what: str,
    ) -> None:
        for position, principal in enumerate(principals):
            loc = ("spec", "principals", position)
            problem = _principal_problem(principal, settings)
            if problem:
                self.errors.append(source.error(problem, *loc))
                continue
            table, key = _principal_slot(index, principal)
            if key in table:
                other = table[key]
                self.errors.append(
                    source.error(f"SPIFFE ID {principal!r} is also claimed by {what} {other.name!r}", *loc)
                )
                continue
            table[key] = value


def _principal_slot(index: PrincipalIndex, principal: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    if principal.endswith("/sa/*"):
        return index.namespaces, principal[:-1]
    return index.exact, principal


def _put_principal(index: PrincipalIndex, principal: str, value: object) -> None:  # type: ignore[type-arg]
    if _principal_problem(principal, None) is None:
        table, key = _principal_slot(index, principal)
        table[key] = value


def _principal_problem(principal: str, settings: CompiledSettings | None) -> str | None:
    concrete = principal[:-1] + "x" if principal.endswith("/sa/*") else principal
    if "*" in concrete:
        return f"principal {principal!r}: '*' is only allowed as the whole service account (.../ns/<ns>/sa/*)"
    try:
        parsed = parse_spiffe_id(concrete)
    except ValueError as exc:
        return f"principal {principal!r} is not a SPIFFE ID: {exc}"
    if principal.endswith("/sa/*") and not parsed.namespace:
        return f"principal {principal!r}: a wildcard needs the form spiffe://<td>/ns/<ns>/sa/*"
    if settings is not None and parsed.trust_domain not in settings.trust_domains:
        return f"principal {principal!r} is outside the configured trustDomains"
    return None


def _issuer_keys(issuer: IssuerSpec) -> FileKeys | RemoteKeys:
    """An issuer's key source: its file, read now, or its URL, fetched when first needed (the
    trust it names is loaded now, so a bad caFile is a load error, not a failed fetch)."""
    if issuer.jwks_file is not None:
        return FileKeys(issuer.jwks_file)
    assert issuer.jwks_uri is not None
    if issuer.ca_file is not None:
        ssl.create_default_context(cafile=issuer.ca_file)
    return remote_keys(issuer.jwks_uri, issuer.ca_file)
