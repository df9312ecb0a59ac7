"""The outcome of one check, shared by the decision, the response and the audit line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from authz.reasons import ALLOWED, OK, status_of

if TYPE_CHECKING:
    from authz.chains.store import ChainRecord
    from authz.policy.headers import RequestHeaders
    from authz.users.user import User


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str  # a constant of reasons.py
    message: str = ""  # for the agent's developer: what was refused and why
    status: int = OK
    rule: str = ""  # the rule that allowed it, e.g. "support-agent.mcp[0]"
    hop: str = ""  # for a chain: the profile whose scope refused

    def __init__(
        self, allowed: bool, reason: str, message: str = "", status: int = OK, rule: str = "", hop: str = ""
    ) -> None:
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "hop", hop)


def allow(rule: str) -> Verdict:
    return Verdict(True, ALLOWED, rule=rule)


def refused(reason: str, message: str, hop: str = "") -> Verdict:
    """A deny for `reason` (a constant of `reasons.py`), with the status registered for it."""
    return Verdict(False, reason, message, status_of(reason), hop=hop)


class Refusal(Exception):
    """Raised by a step that must stop the request; becomes a deny Verdict."""

    def __init__(self, reason: str, message: str, hop: str = "") -> None:
        super().__init__(message)
        self.verdict = refused(reason, message, hop)


@dataclass(slots=True)
class Decision:
    """Everything the response and the audit line need to know about one check."""

    id: str
    verdict: Verdict
    caller: str = ""
    profile: str = ""
    target: str = ""
    protocol: str = ""
    dry_run: bool = False  # the caller's profile is in dry-run: a deny is logged, not enforced
    chain_id: str = ""
    hops: tuple[str, ...] = ()
    minted_token: str = ""  # a child chain token to set on the forwarded request
    minted_chain_id: str = ""
    chain_events: list[str] = field(default_factory=list)  # verified, minted, reused, forged, ...
    strip_chain_header: bool = False  # the request leaves the mesh (egress)
    filter_lists: bool = False  # it asks for an MCP list: Envoy sends the answer through Mandate's ext_proc
    jsonrpc_ids: tuple[object, ...] | None = None
    details: dict[str, str] = field(default_factory=dict)  # OTel-named attributes of the action
    records: tuple[ChainRecord, ...] = ()  # the chain records it relied on: the caller's, the one handed on
    user: User | None = None  # the user it acted for (SPEC §10): of the request's token, or of its chain
    presented_user: User | None = None  # the user of the request's own token or verified claims, once verified
    request_headers: RequestHeaders | None = None  # what letting it through does to its headers (SPEC §12)

    def __init__(
        self,
        id: str,
        verdict: Verdict,
        caller: str = "",
        profile: str = "",
        target: str = "",
        protocol: str = "",
        dry_run: bool = False,
        chain_id: str = "",
        hops: tuple[str, ...] = (),
        minted_token: str = "",
        minted_chain_id: str = "",
        chain_events: list[str] | None = None,
        strip_chain_header: bool = False,
        filter_lists: bool = False,
        jsonrpc_ids: tuple[object, ...] | None = None,
        details: dict[str, str] | None = None,
        records: tuple[ChainRecord, ...] = (),
        user: User | None = None,
        request_headers: RequestHeaders | None = None,
        presented_user: User | None = None,
    ) -> None:
        self.id, self.verdict, self.caller, self.profile, self.target, self.protocol = (
            id,
            verdict,
            caller,
            profile,
            target,
            protocol,
        )
        self.dry_run, self.chain_id, self.hops, self.minted_token = dry_run, chain_id, hops, minted_token
        self.minted_chain_id, self.chain_events = minted_chain_id, [] if chain_events is None else chain_events
        self.strip_chain_header, self.filter_lists, self.jsonrpc_ids = strip_chain_header, filter_lists, jsonrpc_ids
        self.details, self.records, self.user = {} if details is None else details, records, user
        self.request_headers, self.presented_user = request_headers, presented_user

    def repeated(self, decision_id: str) -> Decision:
        """The same decision for an identical request (the decision cache): a token handed
        out again is `reused`, not `minted`. Shares `details`, which nobody changes once decided."""
        return Decision(
            decision_id,
            self.verdict,
            self.caller,
            self.profile,
            self.target,
            self.protocol,
            self.dry_run,
            self.chain_id,
            self.hops,
            self.minted_token,
            self.minted_chain_id,
            ["reused" if event == "minted" else event for event in self.chain_events],
            self.strip_chain_header,
            self.filter_lists,
            self.jsonrpc_ids,
            self.details,
            self.records,
            self.user,
            self.request_headers,
            self.presented_user,
        )

    @property
    def enforced_allow(self) -> bool:
        return self.verdict.allowed or self.dry_run

    @property
    def result(self) -> str:
        if self.verdict.allowed:
            return "allow"
        return "would_deny" if self.dry_run else "deny"
