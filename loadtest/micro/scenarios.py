"""The scenarios: what is timed at each size, each a function and its per-call arguments.

Each one is a kind of request SPEC §8's decision-path target is held against (or, with
`spec=False`, a figure beside it: the timing floor, the decision cache, Redis), and says what
it must decide, so that a generator that drifts is caught (`check_expectations`) instead of
timing the wrong path.

  floor                    the same timing loop around building a fixed allow CheckResponse
  build_response_allow     build_response() alone for a typical allow decision
  mcp_call_allowed         MCP tools/call the caller's mission allows (CEL `when` where the rule has one)
  mcp_call_denied          MCP tools/call refused: tool not in the rule, server not in the mission,
                           or a `when` that is false (a third each)
  mcp_call_*_when_afresh   the same two, with the policy set's remembered `when` answers forgotten
                           before every call (as if each call brought argument values never seen)
  mcp_tools_list           MCP session plumbing (tools/list)
  egress_get               a GET to an egress host, allowed by an egress rule
  a2a_send_reuse           A2A SendMessage to an agent the caller may call; the same edge was minted
                           less than 30 s ago, so the token is handed out again (no store write)
  a2a_send_mint            the same calls, each minting a fresh chain (in-process store)
  chained_call_cached      the callee of such a SendMessage calls a tool carrying the token minted
                           earlier; the record is in the (in-process) store: MAC, lookup, attenuation
  mix                      40 % mcp_call_allowed, 10 % mcp_call_denied, 15 % mcp_tools_list,
                           10 % egress_get, 5 % a2a_send_reuse, 20 % chained_call_cached
  mix_cache_hit            the mix again, serialized, through `Authorizer.check_bytes` after each
                           was decided once: what the decision cache answers with (the key read
                           from the bytes, lookup, fresh id, kept response; not counted for SPEC §8,
                           whose target is held against the decisions themselves)
  mix_new_ids              the same, but every JSON-RPC call under an id no call used before, as
                           MCP and A2A clients number theirs: the key leaves the id out, so allows
                           are answered by the cache and denies (whose body echoes the id) decided
                           afresh (not counted for SPEC §8 either)
  -- with Redis (--redis-url / --start-redis; skipped otherwise):
  chained_call_redis_cached    as chained_call_cached, against a RedisChainStore whose local cache
                               holds the record (it minted it)
  chained_call_redis_uncached  the token was minted by *another* RedisChainStore (another replica)
                               just before the call, so this replica's cache misses and the
                               decision costs exactly one Redis GET (counted with INFO commandstats)
  a2a_send_mint_redis          a fresh mint through Redis (one SET NX per call)
  (Back-to-back decisions without I/O can starve the store's revocation listener thread of the
  GIL past its 0.75 s liveness; the calls then denied `chain_store_unavailable` are counted and
  reported under "warnings", not hidden.)
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc import code_pb2, status_pb2

from authz.chains.memory import MemoryChainStore
from authz.chains.store import Hop
from authz.check.decision import Decision, allow
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, to_check_request
from authz.check.response import build_response
from authz.check.templates import ResponseTemplates
from authz.policy.compiled import PolicySet
from loadtest.micro.pools import Pools, chained_calls
from loadtest.micro.redis_server import RedisReplicas

REDIS_SCENARIOS = ("chained_call_redis_cached", "chained_call_redis_uncached", "a2a_send_mint_redis")
STORE_DOWN = "chain_store_unavailable"


@dataclass
class Scenario:
    name: str
    description: str
    expect: str  # allow | deny | mixed
    call: Callable[[Any], Any]
    args: Sequence[Any] = ()
    prepare: Callable[[int], Any] | None = None  # per-iteration argument, built outside the timed region
    label: Callable[[Any], tuple[bool, str]] | None = None  # (response allowed, outcome label)
    spec: bool = True
    redis_client: Any = None  # count GETs on this server during the case
    uses_redis: bool = False


def decision_label(decision: Decision) -> tuple[bool, str]:
    verdict = decision.verdict
    label = decision.result if verdict.allowed or decision.dry_run else f"deny:{verdict.reason}"
    if decision.dry_run and not verdict.allowed:
        label = f"would_deny:{verdict.reason}"
    if decision.chain_events:
        label += "+" + "+".join(decision.chain_events)
    return decision.enforced_allow, label


def _response_label(response: CheckResponse) -> tuple[bool, str]:
    allowed = response.status.code == code_pb2.OK
    return allowed, "allow" if allowed else "deny"


def _wire_label(response: bytes) -> tuple[bool, str]:
    return _response_label(CheckResponse.FromString(response))


def decision_path(authorizer: Authorizer) -> Callable[[AuthzInput], Decision]:
    """The timed function: decide, then render the serialized CheckResponse Envoy would get, as
    `mandate serve` does (ResponseTemplates)."""
    decide = authorizer.decide
    render = ResponseTemplates(authorizer.policy.settings.chain_header).render

    def decide_and_answer(request: AuthzInput) -> Decision:
        decision = decide(request)
        render(decision)
        return decision

    return decide_and_answer


_FLOOR_STATUS = status_pb2.Status(code=code_pb2.OK)


def floor_call(_: object) -> CheckResponse:
    return CheckResponse(status=_FLOOR_STATUS)


def _forgetting(policy: PolicySet, pool: list[AuthzInput]) -> Callable[[int], AuthzInput]:
    """A `prepare` that forgets every remembered `when` answer before each call, as if every
    call brought argument values never seen before."""

    def prepare(index: int) -> AuthzInput:
        policy.condition_results.clear()
        return pool[index % len(pool)]

    return prepare


def in_process_scenarios(policy: PolicySet, pools: Pools, seed: int, skipped: dict[str, str]) -> list[Scenario]:
    """The in-process cases (in-memory chain store: no store thread running)."""
    main = Authorizer(policy)
    path = decision_path(main)
    scenarios = _single_requests(policy, pools, path)
    chained: list[AuthzInput] = []
    if pools.edges:
        chained = chained_calls(main, pools, seed)  # also leaves every edge freshly minted on `main`
        scenarios += _chain_scenarios(policy, pools, main, path, chained)
    else:
        for name in ("a2a_send_reuse", "a2a_send_mint", "chained_call_cached"):
            skipped[name] = "no agents rules at this size"
    mix = _mix(pools, chained, seed)
    scenarios.append(
        Scenario(
            "mix", "40% allowed call, 10% denied, 15% tools/list, 10% egress, 5% A2A, 20% chained", "mixed", path, mix
        )
    )
    return scenarios + _cache_scenarios(main, mix)


def _single_requests(policy: PolicySet, pools: Pools, path: Callable[[AuthzInput], Decision]) -> list[Scenario]:
    """The floor, the response alone, and one kind of request each, no chain involved."""
    header = policy.settings.chain_header
    typical = Decision(
        "0123456789abcdef",
        allow("agent-00001.mcp[0]"),
        caller="spiffe://cluster.local/ns/team-001/sa/agent-00001",
        profile="agent-00001",
        target="github",
        protocol="mcp",
        chain_id="",
        hops=("agent-00001",),
    )
    return [
        Scenario(
            "floor",
            "timing loop around building a fixed allow CheckResponse",
            "allow",
            floor_call,
            (None,),
            label=_response_label,
            spec=False,
        ),
        Scenario(
            "build_response_allow",
            "build_response() alone, typical allow decision",
            "allow",
            lambda decision: build_response(decision, header),
            (typical,),
            label=_response_label,
            spec=False,
        ),
        Scenario(
            "mcp_call_allowed",
            "MCP tools/call in the mission (CEL when where the rule has one)",
            "allow",
            path,
            pools.mcp_call_allowed,
        ),
        Scenario(
            "mcp_call_denied",
            "MCP tools/call refused (tool / server / false when)",
            "deny",
            path,
            pools.mcp_call_denied,
        ),
        Scenario(
            "mcp_call_allowed_when_afresh",
            "as mcp_call_allowed, no `when` answer remembered (new argument values)",
            "allow",
            path,
            prepare=_forgetting(policy, pools.mcp_call_allowed),
        ),
        Scenario(
            "mcp_call_denied_when_afresh",
            "as mcp_call_denied, no `when` answer remembered (new argument values)",
            "deny",
            path,
            prepare=_forgetting(policy, pools.mcp_call_denied),
        ),
        Scenario("mcp_tools_list", "MCP plumbing: tools/list", "allow", path, pools.mcp_tools_list),
        Scenario("egress_get", "GET to an egress host via the egress gateway", "allow", path, pools.egress_get),
    ]


def _chain_scenarios(
    policy: PolicySet, pools: Pools, main: Authorizer, path: Callable[[AuthzInput], Decision], chained: list[AuthzInput]
) -> list[Scenario]:
    """A2A calls re-using and minting chains, and the callees' calls carrying them (in-process store)."""
    minting = Authorizer(policy, chains=ChainStep(MemoryChainStore(), main.chains.keys))

    def fresh_step(index: int) -> AuthzInput:
        # A new ChainStep forgets its recent mints, so the edge is minted again; a new
        # store now and then keeps MemoryChainStore below its clean-up threshold.
        store = minting.chains.store if index % 50_000 else MemoryChainStore()
        minting.chains = ChainStep(store, main.chains.keys)
        return pools.a2a_send[index % len(pools.a2a_send)]

    return [
        Scenario(
            "a2a_send_reuse",
            "A2A SendMessage, edge minted < 30 s ago (token handed out again)",
            "allow",
            path,
            pools.a2a_send,
        ),
        Scenario(
            "a2a_send_mint",
            "A2A SendMessage minting a fresh chain (in-process store)",
            "allow",
            decision_path(minting),
            prepare=fresh_step,
        ),
        Scenario(
            "chained_call_cached",
            "tool call carrying a token minted earlier (in-process store)",
            "allow",
            path,
            chained,
        ),
    ]


def _cache_scenarios(main: Authorizer, mix: list[AuthzInput]) -> list[Scenario]:
    """The mix through the decision cache: every request decided once first, then answered from
    the cache; and again under JSON-RPC ids never used before, as clients number their calls."""
    repeated = [to_check_request(request).SerializeToString() for request in mix]
    for payload in repeated:
        main.check_bytes(payload)  # decided once: from now on the decision cache answers

    def renumbered(index: int) -> bytes:
        return _renumbered(mix[index % len(mix)], 1_000_000 + index)

    return [
        Scenario(
            "mix_cache_hit",
            "the mix again, serialized, answered by the decision cache "
            "(Authorizer.check_bytes: key from the bytes, lookup, fresh id, kept response)",
            "mixed",
            main.check_bytes,
            repeated,
            label=_wire_label,
            spec=False,
        ),
        Scenario(
            "mix_new_ids",
            "the mix again, serialized, every JSON-RPC call under an id never used before, "
            "as clients number their calls: allows answered by the decision cache, denies decided afresh",
            "mixed",
            main.check_bytes,
            prepare=renumbered,
            label=_wire_label,
            spec=False,
        ),
    ]


def _renumbered(request: AuthzInput, request_id: int) -> bytes:
    """`request` serialized with `request_id` as its JSON-RPC id (and the Content-Length to match)."""
    check = to_check_request(request)
    http = check.attributes.request.http
    document = orjson.loads(request.body) if request.body.startswith(b"{") else None
    if isinstance(document, dict) and "id" in document:
        document["id"] = request_id
        http.raw_body = orjson.dumps(document)
        http.headers["content-length"] = str(len(http.raw_body))
    return check.SerializeToString()


def redis_scenarios(policy: PolicySet, pools: Pools, seed: int, redis: RedisReplicas) -> list[Scenario]:
    """The cases against Redis; built (and the store's listener thread started) only once the
    in-process cases are done, since that thread competes with them for the GIL."""
    header = policy.settings.chain_header
    scenarios: list[Scenario] = []
    measured_path = decision_path(redis.measured)
    cached = chained_calls(redis.measured, pools, seed + 1)
    scenarios.append(
        Scenario(
            "chained_call_redis_cached",
            "chained tool call, RedisChainStore, record in the local cache",
            "allow",
            measured_path,
            cached,
            redis_client=redis.stats,
            uses_redis=True,
        )
    )
    templates = cached
    edges = pools.edges

    def minted_elsewhere(index: int) -> AuthzInput:
        edge = edges[index % len(edges)]
        now = time.time()
        minted = redis.other.issue(
            (Hop(edge.caller.name, edge.caller.principal), Hop(edge.callee.name, edge.callee.principal)),
            (),
            now,
            now + 900,
        )
        template = templates[index % len(templates)]
        headers = dict(template.headers)
        headers[header] = minted.token
        return dataclasses.replace(template, headers=headers)

    scenarios.append(
        Scenario(
            "chained_call_redis_uncached",
            "chained tool call, token minted by another replica: local cache miss, one GET",
            "allow",
            measured_path,
            prepare=minted_elsewhere,
            spec=False,
            redis_client=redis.stats,
            uses_redis=True,
        )
    )
    redis_minting = Authorizer(policy, chains=ChainStep(redis.measured_store, redis.keys))
    redis_mint_path = decision_path(redis_minting)

    def fresh_redis_step(index: int) -> AuthzInput:
        redis_minting.chains = ChainStep(redis.measured_store, redis.keys)
        return pools.a2a_send[index % len(pools.a2a_send)]

    scenarios.append(
        Scenario(
            "a2a_send_mint_redis",
            "A2A SendMessage minting a fresh chain through Redis (one SET)",
            "allow",
            redis_mint_path,
            prepare=fresh_redis_step,
            spec=False,
            uses_redis=True,
        )
    )
    return scenarios


def _mix(pools: Pools, chained: list[AuthzInput], seed: int) -> list[AuthzInput]:
    rng = random.Random(seed * 13 + len(pools.mcp_call_allowed))
    weighted = [
        (pools.mcp_call_allowed, 40),
        (pools.mcp_call_denied, 10),
        (pools.mcp_tools_list, 15),
        (pools.egress_get, 10),
        (pools.a2a_send, 5),
        (chained, 20),
    ]
    mix: list[AuthzInput] = []
    for pool, weight in weighted:
        if pool:
            mix += rng.choices(pool, k=weight * 20)
    rng.shuffle(mix)
    return mix


def store_down_calls(result: dict[str, Any]) -> int:
    return sum(count for label, count in result["outcomes"].items() if STORE_DOWN in label)


def check_expectations(scenario: Scenario, result: dict[str, Any]) -> list[str]:
    """Calls that did not decide as the scenario intends. With Redis, `chain_store_unavailable`
    denials are not the generator's fault (the store's liveness lapsed): the run warns instead."""
    outcomes = {
        label: count for label, count in result["outcomes"].items() if not (scenario.uses_redis and STORE_DOWN in label)
    }
    problems = []
    if scenario.expect == "allow" and any(not label.startswith("allow") for label in outcomes):
        problems.append(f"{scenario.name}: expected every call allowed, got {result['outcomes']}")
    if scenario.expect == "deny" and result["allowed"]:
        problems.append(f"{scenario.name}: expected every call denied, got {result['outcomes']}")
    if scenario.name.startswith("chained_call") and any("verified" not in label for label in outcomes):
        problems.append(f"{scenario.name}: expected a verified chain on every call, got {result['outcomes']}")
    if scenario.name.startswith("a2a_send_mint") and any("minted" not in label for label in outcomes):
        problems.append(f"{scenario.name}: expected a fresh mint on every call, got {result['outcomes']}")
    return problems
