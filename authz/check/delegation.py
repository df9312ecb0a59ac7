"""Step 4: the delegation chain a request runs under, and the chain it hands on (SPEC §5).

A chain is one more input to the decision: the list of scopes that must *all* allow the
action. Without a token the caller acts on its own behalf and the list is its own scope;
with one, each earlier hop adds the scope it gave the next (its `grant`, or its own rules).

Token problems (forged, unknown, expired, not held, revoked, store down) are `ChainRefusal`s:
they are about the integrity of the request, so they are enforced even for dry-run profiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from authz.bounded import Bounded
from authz.chains.store import ChainRecord, ChainStore, Hop, StoreUnavailable
from authz.chains.tokens import RECORD_SEAL, ChainKeys, ForgedToken
from authz.check.decision import Refusal
from authz.check.identity import SpiffeId
from authz.check.request import AuthzInput
from authz.policy.compiled import CompiledProfile, CompiledScope, CompiledTarget, PolicySet
from authz.reasons import (
    CALLER_NOT_ACCEPTED,
    CHAIN_FORGED,
    CHAIN_NOT_HELD,
    CHAIN_PROFILE_UNKNOWN,
    CHAIN_REENTRY,
    CHAIN_REQUIRED,
    CHAIN_REVOKED,
    CHAIN_STORE_UNAVAILABLE,
    CHAIN_TOO_DEEP,
    CHAIN_UNKNOWN,
    DELEGATION_WITHDRAWN,
    REGISTRY,
)
from authz.users.user import User

MINT_REUSE_SECONDS = 30.0  # an edge minted this recently is handed out again, not rewritten
MAX_MINTED = 100_000


@dataclass(frozen=True, slots=True)
class HopScope:
    """The scope one hop must stay within: `given_by` granted it (or owns it, for the caller)."""

    given_by: str
    scope: CompiledScope

    def __init__(self, given_by: str, scope: CompiledScope) -> None:
        object.__setattr__(self, "given_by", given_by)
        object.__setattr__(self, "scope", scope)


@dataclass(frozen=True, slots=True)
class Chain:
    id: str
    hops: tuple[str, ...]  # profile names, root first, the current caller last
    scopes: tuple[HopScope, ...]  # the caller's own scope first, then each earlier hop's grant
    record: ChainRecord | None = None  # None: the caller acts on its own behalf

    def __init__(
        self, id: str, hops: tuple[str, ...], scopes: tuple[HopScope, ...], record: ChainRecord | None = None
    ) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "hops", hops)
        object.__setattr__(self, "scopes", scopes)
        object.__setattr__(self, "record", record)

    @property
    def depth(self) -> int:
        return len(self.hops)


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    record: ChainRecord
    reused: bool  # handed out again from this replica's recent mints: no store write

    def __init__(self, token: str, record: ChainRecord, reused: bool) -> None:
        object.__setattr__(self, "token", token)
        object.__setattr__(self, "record", record)
        object.__setattr__(self, "reused", reused)


class ChainRefusal(Refusal):
    """A token that cannot be trusted; `outcome` labels the chain metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.outcome = REGISTRY[reason].chain_outcome


def chain_for(policy: PolicySet, profile: CompiledProfile, record: ChainRecord | None) -> Chain:
    """The scopes the caller acts under: its own without a record, else every hop's along it."""
    if record is None:
        return Chain("", (profile.name,), (HopScope(profile.name, profile.scope),))
    hops = record.profiles
    check_shape(policy, hops)
    return Chain(record.id, hops, scopes_along(policy, hops, record.id), record)


def callee_hop(policy: PolicySet, target: CompiledTarget, request: AuthzInput) -> Hop | None:
    """The hop a call to `target` reaches, if its workload has a MissionProfile.

    Its exact SPIFFE ID is known only when Envoy reports the destination principal and that
    principal is governed by the same profile (sidecar inbound); a waypoint knows the host.
    """
    workload = target.workload
    if workload is None:
        return None
    principal = request.destination_principal
    if principal and policy.callers.get(principal) is workload:
        return Hop(workload.name, principal)
    return Hop(workload.name, "")


class ChainStep:
    """Verifies incoming chain tokens and mints the ones handed to the next hop."""

    def __init__(self, store: ChainStore, keys: ChainKeys, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.keys = keys
        self.clock = clock
        self._minted: Bounded[tuple[str, str, Hop, str], tuple[float, int, Minted]] = Bounded(MAX_MINTED, MAX_MINTED)
        self._sealed: Bounded[str, ChainRecord] = Bounded(MAX_MINTED, MAX_MINTED)  # records whose seal was checked

    # --- the chain a request runs under ----------------------------------------------

    def presented(
        self, policy: PolicySet, request: AuthzInput, caller: SpiffeId, profile: CompiledProfile
    ) -> ChainRecord | None:
        """The verified record behind the request's chain token, held by the caller; None
        without a token. The pipeline notes the record before `chain_for` judges it, so any
        answer that follows from it (a refusal included) is kept only while the record holds."""
        header = policy.settings.chain_header
        token = request.headers.get(header)
        if token is None:
            if profile.require_chain:
                raise Refusal(
                    CHAIN_REQUIRED,
                    f"{profile.name!r} only acts when delegated (its profile sets requireChain) and the request "
                    f"carries no {header}",
                )
            return None
        record = self.verify(token, header)
        holder = record.hops[-1]
        if holder.profile != profile.name or (holder.principal and holder.principal != caller.principal):
            raise ChainRefusal(
                CHAIN_NOT_HELD,
                f"the {header} token was handed to {holder.profile!r}, not to the caller {profile.name!r}: "
                "an agent may only present the token it received",
            )
        return record

    def verify(self, token: str, header: str) -> ChainRecord:
        """The live, unrevoked record behind a genuine token; ChainRefusal otherwise."""
        try:
            chain_id = self.keys.verify(token)
        except ForgedToken as exc:
            raise ChainRefusal(CHAIN_FORGED, f"{header} is not valid: {exc}") from None
        return self.live_record(chain_id)

    def live_record(self, chain_id: str) -> ChainRecord:
        """The live, unrevoked, sealed record of a chain id Mandate handed out (the response path
        reads the id from its own ext_authz answer); ChainRefusal otherwise."""
        record = self._read(chain_id)
        if record is None:
            raise ChainRefusal(
                CHAIN_UNKNOWN,
                f"delegation chain {chain_id} is unknown or expired: the delegating call must be made again",
            )
        if not self._sealed_by_us(record):
            raise ChainRefusal(
                CHAIN_FORGED,
                f"the stored record of delegation chain {chain_id} is not sealed by a chain key: the store was "
                f"tampered with",
            )
        if self.store.is_revoked(record):
            raise ChainRefusal(CHAIN_REVOKED, f"delegation chain {chain_id} (or one it descends from) was revoked")
        return record

    def _read(self, chain_id: str) -> ChainRecord | None:
        if not self.store.available():
            raise _store_down("revocations cannot be heard")
        try:
            return self.store.get(chain_id)
        except StoreUnavailable as exc:
            raise _store_down(str(exc)) from None

    def _sealed_by_us(self, record: ChainRecord) -> bool:
        """Check the seal once per record object: the stores hand back the same immutable
        object while it is cached, and a record read again is a new object, checked again."""
        if self._sealed.get(record.id) is record:
            return True
        if not self.keys.matches(RECORD_SEAL, record.content(), record.seal):
            return False
        self._remember_sealed(record)
        return True

    def _remember_sealed(self, record: ChainRecord) -> None:
        self._sealed.put(record.id, record, 1)

    # --- the chain handed to the callee ----------------------------------------------

    def mint(self, policy: PolicySet, chain: Chain, caller: SpiffeId, callee: Hop, user: User | None = None) -> Minted:
        """A child token for `[... caller, callee]`, written to the store before it is returned. A new
        chain records the call's `user` as its root's; a child, its parent's (SPEC §10). A token
        is handed out again only for the same user, claims and all."""
        parent = chain.record
        key = (chain.id, caller.principal, callee, user.text if user is not None and parent is None else "")
        now = self.clock()
        if not self.store.available():  # before reuse too: a delegating call fails closed while the store is down
            raise _store_down("revocations cannot be heard")
        generation = self.store.generation
        recent = self._minted.get(key)
        if recent is not None:
            minted_at, minted_generation, minted = recent
            if (
                now - minted_at < MINT_REUSE_SECONDS
                and minted_generation == generation  # the store may have lost it since
                and minted.record.expires > now
                and not self.store.is_revoked(minted.record)
            ):
                return Minted(minted.token, minted.record, reused=True)
        expires = now + policy.settings.chain_ttl_seconds
        if parent is None:
            hops: tuple[Hop, ...] = (Hop(chain.hops[0], caller.principal), callee)
            lineage: tuple[str, ...] = ()
            root = user.for_chain() if user is not None else None
        else:
            hops = (*parent.hops, callee)
            lineage = (*parent.lineage, parent.id)
            expires = min(expires, parent.expires)  # a delegation never outlives the one it came from
            root = parent.user
        minted = self.issue(hops, lineage, now, expires, root)
        self._minted.put(key, (now, generation, minted), 1)
        return minted

    def issue(
        self, hops: tuple[Hop, ...], lineage: tuple[str, ...], created: float, expires: float, user: User | None = None
    ) -> Minted:
        """Seal and store a new record; its token. (`mint` decides what to issue; explain
        issues the chain a described request names.)"""
        record_id = self.keys.new_id()
        content = ChainRecord(record_id, hops, lineage, created, expires, user=user).content()
        seal = self.keys.mac(RECORD_SEAL, content)
        record = ChainRecord(record_id, hops, lineage, created, expires, seal, user)
        try:
            self.store.put(record)
        except StoreUnavailable as exc:
            raise _store_down(str(exc)) from None
        self._remember_sealed(record)
        return Minted(self.keys.sign(record.id), record, reused=False)


def check_shape(policy: PolicySet, hops: tuple[str, ...]) -> None:
    """Deny a chain longer than the smallest maxDepth of its hops, or with a forbidden re-entry."""
    profiles = policy.profiles
    limit, limited_by = policy.settings.max_depth, "the global maxDepth"
    seen: set[str] = set()
    for name in hops:
        profile = profiles.get(name)
        if profile is None:
            raise Refusal(
                CHAIN_PROFILE_UNKNOWN, f"delegation chain names {name!r}, which no longer has a mission profile"
            )
        if profile.max_depth is not None and profile.max_depth < limit:
            limit, limited_by = profile.max_depth, f"the maxDepth of {name!r}"
        if name in seen and not profile.allow_reentry:
            raise Refusal(
                CHAIN_REENTRY,
                f"{name!r} would appear twice in delegation chain {' -> '.join(hops)}; its profile does not set "
                f"allowReentry",
            )
        seen.add(name)
    if len(hops) > limit:
        raise Refusal(
            CHAIN_TOO_DEEP,
            f"delegation chain {' -> '.join(hops)} would be {len(hops)} hops long; {limited_by} is {limit}",
        )


def scopes_along(policy: PolicySet, hops: tuple[str, ...], chain_id: str) -> tuple[HopScope, ...]:
    """The caller's own scope, then, newest first, the scope each earlier hop gave the next."""
    profiles = policy.profiles
    scopes = [HopScope(hops[-1], profiles[hops[-1]].scope)]
    for position in range(len(hops) - 2, -1, -1):
        giver, delegate = hops[position], hops[position + 1]
        given = profiles[giver].delegates.get(delegate)
        if given is None:
            raise Refusal(
                DELEGATION_WITHDRAWN,
                f"{giver!r} may no longer delegate to {delegate!r}, so chain {chain_id} no longer carries authority",
                hop=giver,
            )
        scopes.append(HopScope(giver, given))
    return tuple(scopes)


def check_accepts(callee: CompiledProfile, caller: CompiledProfile) -> None:
    """`acceptFrom`: only the profiles it names may call `callee` (empty: any allowed caller)."""
    if callee.accept_from is not None and caller.name not in callee.accept_from:
        raise Refusal(
            CALLER_NOT_ACCEPTED,
            f"{callee.name!r} accepts calls only from the profiles its delegation.acceptFrom names, and "
            f"{caller.name!r} is not one",
            hop=callee.name,
        )


def _store_down(detail: str) -> ChainRefusal:
    return ChainRefusal(
        CHAIN_STORE_UNAVAILABLE,
        f"the delegation chain store is unavailable ({detail[:200]}); chained and delegating calls are refused until "
        f"it is back",
    )
