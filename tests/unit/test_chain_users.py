"""The user a chain was minted for travels in its record (SPEC §10): sealed with it, through a real
Redis to another replica, and old records without a user still read as chains for no one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from authz.chains.redis_store import RECORD_PREFIX, RedisChainStore
from authz.chains.store import ChainRecord, Hop
from authz.chains.tokens import RECORD_SEAL, ChainKeys
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from authz.reasons import CHAIN_FORGED, USER_REQUIRED
from tests.harness.redis import RedisServer
from tests.harness.users import USER_PROFILES, Idp, bearer, principal, users_settings

CHAIN = "x-delegation-chain"


@pytest.fixture
def policy(tmp_path: Path) -> tuple[PolicySet, Idp]:
    idp = Idp()
    (tmp_path / "policy.yaml").write_text(
        users_settings(idp.write_jwks(tmp_path / "jwks.json")) + "---" + USER_PROFILES
    )
    return compile_directory(tmp_path), idp


@pytest.fixture
def replicas(redis_server: RedisServer, policy: tuple[PolicySet, Idp]) -> Iterator[tuple[Authorizer, Authorizer]]:
    """Two replicas sharing one Redis and one chain key, each with its own local record cache."""
    redis.Redis.from_url(redis_server.url).flushall()
    keys = ChainKeys.ephemeral()
    stores = [RedisChainStore(redis_server.url) for _ in range(2)]
    for store in stores:
        store.start()
        assert store.wait_available(5)
    yield tuple(Authorizer(policy[0], chains=ChainStep(store, keys), decision_cache=0) for store in stores)  # type: ignore[misc]
    for store in stores:
        store.close()


def delegate(authorizer: Authorizer, token: str | None) -> str:
    body = b'{"jsonrpc":"2.0","id":"m","method":"SendMessage","params":{}}'
    headers = bearer(token) if token else {}
    decision = authorizer.decide(
        AuthzInput("POST", "/", "billing-agent.local", headers, body, principal("orchestrator"))
    )
    assert decision.verdict.allowed and decision.minted_token
    return decision.minted_token


def refund(authorizer: Authorizer, chain: str) -> str:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund","arguments":{"customer":"c-1"}}}'
    request = AuthzInput("POST", "/mcp", "billing-db.local", {CHAIN: chain}, body, principal("billing-agent"))
    return authorizer.decide(request).verdict.reason


def test_another_replica_reads_the_user_a_chain_was_minted_for(replicas, policy):
    first, second = replicas
    chain = delegate(first, policy[1].token("alice", ["finance"], customer_id="c-1"))
    assert refund(second, chain) == "allowed"
    assert refund(second, delegate(first, None)) == USER_REQUIRED


def test_a_stored_user_swapped_for_another_is_a_forged_record(replicas, policy, redis_server):
    first, second = replicas
    chain = delegate(first, policy[1].token("bob", ["engineering"], customer_id="c-1"))
    client = redis.Redis.from_url(redis_server.url)
    key = RECORD_PREFIX + chain.split(".")[0]
    stored = orjson.loads(client.get(key))
    stored["user"][1] = "alice"
    stored["user"][2] = orjson.dumps({"sub": "alice", "groups": ["finance"], "customer_id": "c-1"}).decode()
    client.set(key, orjson.dumps(stored), keepttl=True)
    assert refund(second, chain) == CHAIN_FORGED


def test_a_record_written_before_users_reads_as_a_chain_for_no_one():
    keys = ChainKeys.ephemeral()
    old = ChainRecord(
        "a" * 36, (Hop("orchestrator", principal("orchestrator")), Hop("billing-agent", "")), (), 1.0, 2.0
    )
    sealed = ChainRecord(old.id, old.hops, old.lineage, 1.0, 2.0, keys.mac(RECORD_SEAL, old.content()))
    raw = orjson.loads(sealed.encode())
    assert "user" not in raw  # as records were written before users, sealed over the same fields
    assert old.content() == orjson.dumps([old.id, [[h.profile, h.principal] for h in old.hops], [], 1.0, 2.0])
    decoded = ChainRecord.decode(sealed.encode())
    assert decoded.user is None and keys.matches(RECORD_SEAL, decoded.content(), decoded.seal)
