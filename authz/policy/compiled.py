"""The compiled policy set: the lookup tables the request path reads, built by `compiler.py`
once per load and never changed after (a reload swaps a whole new set)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from authz.check.protocols.a2a import A2aRouter
from authz.policy.conditions import Condition, Results
from authz.policy.globs import GlobSet
from authz.policy.headers import RequestHeaders
from authz.policy.secrets import Secrets
from authz.users.user import ActingUser
from authz.users.verify import UserSettings


@dataclass(frozen=True, slots=True)
class CompiledUsers:
    """A `users` entry: the user matches when their `sub` is one of `subjects` or one of their
    groups is in `groups`."""

    groups: GlobSet
    subjects: frozenset[str]

    def admits(self, acting: ActingUser) -> bool:
        if acting.user.sub in self.subjects:
            return True
        groups = self.groups
        return any(group in groups for group in acting.groups)


@dataclass(frozen=True, slots=True)
class CompiledMcpRule:
    label: str
    tools: GlobSet
    resources: GlobSet
    prompts: GlobSet
    methods: GlobSet
    when: Condition | None
    users: CompiledUsers | None = None


@dataclass(frozen=True, slots=True)
class CompiledAgentRule:
    label: str
    methods: GlobSet | None  # None: every A2A method
    grant: CompiledScope | None
    when: Condition | None
    users: CompiledUsers | None = None


@dataclass(frozen=True, slots=True)
class CompiledPathRule:
    """An `egress` or `http` rule: host (egress only), paths and methods."""

    label: str
    host: str | None
    paths: GlobSet
    methods: GlobSet
    when: Condition | None
    users: CompiledUsers | None = None


@dataclass(frozen=True, slots=True)
class CompiledScope:
    """Rules keyed by the target they name, so a decision looks up one list."""

    mcp: dict[str, tuple[CompiledMcpRule, ...]]
    agents: dict[str, tuple[CompiledAgentRule, ...]]
    egress: dict[str, tuple[CompiledPathRule, ...]]
    http: dict[str, tuple[CompiledPathRule, ...]]
    users: CompiledUsers | None = None  # a grant's: it holds only while the chain acts for one of these users


@dataclass(frozen=True, slots=True)
class CompiledProfile:
    name: str
    mission: str
    dry_run: bool
    principals: tuple[str, ...]
    scope: CompiledScope
    delegates: dict[str, CompiledScope]  # agent -> the scope this profile gives it: a grant, or its own
    max_depth: int | None
    accept_from: GlobSet | None  # None: any caller the chain rules allow
    require_chain: bool
    allow_reentry: bool


@dataclass(frozen=True, slots=True)
class CompiledTarget:
    name: str
    kind: str  # mcp | egress | http | agent
    path_prefix: str | None
    workload: CompiledProfile | None  # the profile governing the target's own workload
    a2a: A2aRouter | None = None  # agents only: where their SDK app serves each binding
    request_headers: RequestHeaders | None = None  # set and removed on every request let through to it


@dataclass(frozen=True, slots=True)
class CompiledSettings:
    trust_domains: frozenset[str]
    trust_forwarded_client_cert: bool
    max_depth: int
    chain_header: str
    chain_ttl_seconds: int
    users: UserSettings | None = None  # None: requests act for no user (SPEC §10)


T = TypeVar("T")


class PrincipalIndex(Generic[T]):
    """Exact SPIFFE IDs, then Istio namespace wildcards `spiffe://td/ns/<ns>/sa/*`."""

    __slots__ = ("exact", "namespaces")

    def __init__(self) -> None:
        self.exact: dict[str, T] = {}
        self.namespaces: dict[str, T] = {}  # key: "spiffe://td/ns/<ns>/sa/"

    def get(self, principal: str) -> T | None:
        found = self.exact.get(principal)
        if found is None and self.namespaces:
            found = self.namespaces.get(principal[: principal.rfind("/") + 1])
        return found


@dataclass(frozen=True, slots=True)
class PolicySet:
    version: str
    settings: CompiledSettings
    profiles: dict[str, CompiledProfile]
    targets: dict[str, CompiledTarget]
    callers: PrincipalIndex[CompiledProfile]
    targets_by_principal: PrincipalIndex[CompiledTarget]
    targets_by_host: dict[str, CompiledTarget]
    egress_hosts: dict[str, CompiledTarget] = field(default_factory=dict)
    # Headers some `when` reads (the decision cache keys on them); None: any header may matter.
    condition_headers: frozenset[str] | None = frozenset()
    # The answers this set's `when`s gave, by the values they read (see conditions.Results).
    condition_results: Results = field(default_factory=Results)
    # Rules with `requestHeaders` of their own, by label: theirs merged over their Target's.
    rule_headers: dict[str, RequestHeaders] = field(default_factory=dict)
    # The secret files those headers read, re-read when they change (authz/policy/secrets.py).
    secrets: Secrets = field(default_factory=Secrets)

    def request_headers(self, target: CompiledTarget, rule: str) -> RequestHeaders | None:
        """What letting a request through to `target` does to its headers: those of the rule that
        allowed it (merged over the Target's), else the Target's own (SPEC §12)."""
        found = self.rule_headers.get(rule) if rule else None
        return found if found is not None else target.request_headers
