"""Property tests of attenuation (SPEC §5 "Deciding"): privilege only narrows along a chain.

Hypothesis draws a handful of profiles (random tools on one MCP server, random `agents`
rules with optional random grants), a chain that the agents rules allow, and an action (a
tool call, or an A2A call to one of the profiles). Every decision comes from the real
Authorizer; a small model of the rule in the SPEC is the oracle:

    allowed(a, [h0 .. hn])  <=>  a in own(hn)  and  for every i < n: a in given(hi, hi+1)
    given(hi, hi+1)          =   hi's grant for hi+1 if it has one, else own(hi)

(calling an agent is an action too, and it also needs the longer chain to fit maxDepth).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import pairwise

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.chains.memory import MemoryChainStore
from authz.chains.store import Hop
from authz.chains.tokens import ChainKeys
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_documents
from authz.policy.loader import SourcedDocument, load_text
from authz.policy.model import DOCUMENT_KINDS
from tests.harness.chain_cast import CHAIN_HEADER, TOOLS_HOST, host, principal

PROFILES = ("p0", "p1", "p2", "p3")
TOOLS = ("t0", "t1", "t2", "t3", "t4")
MAX_DEPTH = 5  # the global default
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    tools: frozenset[str]
    agents: frozenset[str]


@dataclass(frozen=True)
class Model:
    own: dict[str, Scope]
    grants: dict[tuple[str, str], Scope] = field(default_factory=dict)  # (giver, delegate) -> grant

    def given(self, giver: str, delegate: str) -> Scope:
        return self.grants.get((giver, delegate), self.own[giver])

    def can_delegate(self, giver: str, delegate: str) -> bool:
        return delegate in self.own[giver].agents

    def scopes(self, chain: tuple[str, ...]) -> list[tuple[str, Scope]]:
        """(hop whose scope it is, scope), newest first, as the Authorizer checks them."""
        found = [(chain[-1], self.own[chain[-1]])]
        for position in range(len(chain) - 2, -1, -1):
            found.append((chain[position], self.given(chain[position], chain[position + 1])))
        return found

    def refusing_hop(self, chain: tuple[str, ...], action: tuple[str, str]) -> str | None:
        """None if every scope allows `action`, else the first (newest) hop whose scope refuses."""
        kind, name = action
        for hop, scope in self.scopes(chain):
            if name not in (scope.tools if kind == "tool" else scope.agents):
                return hop
        return None

    def allows(self, chain: tuple[str, ...], action: tuple[str, str]) -> bool:
        if self.refusing_hop(chain, action) is not None:
            return False
        return action[0] == "tool" or len(chain) + 1 <= MAX_DEPTH

    def without_grants(self) -> Model:
        return Model(self.own)

    def documents(self) -> list[dict]:
        docs: list[dict] = [
            {
                "apiVersion": "mandate.dev/v1alpha1",
                "kind": "Target",
                "metadata": {"name": "tools"},
                "spec": {"kind": "mcp", "hosts": [TOOLS_HOST]},
            }
        ]
        for name, scope in self.own.items():
            spec: dict = {
                "principals": [principal(name)],
                "hosts": [host(name)],
                "mission": "generated",
                "delegation": {"allowReentry": True},
            }
            spec.update(_scope_yaml(scope))
            if scope.agents:
                spec["agents"] = []
                for agent in sorted(scope.agents):
                    rule: dict = {"agent": agent}
                    grant = self.grants.get((name, agent))
                    if grant is not None:
                        rule["grant"] = _scope_yaml(grant, with_agents=True)
                    spec["agents"].append(rule)
            docs.append(
                {
                    "apiVersion": "mandate.dev/v1alpha1",
                    "kind": "MissionProfile",
                    "metadata": {"name": name},
                    "spec": spec,
                }
            )
        return docs

    def compile(self) -> PolicySet:
        """Validated and compiled as a loaded file would be (minus YAML parsing, for speed)."""
        key = orjson.dumps(self.documents())
        policy = _COMPILED.get(key)
        if policy is None:
            documents = [
                SourcedDocument(DOCUMENT_KINDS[doc["kind"]].model_validate(doc), "generated.yaml", {})
                for doc in self.documents()
            ]
            policy = _COMPILED[key] = compile_documents(documents)
        return policy


_COMPILED: dict[bytes, PolicySet] = {}  # policy sets are immutable; shrinking revisits the same ones


def test_generated_documents_are_what_a_policy_file_would_say():
    """The generator's documents load from YAML to the same policy (so skipping YAML is sound)."""
    model = Model(
        {
            "p0": Scope(frozenset({"t0"}), frozenset({"p1"})),
            "p1": Scope(frozenset({"t1"}), frozenset()),
            "p2": Scope(frozenset(), frozenset()),
            "p3": Scope(frozenset(), frozenset({"p0", "p3"})),
        },
        {("p0", "p1"): Scope(frozenset({"t1"}), frozenset({"p2"}))},
    )
    loaded, errors = load_text(yaml.safe_dump_all(model.documents(), sort_keys=False), "generated.yaml")
    assert not errors
    assert [doc.document for doc in loaded] == [
        SourcedDocument(DOCUMENT_KINDS[d["kind"]].model_validate(d), "", {}).document for d in model.documents()
    ]
    assert (
        compile_documents(loaded).profiles["p0"].delegates["p1"].mcp["tools"][0].tools
        and "t1" in compile_documents(loaded).profiles["p0"].delegates["p1"].mcp["tools"][0].tools
    )


def _scope_yaml(scope: Scope, with_agents: bool = False) -> dict:
    out: dict = {}
    if scope.tools:
        out["mcp"] = [{"server": "tools", "tools": sorted(scope.tools)}]
    if with_agents and scope.agents:
        out["agents"] = [{"agent": agent} for agent in sorted(scope.agents)]
    return out


# --- strategies ----------------------------------------------------------------------------------

tool_sets = st.frozensets(st.sampled_from(TOOLS))
agent_sets = st.frozensets(st.sampled_from(PROFILES))
scopes = st.builds(Scope, tool_sets, agent_sets)


@st.composite
def models(draw: st.DrawFn, grants: bool = True) -> Model:
    own = {name: draw(scopes) for name in PROFILES}
    given_grants: dict[tuple[str, str], Scope] = {}
    if grants:
        for giver, scope in own.items():
            for delegate in sorted(scope.agents):
                if draw(st.booleans()):
                    given_grants[(giver, delegate)] = draw(scopes)
    return Model(own, given_grants)


@st.composite
def chains(draw: st.DrawFn, model: Model, min_size: int = 1) -> tuple[str, ...]:
    """A walk along the agents rules (what the current policy lets each hop delegate to)."""
    edges = [(giver, delegate) for giver in PROFILES for delegate in sorted(model.own[giver].agents)]
    if min_size > 1 and not edges:
        return ()
    chain = [draw(st.sampled_from(PROFILES if min_size == 1 else sorted({giver for giver, _ in edges})))]
    length = draw(st.integers(min_value=min_size, max_value=MAX_DEPTH))
    while len(chain) < length:
        options = sorted(model.own[chain[-1]].agents)
        if not options:
            break
        chain.append(draw(st.sampled_from(options)))
    return tuple(chain)


EVERY_ACTION = (*(("tool", tool) for tool in (*TOOLS, "not-a-tool")), *(("agent", agent) for agent in PROFILES))


# --- the system under test ---------------------------------------------------------------------------


class World:
    """A real Authorizer over `model`'s policies, with chains written straight into its store."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.chains = ChainStep(MemoryChainStore(), ChainKeys.ephemeral())
        self.authorizer = Authorizer(model.compile(), chains=self.chains)

    def token(self, chain: tuple[str, ...]) -> str:
        now = time.time()
        return self.chains.issue(tuple(Hop(name, principal(name)) for name in chain), (), now, now + 600).token

    def decide(self, chain: tuple[str, ...], action: tuple[str, str], token: str | None = None):
        """The decision for the chain's last hop doing `action`: a token when chained, none for [h]."""
        caller = chain[-1]
        if token is None and len(chain) > 1:
            token = self.token(chain)
        headers = {CHAIN_HEADER: token} if token is not None else {}
        kind, name = action
        if kind == "tool":
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}
            request = AuthzInput(
                method="POST",
                path="/mcp",
                host=TOOLS_HOST,
                headers=headers,
                body=orjson.dumps(body),
                source_principal=principal(caller),
            )
        else:
            body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}}
            request = AuthzInput(
                method="POST",
                path="/",
                host=host(name),
                headers=headers,
                body=orjson.dumps(body),
                source_principal=principal(caller),
            )
        return self.authorizer.decide(request)

    def allowed(self, chain: tuple[str, ...], action: tuple[str, str]) -> bool:
        return self.decide(chain, action).result == "allow"


# --- properties ------------------------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_extending_a_chain_at_the_root_never_adds_an_allowed_action(data):
    """(1) Anything hn may do under [h0, h1 .. hn] it may do under [h1 .. hn], and so on down to [hn]."""
    model = data.draw(models())
    chain = data.draw(chains(model, min_size=2))
    if len(chain) < 2:
        return
    world = World(model)
    for action in EVERY_ACTION:
        if world.allowed(chain, action):
            for start in range(1, len(chain)):
                assert world.allowed(chain[start:], action), (chain, chain[start:], action)


@SETTINGS
@given(st.data())
def test_without_grants_every_hop_must_allow_it_itself(data):
    """(2) With no grant anywhere, an action allowed under a chain is allowed by every hop's own profile."""
    model = data.draw(models(grants=False))
    chain = data.draw(chains(model))
    world = World(model)
    for action in EVERY_ACTION:
        if world.allowed(chain, action):
            for hop in chain:
                assert world.allowed((hop,), action), (chain, hop, action)


@SETTINGS
@given(st.data())
def test_a_grant_is_the_only_way_to_widen(data):
    """(3) Allowed => in each hi's grant for hi+1 if it has one, else in hi's own rules; always in hn's own."""
    model = data.draw(models())
    chain = data.draw(chains(model))
    world = World(model)
    for kind, name in EVERY_ACTION:
        if not world.allowed(chain, (kind, name)):
            continue

        def holds(scope: Scope) -> bool:
            return name in (scope.tools if kind == "tool" else scope.agents)  # noqa: B023

        assert holds(model.own[chain[-1]]), (chain, kind, name)
        for giver, delegate in pairwise(chain):
            grant = model.grants.get((giver, delegate))
            assert holds(grant if grant is not None else model.own[giver]), (chain, giver, kind, name)


@SETTINGS
@given(st.data())
def test_decisions_match_the_rule_exactly_and_name_the_refusing_hop(data):
    """The Authorizer neither over- nor under-allows against the SPEC's rule, and a scope
    denial names the newest hop whose scope refused."""
    model = data.draw(models())
    chain = data.draw(chains(model))
    world = World(model)
    token = world.token(chain) if len(chain) > 1 else None
    for action in EVERY_ACTION:
        decision = world.decide(chain, action, token)
        assert (decision.result == "allow") == model.allows(chain, action), (chain, action, decision.verdict)
        refusing = model.refusing_hop(chain, action)
        if refusing is not None:
            assert decision.verdict.hop == refusing, (chain, action, decision.verdict)
            assert decision.verdict.reason in ("tool_not_allowed", "server_not_allowed", "agent_not_allowed")
            assert repr(refusing) in decision.verdict.message
        elif decision.result != "allow":
            assert decision.verdict.reason == "chain_too_deep", decision.verdict
        if decision.result == "allow" and action[0] == "agent":
            assert decision.minted_token  # an allowed call to an agent hands it a chain


@SETTINGS
@given(st.data())
def test_chains_minted_by_the_pipeline_decide_like_the_rule(data):
    """Build the chain as production does (each hop calls the next through the Authorizer,
    carrying the token it was handed), then check every tool against the rule."""
    model = data.draw(models())
    world = World(model)
    chain = (data.draw(st.sampled_from(PROFILES)),)
    token: str | None = None
    for _ in range(data.draw(st.integers(min_value=0, max_value=MAX_DEPTH))):
        callee = data.draw(st.sampled_from(PROFILES))
        decision = world.decide(chain, ("agent", callee), token)
        assert (decision.result == "allow") == model.allows(chain, ("agent", callee)), (chain, callee, decision.verdict)
        if decision.result != "allow":
            assert decision.minted_token == ""
            break
        chain = (*chain, callee)
        token = decision.minted_token
        record = world.chains.store.get(world.chains.keys.verify(token))
        assert record is not None and record.profiles == chain
    for tool in TOOLS:
        decision = world.decide(chain, ("tool", tool), token)
        assert (decision.result == "allow") == model.allows(chain, ("tool", tool)), (chain, tool, decision.verdict)
