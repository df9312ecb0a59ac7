"""Decisions under delegation chains, through the real Authorizer (SPEC §5).

Chains are built the way they are in production: an A2A call from one agent to another is
allowed and returns a minted token (`decision.minted_token`), which the callee then
presents in `x-delegation-chain` on its own calls.

The cast, its policy files and the requests between its agents are in tests/harness/
(`chain_cast.py`, `requests.py`); unless a test changes it:
  alice  tools read, write;          agents: bob (no grant), carol (grant: read, delete)
  bob    tools read, delete;         agents: carol
  carol  tools read, write, delete, admin
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from authz.chains.memory import MemoryChainStore
from authz.chains.store import Hop
from authz.chains.tokens import ChainKeys
from authz.check.delegation import MINT_REUSE_SECONDS, ChainStep
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from authz.policy.loader import PolicyLoadError
from tests.harness.chain_cast import CHAIN_HEADER, cast, documents, principal
from tests.harness.chain_doubles import Clock
from tests.harness.requests import call_agent, use_tool


@pytest.fixture
def compile_set(write_policies):
    def build(
        profiles: dict[str, dict[str, Any]] | None = None,
        settings: dict[str, Any] | None = None,
        tools_principal: str = "",
    ) -> PolicySet:
        directory = write_policies(**documents(cast() if profiles is None else profiles, settings, tools_principal))
        for stale in directory.iterdir():  # a rewrite without settings must drop the old file
            if stale.stem == "settings" and not settings:
                stale.unlink()
        return compile_directory(directory)

    return build


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def build(compile_set, clock):
    """build(profiles=None, settings=None) -> an Authorizer with its own store, keys and clock."""

    def make(profiles: dict[str, dict[str, Any]] | None = None, settings: dict[str, Any] | None = None) -> Authorizer:
        store = MemoryChainStore(clock=clock)
        return Authorizer(compile_set(profiles, settings), chains=ChainStep(store, ChainKeys.ephemeral(), clock=clock))

    return make


# --- chains -----------------------------------------------------------------------------------


def delegate(authorizer: Authorizer, *path: str) -> str:
    """Mint along `path` (each hop calling the next, carrying what it was handed): the last token."""
    token = None
    for caller, callee in pairwise(path):
        decision = authorizer.decide(call_agent(caller, callee, token))
        assert decision.result == "allow", (caller, callee, decision.verdict)
        assert decision.minted_token, (caller, callee)
        token = decision.minted_token
    assert token is not None
    return token


def verdict_of(authorizer: Authorizer, request: AuthzInput) -> tuple[str, str, str]:
    decision = authorizer.decide(request)
    return decision.result, decision.verdict.reason, decision.verdict.hop


def record_of(authorizer: Authorizer, token: str):
    return authorizer.chains.store.get(authorizer.chains.keys.verify(token))


# --- minting ----------------------------------------------------------------------------------


class TestMinting:
    def test_an_allowed_a2a_call_mints_a_token_for_the_callee(self, build):
        authorizer = build()
        decision = authorizer.decide(call_agent("alice", "bob"))
        assert decision.result == "allow"
        assert decision.chain_events == ["minted"]
        assert decision.hops == ("alice",) and decision.chain_id == ""  # alice acted on her own behalf
        record = record_of(authorizer, decision.minted_token)
        assert record.id == decision.minted_chain_id
        assert record.hops == (Hop("alice", principal("alice")), Hop("bob", ""))  # a waypoint knows only the host
        assert record.lineage == () and record.parent == ""

    def test_the_callee_principal_is_recorded_when_envoy_reports_it(self, build):
        authorizer = build()
        decision = authorizer.decide(call_agent("alice", "bob", destination=principal("bob")))
        assert record_of(authorizer, decision.minted_token).hops[-1] == Hop("bob", principal("bob"))

    def test_the_minted_token_overwrites_what_the_client_sent(self, build):
        authorizer = build()
        bobs = delegate(authorizer, "alice", "bob")
        decision = authorizer.decide(call_agent("bob", "carol", bobs))
        assert decision.minted_token and decision.minted_token != bobs
        record = record_of(authorizer, decision.minted_token)
        assert record.profiles == ("alice", "bob", "carol")
        assert record.lineage == (record_of(authorizer, bobs).id,)

    def test_a_call_to_a_tool_server_with_its_own_profile_mints_too(self, build, compile_set):
        server = "spiffe://cluster.local/ns/tools/sa/server"
        profiles = cast()
        profiles["toolsvc"] = {"principals": [server]}
        authorizer = build(profiles)
        assert authorizer.decide(use_tool("alice", "read")).minted_token == ""  # the Target names no principal
        authorizer.policy = compile_set(profiles, tools_principal=server)
        decision = authorizer.decide(use_tool("alice", "read", destination=server))
        assert decision.result == "allow" and decision.chain_events == ["minted"]
        assert record_of(authorizer, decision.minted_token).hops == (
            Hop("alice", principal("alice")),
            Hop("toolsvc", server),
        )
        assert authorizer.policy.targets["tools"].kind == "mcp"  # still an MCP target to its callers
        denied = authorizer.decide(use_tool("alice", "delete", destination=server))
        assert denied.result == "deny" and denied.minted_token == ""

    def test_a_denied_agent_call_mints_nothing(self, build):
        authorizer = build()
        decision = authorizer.decide(call_agent("bob", "alice"))
        assert (decision.result, decision.verdict.reason) == ("deny", "agent_not_allowed")
        assert decision.minted_token == "" and "minted" not in decision.chain_events

    def test_same_edge_within_30s_reuses_the_token(self, build, clock):
        authorizer = build()
        first = authorizer.decide(call_agent("alice", "bob"))
        clock.now += MINT_REUSE_SECONDS - 1
        second = authorizer.decide(call_agent("alice", "bob"))
        assert second.minted_token == first.minted_token and second.chain_events == ["reused"]
        clock.now += 1.5
        third = authorizer.decide(call_agent("alice", "bob"))
        assert third.chain_events == ["minted"] and third.minted_token != first.minted_token

    def test_reuse_is_per_edge_and_per_parent_chain(self, build):
        authorizer = build()
        to_bob = authorizer.decide(call_agent("alice", "bob")).minted_token
        to_carol = authorizer.decide(call_agent("alice", "carol")).minted_token
        assert to_bob != to_carol
        via_bob = authorizer.decide(call_agent("bob", "carol", to_bob))
        own = authorizer.decide(call_agent("bob", "carol"))
        assert via_bob.minted_token != own.minted_token
        assert record_of(authorizer, own.minted_token).profiles == ("bob", "carol")
        again = authorizer.decide(call_agent("bob", "carol", to_bob))
        assert again.chain_events == ["verified", "reused"] and again.minted_token == via_bob.minted_token

    def test_a_revoked_chain_is_not_reused(self, build):
        authorizer = build()
        first = authorizer.decide(call_agent("alice", "bob"))
        authorizer.chains.store.revoke(first.minted_chain_id)
        second = authorizer.decide(call_agent("alice", "bob"))
        assert second.chain_events == ["minted"] and second.minted_token != first.minted_token
        assert authorizer.decide(use_tool("bob", "read", second.minted_token)).result == "allow"
        assert verdict_of(authorizer, use_tool("bob", "read", first.minted_token))[1] == "chain_revoked"

    def test_a_revoked_parent_is_not_extended(self, build):
        authorizer = build()
        bobs = delegate(authorizer, "alice", "bob")
        child = authorizer.decide(call_agent("bob", "carol", bobs)).minted_token
        authorizer.chains.store.revoke(record_of(authorizer, bobs).id)
        again = authorizer.decide(call_agent("bob", "carol", bobs))
        assert again.verdict.reason == "chain_revoked" and again.minted_token == ""
        assert verdict_of(authorizer, use_tool("carol", "read", child))[1] == "chain_revoked"

    def test_child_expiry_never_exceeds_the_parent(self, build, clock):
        authorizer = build(settings={"chainTTL": "10m"})
        root = record_of(authorizer, authorizer.decide(call_agent("alice", "bob")).minted_token)
        assert root.expires == pytest.approx(root.created + 600)
        clock.now += 300
        bobs = authorizer.chains.keys.sign(root.id)
        child = record_of(authorizer, authorizer.decide(call_agent("bob", "carol", bobs)).minted_token)
        assert child.created == pytest.approx(clock.now)
        assert child.expires == root.expires  # not now + 10m
        clock.now += 299
        assert authorizer.decide(use_tool("carol", "read", authorizer.chains.keys.sign(child.id))).result == "allow"
        clock.now += 2  # past the root's expiry: the child is gone with it
        assert (
            verdict_of(authorizer, use_tool("carol", "read", authorizer.chains.keys.sign(child.id)))[1]
            == "chain_unknown"
        )
        assert verdict_of(authorizer, use_tool("bob", "read", bobs))[1] == "chain_unknown"

    def test_chain_ttl_setting(self, build):
        authorizer = build(settings={"chainTTL": "2m"})
        record = record_of(authorizer, delegate(authorizer, "alice", "bob"))
        assert record.expires - record.created == pytest.approx(120)


# --- attenuation: privilege only narrows along a chain -----------------------------------------


class TestAttenuation:
    def test_the_delegate_is_held_to_the_delegators_scope(self, build):
        authorizer = build()
        token = delegate(authorizer, "alice", "bob")
        assert verdict_of(authorizer, use_tool("bob", "read", token)) == ("allow", "allowed", "")
        decision = authorizer.decide(use_tool("bob", "delete", token))  # bob may, alice may not
        assert (decision.result, decision.verdict.reason, decision.verdict.hop) == ("deny", "tool_not_allowed", "alice")
        assert decision.verdict.status == 403
        message = decision.verdict.message
        assert "'delete'" in message and "'alice'" in message and "delegated" in message
        assert "'write'" not in message  # never another profile's contents
        decision = authorizer.decide(use_tool("bob", "write", token))  # alice may, bob may not
        assert (decision.verdict.reason, decision.verdict.hop) == ("tool_not_allowed", "bob")
        assert "mission of 'bob'" in decision.verdict.message

    def test_acting_on_its_own_the_delegate_is_unaffected(self, build):
        authorizer = build()
        delegate(authorizer, "alice", "bob")
        assert verdict_of(authorizer, use_tool("bob", "delete")) == ("allow", "allowed", "")

    def test_a_grant_can_widen_past_the_delegators_own_rules(self, build):
        authorizer = build()
        token = delegate(authorizer, "alice", "carol")
        assert verdict_of(authorizer, use_tool("carol", "delete", token))[0] == "allow"  # alice lacks delete

    def test_a_grant_narrows_too(self, build):
        authorizer = build()
        token = delegate(authorizer, "alice", "carol")
        for tool in ("write", "admin"):  # write: alice has it but did not grant it
            assert verdict_of(authorizer, use_tool("carol", tool, token)) == ("deny", "tool_not_allowed", "alice"), tool
        assert verdict_of(authorizer, use_tool("carol", "read", token))[0] == "allow"

    def test_a_grant_never_exceeds_the_delegates_own_profile(self, build):
        profiles = cast()
        profiles["alice"]["agents"][0]["grant"] = {"mcp": [{"server": "tools", "tools": ["read", "write", "delete"]}]}
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob")
        assert verdict_of(authorizer, use_tool("bob", "delete", token))[0] == "allow"
        assert verdict_of(authorizer, use_tool("bob", "write", token)) == ("deny", "tool_not_allowed", "bob")

    def test_an_empty_grant_leaves_nothing_but_the_call_itself(self, build):
        profiles = cast()
        profiles["alice"]["agents"][0]["grant"] = {}
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob")
        decision = authorizer.decide(use_tool("bob", "read", token))
        assert (decision.verdict.reason, decision.verdict.hop) == ("server_not_allowed", "alice")

    def test_three_hops(self, build):
        authorizer = build()
        token = delegate(authorizer, "alice", "bob", "carol")
        assert record_of(authorizer, token).profiles == ("alice", "bob", "carol")
        assert verdict_of(authorizer, use_tool("carol", "read", token)) == ("allow", "allowed", "")
        # bob gave carol its own rules (no grant): write is outside them; the nearest refusing hop is named
        assert verdict_of(authorizer, use_tool("carol", "write", token)) == ("deny", "tool_not_allowed", "bob")
        assert verdict_of(authorizer, use_tool("carol", "admin", token)) == ("deny", "tool_not_allowed", "bob")
        # delete: bob has it, but alice gave bob her own rules, which lack it
        decision = authorizer.decide(use_tool("carol", "delete", token))
        assert (decision.verdict.reason, decision.verdict.hop) == ("tool_not_allowed", "alice")
        assert "'alice'" in decision.verdict.message
        assert decision.hops == ("alice", "bob", "carol")

    def test_calling_an_agent_is_itself_an_action_under_the_chain(self, build):
        profiles = cast()
        profiles["alice"]["agents"] = [{"agent": "bob"}]  # alice may not call carol
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob")
        decision = authorizer.decide(call_agent("bob", "carol", token))
        assert (decision.result, decision.verdict.reason, decision.verdict.hop) == (
            "deny",
            "agent_not_allowed",
            "alice",
        )
        assert decision.minted_token == ""
        assert authorizer.decide(call_agent("bob", "carol")).result == "allow"  # on its own behalf: fine

    def test_a2a_methods_are_narrowed_too(self, build):
        profiles = cast()
        profiles["alice"]["agents"] = [{"agent": "bob"}, {"agent": "carol", "methods": ["GetTask"]}]
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob")
        assert verdict_of(authorizer, call_agent("bob", "carol", token, method="GetTask"))[0] == "allow"
        assert verdict_of(authorizer, call_agent("bob", "carol", token, method="SendMessage")) == (
            "deny",
            "a2a_method_not_allowed",
            "alice",
        )

    def test_a_grant_on_the_second_hop(self, build):
        profiles = cast()
        profiles["bob"]["agents"] = [{"agent": "carol", "grant": {"mcp": [{"server": "tools", "tools": ["read"]}]}}]
        profiles["alice"]["agents"] = [{"agent": "bob"}, {"agent": "carol"}]
        profiles["alice"]["tools"] = ["read", "write", "delete"]
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob", "carol")
        assert verdict_of(authorizer, use_tool("carol", "read", token))[0] == "allow"
        assert verdict_of(authorizer, use_tool("carol", "delete", token)) == ("deny", "tool_not_allowed", "bob")

    def test_chain_variables_in_when(self, build):
        profiles = cast()
        profiles["carol"]["when"] = 'chain.root != "alice" && chain.depth <= 2'
        authorizer = build(profiles)
        assert verdict_of(authorizer, use_tool("carol", "read"))[0] == "allow"  # depth 1, root carol
        assert verdict_of(authorizer, use_tool("carol", "read", delegate(authorizer, "bob", "carol")))[0] == "allow"
        assert verdict_of(authorizer, use_tool("carol", "read", delegate(authorizer, "alice", "carol")))[2] == "carol"
        assert (
            verdict_of(authorizer, use_tool("carol", "read", delegate(authorizer, "alice", "bob", "carol")))[2]
            == "carol"
        )


# --- the shape of a chain: depth, re-entry -----------------------------------------------------


class TestShape:
    def test_global_max_depth(self, build):
        authorizer = build(settings={"maxDepth": 2})
        token = delegate(authorizer, "alice", "bob")  # two hops: at the limit
        decision = authorizer.decide(call_agent("bob", "carol", token))
        assert (decision.result, decision.verdict.reason) == ("deny", "chain_too_deep")
        assert (
            "global maxDepth is 2" in decision.verdict.message and "alice -> bob -> carol" in decision.verdict.message
        )
        assert decision.minted_token == ""

    @pytest.mark.parametrize("limited", ["alice", "bob", "carol"])
    def test_profile_max_depth_of_any_hop(self, build, limited):
        profiles = cast()
        profiles[limited]["delegation"] = {"maxDepth": 2}
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob")
        decision = authorizer.decide(call_agent("bob", "carol", token))
        assert decision.verdict.reason == "chain_too_deep"
        assert f"maxDepth of '{limited}' is 2" in decision.verdict.message

    def test_smallest_limit_wins(self, build):
        profiles = cast()
        profiles["carol"]["delegation"] = {"maxDepth": 3}
        authorizer = build(profiles, settings={"maxDepth": 4})
        delegate(authorizer, "alice", "bob", "carol")  # 3 hops: allowed
        profiles["bob"]["delegation"] = {"maxDepth": 10}  # a larger profile limit does not lift the global one
        authorizer = build(profiles, settings={"maxDepth": 2})
        assert (
            verdict_of(authorizer, call_agent("bob", "carol", delegate(authorizer, "alice", "bob")))[1]
            == "chain_too_deep"
        )

    def test_max_depth_one_forbids_delegating_at_all(self, build):
        profiles = cast()
        profiles["bob"]["delegation"] = {"maxDepth": 1}
        authorizer = build(profiles)
        assert verdict_of(authorizer, call_agent("alice", "bob"))[1] == "chain_too_deep"
        assert verdict_of(authorizer, use_tool("bob", "read"))[0] == "allow"

    def test_a_reload_that_lowers_max_depth_applies_to_existing_chains(self, build, compile_set):
        authorizer = build()
        token = delegate(authorizer, "alice", "bob", "carol")
        authorizer.policy = compile_set(settings={"maxDepth": 2})
        assert verdict_of(authorizer, use_tool("carol", "read", token))[1] == "chain_too_deep"

    def _with_return_edge(self, reentry: bool) -> dict[str, dict[str, Any]]:
        profiles = cast()
        profiles["bob"]["agents"] = [{"agent": "carol"}, {"agent": "alice"}]
        # under [alice, bob], bob calling alice is an action alice's own rules must allow
        profiles["alice"]["agents"].append({"agent": "alice"})
        if reentry:
            profiles["alice"]["delegation"] = {"allowReentry": True}
        return profiles

    def test_reentry_is_denied_without_allow_reentry(self, build):
        authorizer = build(self._with_return_edge(reentry=False))
        token = delegate(authorizer, "alice", "bob")
        decision = authorizer.decide(call_agent("bob", "alice", token))
        assert (decision.result, decision.verdict.reason) == ("deny", "chain_reentry")
        assert "'alice'" in decision.verdict.message and "allowReentry" in decision.verdict.message
        assert decision.minted_token == ""
        assert authorizer.decide(call_agent("bob", "alice")).result == "allow"  # no chain: no re-entry

    def test_reentry_with_allow_reentry(self, build):
        authorizer = build(self._with_return_edge(reentry=True))
        token = delegate(authorizer, "alice", "bob", "alice")
        assert record_of(authorizer, token).profiles == ("alice", "bob", "alice")
        assert verdict_of(authorizer, use_tool("alice", "read", token))[0] == "allow"
        # alice under the chain is held to what she gave bob (her own rules) and bob's own: write is out
        assert verdict_of(authorizer, use_tool("alice", "write", token)) == ("deny", "tool_not_allowed", "bob")

    def test_reentry_of_a_profile_without_the_flag_deep_in_the_chain(self, build):
        profiles = self._with_return_edge(reentry=True)
        profiles["carol"]["agents"] = [{"agent": "bob"}]
        profiles["bob"]["agents"].append({"agent": "bob"})  # bob's scope for carol must allow calling bob
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob", "carol")
        assert verdict_of(authorizer, call_agent("carol", "bob", token))[1] == "chain_reentry"  # bob lacks the flag


# --- who may call whom: acceptFrom, requireChain ------------------------------------------------


class TestAcceptance:
    def test_accept_from(self, build):
        profiles = cast()
        profiles["carol"]["delegation"] = {"acceptFrom": ["bob"]}
        authorizer = build(profiles)
        decision = authorizer.decide(call_agent("alice", "carol"))
        assert (decision.result, decision.verdict.reason, decision.verdict.hop) == (
            "deny",
            "caller_not_accepted",
            "carol",
        )
        assert "'alice'" in decision.verdict.message and "acceptFrom" in decision.verdict.message
        assert decision.minted_token == ""
        assert authorizer.decide(call_agent("bob", "carol")).result == "allow"
        assert authorizer.decide(call_agent("bob", "carol", delegate(authorizer, "alice", "bob"))).result == "allow"

    def test_accept_from_glob(self, build):
        profiles = cast()
        profiles["carol"]["delegation"] = {"acceptFrom": ["b*"]}
        authorizer = build(profiles)
        assert verdict_of(authorizer, call_agent("alice", "carol"))[1] == "caller_not_accepted"
        assert verdict_of(authorizer, call_agent("bob", "carol"))[0] == "allow"

    def test_require_chain(self, build):
        profiles = cast()
        profiles["carol"]["delegation"] = {"requireChain": True}
        authorizer = build(profiles)
        decision = authorizer.decide(use_tool("carol", "read"))
        assert (decision.result, decision.verdict.reason) == ("deny", "chain_required")
        assert "requireChain" in decision.verdict.message and CHAIN_HEADER in decision.verdict.message
        assert verdict_of(authorizer, use_tool("carol", "read", delegate(authorizer, "bob", "carol")))[0] == "allow"


# --- tokens that cannot be trusted ---------------------------------------------------------------


class TestIntegrity:
    def test_a_token_presented_by_another_profile_is_not_held(self, build):
        authorizer = build()
        token = delegate(authorizer, "alice", "bob")
        decision = authorizer.decide(use_tool("carol", "read", token))
        assert (decision.result, decision.verdict.reason) == ("deny", "chain_not_held")
        assert decision.chain_events == ["not_held"]
        # nor by the delegator itself, handing its delegate's token back
        assert verdict_of(authorizer, use_tool("alice", "read", token))[1] == "chain_not_held"

    def test_a_token_minted_for_one_workload_is_not_held_by_its_namespace_siblings(self, build):
        profiles = cast()
        profiles["pool"] = {"principals": ["spiffe://cluster.local/ns/pool/sa/*"], "tools": ["read"]}
        profiles["alice"]["agents"].append({"agent": "pool"})
        authorizer = build(profiles)
        worker = "spiffe://cluster.local/ns/pool/sa/worker-1"
        decision = authorizer.decide(call_agent("alice", "pool", destination=worker))
        token = decision.minted_token
        assert record_of(authorizer, token).hops[-1] == Hop("pool", worker)
        assert authorizer.decide(use_tool("pool", "read", token, source=worker)).result == "allow"
        sibling = "spiffe://cluster.local/ns/pool/sa/worker-2"
        assert verdict_of(authorizer, use_tool("pool", "read", token, source=sibling))[1] == "chain_not_held"

    def test_revoked_chain_and_descendants(self, build):
        authorizer = build()
        bobs = delegate(authorizer, "alice", "bob")
        carols = authorizer.decide(call_agent("bob", "carol", bobs)).minted_token
        independent = delegate(authorizer, "bob", "carol")
        authorizer.chains.store.revoke(record_of(authorizer, bobs).id)
        for caller, token in (("bob", bobs), ("carol", carols)):
            decision = authorizer.decide(use_tool(caller, "read", token))
            assert (decision.result, decision.verdict.reason) == ("deny", "chain_revoked")
            assert decision.chain_events == ["revoked"]
        assert authorizer.decide(use_tool("carol", "read", independent)).result == "allow"

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
            lambda t: ("A" if t[0] != "A" else "B") + t[1:],
            lambda t: t + "," + t,
            lambda t: t.split(".")[0],
            lambda t: "",
            lambda t: "garbage",
        ],
        ids=["mac", "id", "duplicated header", "no mac", "empty", "garbage"],
    )
    def test_forged(self, build, tamper):
        authorizer = build()
        token = delegate(authorizer, "alice", "bob")
        decision = authorizer.decide(use_tool("bob", "read", tamper(token)))
        assert (decision.result, decision.verdict.reason, decision.verdict.status) == ("deny", "chain_forged", 403)
        assert decision.chain_events == ["forged"]

    def test_a_token_from_another_key_is_forged(self, build):
        one, other = build(), build()
        token = delegate(one, "alice", "bob")
        assert verdict_of(other, use_tool("bob", "read", token))[1] == "chain_forged"

    def test_unknown(self, build):
        authorizer = build()
        keys = authorizer.chains.keys
        chain_id = keys.new_id()
        decision = authorizer.decide(use_tool("bob", "read", keys.sign(chain_id)))
        assert (decision.result, decision.verdict.reason) == ("deny", "chain_unknown")
        assert chain_id in decision.verdict.message and decision.chain_events == ["unknown"]

    def test_expired(self, build, clock):
        authorizer = build(settings={"chainTTL": "1m"})
        token = delegate(authorizer, "alice", "bob")
        clock.now += 59
        assert authorizer.decide(use_tool("bob", "read", token)).result == "allow"
        clock.now += 2
        assert verdict_of(authorizer, use_tool("bob", "read", token))[1] == "chain_unknown"

    def test_an_empty_header_is_not_the_absence_of_one(self, build):
        authorizer = build()
        assert verdict_of(authorizer, use_tool("carol", "read"))[0] == "allow"
        assert verdict_of(authorizer, use_tool("carol", "read", ""))[1] == "chain_forged"

    def test_the_chain_header_name_is_configurable(self, build):
        authorizer = build(settings={"chainHeader": "x-on-behalf-of"})
        token = authorizer.decide(call_agent("alice", "bob")).minted_token
        request = use_tool("bob", "delete")
        request.headers["x-on-behalf-of"] = token
        assert verdict_of(authorizer, request) == ("deny", "tool_not_allowed", "alice")
        request.headers[CHAIN_HEADER] = "garbage"  # the default name means nothing now
        assert verdict_of(authorizer, request) == ("deny", "tool_not_allowed", "alice")

    def test_store_unavailable_fails_closed(self, build):
        authorizer = build()
        token = delegate(authorizer, "alice", "bob")

        class Down:
            """The store as seen while it is unreachable."""

            def __init__(self, store: MemoryChainStore) -> None:
                self.store = store

            def available(self) -> bool:
                return False

            def __getattr__(self, name: str) -> Any:
                return getattr(self.store, name)

        authorizer.chains.store = Down(authorizer.chains.store)
        assert verdict_of(authorizer, use_tool("bob", "read", token))[1] == "chain_store_unavailable"
        # the same edge was minted seconds ago, but a down store hands out nothing, not even a reuse
        assert verdict_of(authorizer, call_agent("alice", "bob"))[1] == "chain_store_unavailable"
        assert verdict_of(authorizer, use_tool("bob", "delete"))[0] == "allow"


class TestDryRun:
    def test_an_untrustworthy_token_is_denied_even_for_a_dry_run_caller(self, build):
        profiles = cast()
        profiles["bob"]["mode"] = "dry-run"
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob")
        keys = authorizer.chains.keys
        for bad, reason in (
            (token[:-1] + ("A" if token[-1] != "A" else "B"), "chain_forged"),
            (keys.sign(keys.new_id()), "chain_unknown"),
            (delegate(authorizer, "alice", "carol"), "chain_not_held"),
        ):
            decision = authorizer.decide(use_tool("bob", "read", bad))
            assert (decision.result, decision.verdict.reason, decision.dry_run) == ("deny", reason, False), reason
        authorizer.chains.store.revoke(record_of(authorizer, token).id)
        assert authorizer.decide(use_tool("bob", "read", token)).result == "deny"

    def test_a_dry_run_callers_scope_denial_is_only_logged(self, build):
        profiles = cast()
        profiles["bob"]["mode"] = "dry-run"
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob")
        decision = authorizer.decide(use_tool("bob", "delete", token))
        assert (decision.result, decision.verdict.reason, decision.verdict.hop) == (
            "would_deny",
            "tool_not_allowed",
            "alice",
        )

    def test_a_dry_run_delegators_scope_is_not_enforced(self, build):
        profiles = cast()
        profiles["alice"]["mode"] = "dry-run"
        authorizer = build(profiles)
        token = delegate(authorizer, "alice", "bob")
        assert verdict_of(authorizer, use_tool("bob", "delete", token)) == ("would_deny", "tool_not_allowed", "alice")
        assert verdict_of(authorizer, use_tool("bob", "write", token)) == ("deny", "tool_not_allowed", "bob")


# --- policy reloads under existing chains -----------------------------------------------------------


class TestReload:
    def test_withdrawing_the_agents_rule_withdraws_the_chain(self, build, compile_set):
        authorizer = build()
        token = delegate(authorizer, "alice", "bob")
        carols = authorizer.decide(call_agent("bob", "carol", token)).minted_token
        profiles = cast()
        profiles["alice"]["agents"] = [{"agent": "carol"}]  # no more alice -> bob
        authorizer.policy = compile_set(profiles)
        for caller, chained in (("bob", token), ("carol", carols)):
            decision = authorizer.decide(use_tool(caller, "read", chained))
            assert (decision.result, decision.verdict.reason, decision.verdict.hop) == (
                "deny",
                "delegation_withdrawn",
                "alice",
            )
            assert "'alice'" in decision.verdict.message and "'bob'" in decision.verdict.message
        assert authorizer.decide(use_tool("bob", "read")).result == "allow"

    def test_a_changed_grant_applies_to_existing_chains(self, build, compile_set):
        authorizer = build()
        token = delegate(authorizer, "alice", "carol")
        assert verdict_of(authorizer, use_tool("carol", "write", token))[0] == "deny"
        profiles = cast()
        profiles["alice"]["agents"][1]["grant"]["mcp"][0]["tools"].append("write")
        authorizer.policy = compile_set(profiles)
        assert verdict_of(authorizer, use_tool("carol", "write", token))[0] == "allow"

    def test_a_removed_profile_makes_its_chains_unknown(self, build, compile_set):
        profiles = cast()
        profiles["dave"] = {"tools": ["read"], "agents": [{"agent": "bob"}]}
        authorizer = build(profiles)
        token = delegate(authorizer, "dave", "bob")
        authorizer.policy = compile_set(cast())
        decision = authorizer.decide(use_tool("bob", "read", token))
        assert (decision.result, decision.verdict.reason) == ("deny", "chain_profile_unknown")
        assert "'dave'" in decision.verdict.message

    def test_a_delegate_that_became_dry_run(self, build, compile_set):
        authorizer = build()
        token = delegate(authorizer, "alice", "bob")
        profiles = cast()
        profiles["bob"]["mode"] = "dry-run"
        authorizer.policy = compile_set(profiles)
        assert authorizer.decide(use_tool("bob", "delete", token)).result == "would_deny"


# --- load errors the delegation rules add ----------------------------------------------------------

TOOLS = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: tools}
spec: {kind: mcp, hosts: [tools.local]}
"""

TWO_RULES_ONE_GRANT = """
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: bob}
spec:
  principals: [spiffe://cluster.local/ns/bob/sa/bob]
  mission: delegate
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: alice}
spec:
  principals: [spiffe://cluster.local/ns/alice/sa/alice]
  mission: delegator
  mcp: [{server: tools, tools: [read]}]
  agents:
    - agent: bob
      methods: [GetTask]
    - agent: bob
      methods: [SendMessage]
      grant:
        mcp: [{server: tools, tools: [read]}]
"""

NESTED_GRANT = """
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: bob}
spec:
  principals: [spiffe://cluster.local/ns/bob/sa/bob]
  mission: delegate
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: alice}
spec:
  principals: [spiffe://cluster.local/ns/alice/sa/alice]
  mission: delegator
  agents:
    - agent: bob
      grant:
        agents:
          - agent: alice
            grant:
              mcp: [{server: tools, tools: [read]}]
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = text.lstrip("\n").splitlines()
    hits = [number for number, line in enumerate(lines, start=1) if needle in line]
    return hits[occurrence - 1]


class TestLoadErrors:
    def errors(self, directory) -> list[str]:
        with pytest.raises(PolicyLoadError) as caught:
            compile_directory(directory)
        return [str(error) for error in caught.value.errors]

    def test_two_agents_rules_for_one_agent_with_a_grant(self, write_policies):
        directory = write_policies(t=TOOLS, p=TWO_RULES_ONE_GRANT)
        (error,) = self.errors(directory)
        second_rule = line_of(TWO_RULES_ONE_GRANT, "- agent: bob", occurrence=2)
        assert error.startswith(f"{directory / 'p.yaml'}:{second_rule}: "), error
        assert "'bob'" in error and "agents[0, 1]" in error and "grant" in error

    def test_two_agents_rules_without_a_grant_are_fine(self, write_policies):
        text = TWO_RULES_ONE_GRANT.split("      grant:")[0]
        policy = compile_directory(write_policies(t=TOOLS, p=text))
        assert set(policy.profiles["alice"].delegates) == {"bob"}

    def test_a_grant_inside_a_grant(self, write_policies):
        directory = write_policies(t=TOOLS, p=NESTED_GRANT)
        (error,) = self.errors(directory)
        nested = line_of(NESTED_GRANT, "- agent: alice")
        assert error.startswith(f"{directory / 'p.yaml'}:{nested}: "), error
        assert "cannot carry a grant of its own" in error

    def test_a_grant_naming_an_unknown_target_is_reported_inside_the_grant(self, write_policies):
        text = TWO_RULES_ONE_GRANT.replace("    - agent: bob\n      methods: [GetTask]\n", "")
        text = text.replace(
            "        mcp: [{server: tools, tools: [read]}]", "        mcp: [{server: nowhere, tools: [read]}]"
        )
        directory = write_policies(t=TOOLS, p=text)
        (error,) = self.errors(directory)
        assert error.startswith(f"{directory / 'p.yaml'}:{line_of(text, 'server: nowhere')}: "), error
        assert "'nowhere'" in error
