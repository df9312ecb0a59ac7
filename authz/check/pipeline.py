"""The path one request travels: read → identify → classify → chain → decide → answer → record.

Each step is a plain function in its own module; this one only composes them, turns a
step's Refusal into a deny, and makes sure no exception ever escapes to gRPC.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import perf_counter_ns

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf.message import DecodeError

from authz.chains.memory import MemoryChainStore
from authz.chains.store import Hop
from authz.chains.tokens import ChainKeys
from authz.check.classify import Classified, MalformedRequest, classify
from authz.check.decide import decide
from authz.check.decision import Decision, Refusal, Verdict, refused
from authz.check.decision_cache import DEFAULT_ENTRIES, DecisionCache, Lookup
from authz.check.decision_ids import new_decision_id
from authz.check.delegation import Chain, ChainRefusal, ChainStep, callee_hop, chain_for, check_accepts, check_shape
from authz.check.identity import IdentityError, SpiffeId, resolve_caller
from authz.check.protocols.a2a import A2aAction
from authz.check.protocols.jsonrpc import peek_ids
from authz.check.protocols.mcp import LIST_METHODS, McpAction
from authz.check.record import Answered, Recorder
from authz.check.request import RESUME_HEADER, AuthzInput, from_check_request, from_wire
from authz.check.response import build_response
from authz.check.templates import ResponseTemplates
from authz.check.users import acting_for, acting_user, presented_user
from authz.check.wire import WireRequest, read_wire
from authz.policy.compiled import CompiledProfile, PolicySet
from authz.reasons import INTERNAL_ERROR, INVALID_CHECK_REQUEST, UNKNOWN_CALLER

log = logging.getLogger("mandate")
_UNDECIDED = refused(INTERNAL_ERROR, "")  # until a step decides; immutable, so shared


@dataclass(frozen=True, slots=True)
class HopTrace:
    """For `mandate explain`: what one hop's scope says about the request on its own."""

    given_by: str
    delegate: str | None  # the hop it gave this scope to; None for the caller's own scope
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A policy set and the caches that belong to it, swapped together by a reload."""

    policy: PolicySet
    cache: DecisionCache
    responses: ResponseTemplates


class Authorizer:
    """Holds the current policy set; `policy` is swapped whole by a reload, never mutated.

    Without a `chains` step it keeps chains in-process under a random key (one replica).
    `decision_cache` is how many answers to keep for repeated requests (0: none); `recorder`
    takes every answer for the audit trail and the metrics.
    """

    def __init__(
        self,
        policy: PolicySet,
        recorder: Recorder | None = None,
        chains: ChainStep | None = None,
        decision_cache: int = DEFAULT_ENTRIES,
    ) -> None:
        self._record = recorder.record if recorder is not None else _unrecorded
        self.chains = chains or ChainStep(MemoryChainStore(), ChainKeys.ephemeral())
        self.decision_cache = decision_cache
        self.policy = policy

    @property
    def policy(self) -> PolicySet:
        return self._snapshot.policy

    @policy.setter
    def policy(self, policy: PolicySet) -> None:
        cache = DecisionCache(policy, self.chains.store, self.chains.clock, self.decision_cache)
        responses = ResponseTemplates(policy.settings.chain_header)
        self._snapshot = _Snapshot(policy, cache, responses)  # one assignment: a request sees all or none

    def check_bytes(self, payload: bytes) -> bytes:
        """The gRPC entry point: serialized CheckRequest in, serialized CheckResponse out, never raises.

        Protobuf parses every request first, so a message it refuses is refused whether or not
        an answer is kept for the fields the walk reads. A request decided before is then
        answered from the decision cache under a fresh decision id."""
        started = perf_counter_ns()
        snapshot = self._snapshot  # one policy set and its cache for the whole request
        try:
            check = CheckRequest.FromString(payload)
        except (DecodeError, UnicodeError, ValueError) as exc:
            decision = _unreadable(exc)  # never kept
            response = self._answer(decision, snapshot.responses)
            self._record((decision, decision.id, started, perf_counter_ns()))
            return response
        try:
            wire = read_wire(payload)
            found = snapshot.cache.look_up(wire)
        except Exception:
            log.exception("reading the request's bytes or the decision cache failed; deciding afresh")
            wire, found = None, None
        if found is not None and found.answer is not None:
            decision_id = new_decision_id()
            self._record((found.answer.decision, decision_id, started, perf_counter_ns()))
            return decision_id.encode().join(found.answer.pieces)
        return self._check_afresh(check, wire, snapshot, found, started)

    def _check_afresh(
        self, check: CheckRequest, wire: WireRequest | None, snapshot: _Snapshot, found: Lookup | None, started: int
    ) -> bytes:
        """Every step for a request the decision cache had no answer for; the answer is kept under `found`'s key."""
        generation = self.chains.store.generation  # before deciding: a reconnect meanwhile voids the answer
        try:
            request = from_check_request(check) if wire is None else from_wire(wire, snapshot.cache.visible)
        except (UnicodeError, ValueError) as exc:
            decision = _unreadable(exc)
        else:
            decision = self.decide(request, snapshot.policy)
        response = self._answer(decision, snapshot.responses)
        if found is not None:
            snapshot.cache.put(found, decision, response, generation)
        self._record((decision, decision.id, started, perf_counter_ns()))
        return response

    def decide(
        self, request: AuthzInput, policy: PolicySet | None = None, trace: list[HopTrace] | None = None
    ) -> Decision:
        """Run every step for one request against one policy snapshot; `trace` collects each
        hop's own verdict for `explain`."""
        policy = policy or self.policy
        decision = Decision(new_decision_id(), _UNDECIDED)
        try:
            decision.verdict = self._steps(request, policy, decision, trace)
        except Refusal as refusal:
            decision.verdict = refusal.verdict
            if isinstance(refusal, ChainRefusal):
                decision.chain_events.append(refusal.outcome)
                decision.dry_run = False  # an untrustworthy token is refused whatever the profile's mode
            if isinstance(refusal, MalformedRequest):
                decision.jsonrpc_ids = refusal.jsonrpc_ids
            elif decision.jsonrpc_ids is None:
                decision.jsonrpc_ids = peek_ids(request.method, request.body)
        except Exception:
            log.exception("internal error deciding request %s", decision.id)
            decision.verdict = refused(INTERNAL_ERROR, "Mandate failed to decide; see its log")
        return decision

    def _steps(
        self, request: AuthzInput, policy: PolicySet, decision: Decision, trace: list[HopTrace] | None
    ) -> Verdict:
        settings = policy.settings
        try:
            caller = resolve_caller(request, settings.trust_domains, settings.trust_forwarded_client_cert)
        except IdentityError as exc:
            raise Refusal(exc.reason, str(exc)) from None
        decision.caller = caller.principal
        presented = presented_user(settings.users, request, self.chains.clock())  # a bad user token: 401 first
        decision.presented_user = presented  # whatever follows holds only while the token does
        profile = policy.callers.get(caller.principal)
        if profile is None:
            raise Refusal(UNKNOWN_CALLER, f"no mission profile governs {caller.principal}")
        decision.profile = profile.name
        decision.dry_run = profile.dry_run
        classified = classify(policy, request)
        _describe(decision, classified, RESUME_HEADER in request.headers)
        record = self.chains.presented(policy, request, caller, profile)
        if record is not None:  # noted first: whatever follows from it holds only while it does
            decision.chain_events.append("verified")
            decision.records = (record,)
            decision.chain_id, decision.hops = record.id, record.profiles
        chain = chain_for(policy, profile, record)
        decision.chain_id, decision.hops = chain.id, chain.hops
        decision.user = acting_user(presented, record)
        user = acting_for(decision.user, settings.users)
        if trace is not None:
            for position, hop in enumerate(chain.scopes):
                alone = Chain(chain.id, chain.hops, (hop,), chain.record)
                delegate = chain.hops[len(chain.hops) - position] if position else None
                trace.append(HopTrace(hop.given_by, delegate, decide(caller, request, classified, alone, user)))
        verdict = decide(caller, request, classified, chain, user)
        decision.request_headers = policy.request_headers(classified.target, verdict.rule if verdict.allowed else "")
        if not verdict.allowed and verdict.hop and policy.profiles[verdict.hop].dry_run:
            decision.dry_run = True  # the refusing scope belongs to a profile still in dry-run
        callee = callee_hop(policy, classified.target, request)
        if callee is not None and (verdict.allowed or decision.dry_run):
            self._hand_on(policy, decision, chain, caller, profile, callee)
        return verdict

    def _hand_on(
        self,
        policy: PolicySet,
        decision: Decision,
        chain: Chain,
        caller: SpiffeId,
        profile: CompiledProfile,
        callee: Hop,
    ) -> None:
        """The call reaches another hop: it must accept the caller and the longer chain, and
        receives a token for it; a callee never receives a token it does not hold."""
        decision.strip_chain_header = True
        check_accepts(policy.profiles[callee.profile], profile)
        check_shape(policy, (*chain.hops, callee.profile))
        minted = self.chains.mint(policy, chain, caller, callee, decision.user)
        decision.minted_token, decision.minted_chain_id = minted.token, minted.record.id
        decision.records = (*decision.records, minted.record)
        decision.strip_chain_header = False
        decision.chain_events.append("reused" if minted.reused else "minted")

    def _answer(self, decision: Decision, responses: ResponseTemplates) -> bytes:
        try:
            return responses.render(decision)
        except Exception:
            log.exception("cannot build response for %s", decision.id)
            decision.verdict = refused(INTERNAL_ERROR, "Mandate failed to answer; see its log")
            decision.dry_run = False
            decision.jsonrpc_ids = None
            return build_response(decision, responses.chain_header).SerializeToString()


def _unrecorded(answered: Answered) -> None:
    """The recorder of an Authorizer that records nothing (`mandate explain`, tests)."""


def _unreadable(exc: Exception) -> Decision:
    return Decision(new_decision_id(), refused(INVALID_CHECK_REQUEST, f"CheckRequest does not parse: {exc}"))


def _describe(decision: Decision, classified: Classified, resumed: bool) -> None:
    """The decision's target, protocol and audit details; an MCP list request, or a resumed stream
    (which may replay list answers), is marked for the response path."""
    decision.target = classified.target.name
    decision.protocol = classified.protocol
    decision.jsonrpc_ids = classified.jsonrpc_ids
    decision.strip_chain_header = classified.protocol == "egress"
    first = classified.actions[0]
    details = decision.details
    details["url.path"] = classified.path
    if isinstance(first, McpAction):
        details["mcp.method.name"] = first.method
        if first.kind == "tool":
            details["gen_ai.tool.name"] = first.name
        elif first.kind == "resource":
            details["mcp.resource.uri"] = first.name
        elif first.kind == "prompt":
            details["gen_ai.prompt.name"] = first.name
        if len(classified.actions) > 1:
            details["mcp.batch.size"] = str(len(classified.actions))
        decision.filter_lists = resumed or any(action.method in LIST_METHODS for action in classified.actions)
    elif isinstance(first, A2aAction):
        details["a2a.method"] = first.method or first.wire_method
        details["a2a.agent"] = classified.target.name
