"""Who a list answer goes to, and under which chain: the same caller, profile, server and
scopes a Check would decide a call of its entries with.

The caller is read as a Check reads it (`identity.resolve_caller`) from what Envoy reports of
the connection, and must be governed by the profile Mandate's ext_authz answer named in its
metadata; the chain is the one that answer recorded, read again from the chain store, so a
chain revoked in between lists nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.check.classify import find_target
from authz.check.decision import Refusal
from authz.check.delegation import Chain, ChainStep, chain_for
from authz.check.identity import IdentityError, resolve_caller
from authz.check.request import AuthzInput
from authz.listing.entries import EntryRules
from authz.listing.exchange import LOCAL_ATTRIBUTE, PEER_ATTRIBUTE, Seen
from authz.policy.compiled import PolicySet
from authz.reasons import CHAIN_NOT_HELD, LIST_CALLER_CHANGED, LIST_CONTEXT_MISSING, UNKNOWN_CALLER, UNKNOWN_TARGET


@dataclass(frozen=True)
class ListCaller:
    """What an audit line names, and the rules the entries are decided by."""

    decision_id: str  # of the ext_authz answer that let the list request through
    principal: str
    profile: str
    server: str
    chain: Chain
    rules: EntryRules


def identify(policy: PolicySet, chains: ChainStep, seen: Seen) -> ListCaller:
    """The caller of the request behind a list answer; a Refusal when it cannot be told."""
    decision_id = seen.authz.get("decision_id", "")
    if not decision_id:
        raise Refusal(
            LIST_CONTEXT_MISSING,
            "Envoy sent the answer without Mandate's ext_authz metadata: configure the filters as "
            "`mandate export envoy` prints them (metadata_options.forwarding_namespaces)",
        )
    request = AuthzInput(
        host=seen.headers.get(":authority", ""),
        headers=seen.headers,
        source_principal=seen.attributes.get(PEER_ATTRIBUTE, ""),
        istio_authn_principal=seen.istio_principal,
        destination_principal=seen.attributes.get(LOCAL_ATTRIBUTE, ""),
    )
    settings = policy.settings
    try:
        caller = resolve_caller(request, settings.trust_domains, settings.trust_forwarded_client_cert)
    except IdentityError as exc:
        raise Refusal(exc.reason, str(exc)) from None
    profile = policy.callers.get(caller.principal)
    if profile is None:
        raise Refusal(UNKNOWN_CALLER, f"no mission profile governs {caller.principal}")
    if profile.name != seen.authz.get("profile"):
        raise Refusal(
            LIST_CALLER_CHANGED,
            f"the answer is for {profile.name!r}, but Mandate let the request through for another caller",
        )
    target = find_target(policy, request)
    if target.kind != "mcp":
        raise Refusal(UNKNOWN_TARGET, f"{target.name!r} is not an MCP server: it has no lists to filter")
    record = None
    chain_id = seen.authz.get("chain_id", "")
    if chain_id:
        record = chains.live_record(chain_id)
        holder = record.hops[-1]
        if holder.profile != profile.name or (holder.principal and holder.principal != caller.principal):
            raise Refusal(CHAIN_NOT_HELD, f"delegation chain {chain_id} was handed to another agent")
    chain = chain_for(policy, profile, record)
    return ListCaller(
        decision_id, caller.principal, profile.name, target.name, chain, EntryRules(policy, chain, target.name)
    )
