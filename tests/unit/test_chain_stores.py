"""Chain stores (SPEC §5 "Store", "Store down", "Revocation"; §8 "one Redis round trip").

The in-process store and the Redis store must behave alike on the contract in
`authz/chains/store.py`; the Redis store is checked against a real redis-server, counting
the commands it actually receives (`INFO commandstats`), and stopping or pausing it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.chains.memory import MemoryChainStore
from authz.chains.redis_store import RECORD_PREFIX, REVOKED_KEY, RedisChainStore
from authz.chains.store import ChainRecord, Hop, StoreUnavailable, open_store
from authz.chains.tokens import ChainKeys
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput
from tests.harness.chain_doubles import Clock
from tests.harness.example_policies import BILLING, BILLING_HOST, ORCHESTRATOR, SUPPORT
from tests.harness.processes import wait_until
from tests.harness.redis import RedisServer

NEW_ID = ChainKeys.ephemeral().new_id


def record(
    *,
    parent: ChainRecord | None = None,
    ttl: float = 60.0,
    now: float | None = None,
    hops: tuple[Hop, ...] | None = None,
) -> ChainRecord:
    now = time.time() if now is None else now
    if hops is None:
        hops = (Hop("frontdesk", "spiffe://cluster.local/ns/a/sa/frontdesk"), Hop("admin-agent", ""))
        if parent is not None:
            hops = (*parent.hops, Hop("worker", "spiffe://cluster.local/ns/w/sa/worker"))
    lineage = (*parent.lineage, parent.id) if parent is not None else ()
    expires = now + ttl if parent is None else min(now + ttl, parent.expires)
    return ChainRecord(NEW_ID(), hops, lineage, now, expires)


# --- a real redis-server for this module ---------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("chain-store-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client to look at (and tamper with) what the store wrote; a clean database."""
    if redis_server.proc is None:  # a test that stopped it failed before restarting it
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def redis_stores(redis_server: RedisServer, admin: redis.Redis) -> Iterator[list[RedisChainStore]]:
    """Stores to close at the end of the test, whatever it did."""
    opened: list[RedisChainStore] = []
    yield opened
    for store in opened:
        store.close()


def open_redis(
    server: RedisServer, opened: list[RedisChainStore], *, started: bool = False, clock=time.time
) -> RedisChainStore:
    store = RedisChainStore(server.url, clock=clock)
    opened.append(store)
    if started:
        store.start()
        assert store.wait_available(5), "the store never heard Redis"
    return store


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command the server has executed so far, minus our own INFO calls."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items() if name != "cmdstat_info"}


def commands_between(client: redis.Redis, before: dict[str, int]) -> dict[str, int]:
    after = command_calls(client)
    return {name: calls - before.get(name, 0) for name, calls in after.items() if calls != before.get(name, 0)}


# --- the same contract on both stores -------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_store(store_kind: str, request: pytest.FixtureRequest):
    """make_store(clock=...) -> a fresh store of the parametrized kind (Redis: sharing one server)."""
    if store_kind == "memory":
        return lambda clock=time.time: MemoryChainStore(clock=clock)
    server = request.getfixturevalue("redis_server")
    opened = request.getfixturevalue("redis_stores")
    return lambda clock=time.time: open_redis(server, opened, clock=clock)


def test_put_then_get(make_store):
    store = make_store()
    root = record()
    child = record(parent=root)
    store.put(root)
    store.put(child)
    assert store.get(root.id) == root
    assert store.get(child.id) == child
    assert store.get(child.id).parent == root.id
    assert store.get(child.id).profiles == ("frontdesk", "admin-agent", "worker")


def test_unknown_id_is_none(make_store):
    store = make_store()
    store.put(record())
    assert store.get(NEW_ID()) is None
    assert store.get("") is None


def test_records_are_immutable(make_store, store_kind):
    store = make_store()
    first = record()
    impostor = ChainRecord(first.id, (Hop("mallory", ""),), (), first.created, first.expires + 3600)
    store.put(first)
    if store_kind == "redis":
        with pytest.raises(StoreUnavailable, match="already taken"):
            store.put(impostor)
    else:
        store.put(impostor)  # the in-process store keeps the first write silently
    assert store.get(first.id) == first


def test_expiry_by_clock(make_store):
    clock = Clock()
    store = make_store(clock=clock)
    short = record(now=clock.now, ttl=10)
    long = record(now=clock.now, ttl=100)
    store.put(short)
    store.put(long)
    clock.now += 9.9
    assert store.get(short.id) == short
    clock.now += 0.1  # exactly at expiry: gone
    assert store.get(short.id) is None
    assert store.get(long.id) == long
    clock.now += 1000
    assert store.get(long.id) is None


def test_expiry_in_real_time(make_store):
    store = make_store()
    brief = record(ttl=0.3)
    store.put(brief)
    assert store.get(brief.id) == brief
    time.sleep(0.45)
    assert store.get(brief.id) is None


def test_revoking_marks_the_chain_and_every_descendant(make_store):
    store = make_store()
    root = record()
    child = record(parent=root)
    grandchild = record(parent=child)
    sibling = record(parent=root)
    nephew = record(parent=sibling)
    stranger = record()
    everyone = (root, child, grandchild, sibling, nephew, stranger)
    for each in everyone:
        store.put(each)
    assert not any(store.is_revoked(each) for each in everyone)

    assert store.revoke(child.id) == child
    assert [store.is_revoked(each) for each in everyone] == [False, True, True, False, False, False]

    assert store.revoke(root.id) == root
    assert [store.is_revoked(each) for each in everyone] == [True, True, True, True, True, False]
    assert store.get(root.id) == root  # revocation is a separate fact: the record itself is unchanged


def test_revoking_an_id_without_a_record(make_store):
    """Nothing to return, but the revocation stands: another replica may still cache the
    record (or Redis lost it), so the id and its descendants must be denied anyway."""
    store = make_store()
    root = record()
    store.put(root)
    gone = record()  # never written here
    child_of_gone = record(parent=gone)
    assert store.revoke(gone.id) is None
    assert store.is_revoked(gone) and store.is_revoked(child_of_gone)
    assert not store.is_revoked(root)
    orphan = ChainRecord(NEW_ID(), root.hops, (NEW_ID(),), root.created, root.expires)
    assert not store.is_revoked(orphan)  # an ancestor nobody revoked


def test_memory_store_is_always_available():
    store = MemoryChainStore()
    store.start()
    assert store.available() and store.wait_available(0)
    store.close()


def test_open_store_picks_the_backend(redis_server, admin):
    memory = open_store(None, 0.25)
    assert isinstance(memory, MemoryChainStore) and "single replica" in memory.description
    shared = open_store(redis_server.url, 0.25)
    try:
        assert isinstance(shared, RedisChainStore) and "redis" in shared.description
    finally:
        shared.close()


def test_redis_url_password_is_not_in_the_description():
    store = RedisChainStore("redis://user:s3cret@127.0.0.1:1/0")
    try:
        assert "s3cret" not in store.description
    finally:
        store.close()


# --- Redis: what travels over the wire ------------------------------------------------------


def test_record_is_written_with_the_chain_ttl(redis_server, admin, redis_stores):
    store = open_redis(redis_server, redis_stores)
    root = record(ttl=90)
    store.put(root)
    assert 88_000 < admin.pttl(RECORD_PREFIX + root.id) <= 90_000
    assert ChainRecord.decode(admin.get(RECORD_PREFIX + root.id)) == root
    with pytest.raises(StoreUnavailable, match="already expired"):
        store.put(record(ttl=-1))


def test_expired_record_is_gone_from_redis_too(redis_server, admin, redis_stores):
    writer = open_redis(redis_server, redis_stores)
    brief = record(ttl=0.2)
    writer.put(brief)
    time.sleep(0.35)
    assert admin.exists(RECORD_PREFIX + brief.id) == 0
    reader = open_redis(redis_server, redis_stores)  # no cache: asks Redis
    assert reader.get(brief.id) is None


def test_a_second_read_is_served_from_the_local_cache(redis_server, admin, redis_stores):
    writer = open_redis(redis_server, redis_stores)
    reader = open_redis(redis_server, redis_stores)
    root = record()
    writer.put(root)
    reader.get(NEW_ID())  # connect first: connection set-up is not a per-read cost

    before = command_calls(admin)
    assert reader.get(root.id) == root
    assert commands_between(admin, before) == {"get": 1}

    before = command_calls(admin)
    for _ in range(50):
        assert reader.get(root.id) == root
    assert commands_between(admin, before) == {}  # not one command reached Redis

    before = command_calls(admin)
    assert writer.get(root.id) == root  # the writer cached what it wrote
    assert commands_between(admin, before) == {}


def test_a_cache_miss_costs_exactly_one_round_trip(redis_server, admin, redis_stores):
    writer = open_redis(redis_server, redis_stores)
    reader = open_redis(redis_server, redis_stores)
    records = [record() for _ in range(5)]
    for each in records:
        writer.put(each)
    reader.get(NEW_ID())
    for each in records:
        before = command_calls(admin)
        assert reader.get(each.id) == each
        assert commands_between(admin, before) == {"get": 1}
    before = command_calls(admin)
    assert reader.get(NEW_ID()) is None  # an unknown id is a miss too: one GET, nothing else
    assert commands_between(admin, before) == {"get": 1}


def test_a_mint_costs_one_write(redis_server, admin, redis_stores):
    store = open_redis(redis_server, redis_stores)
    store.get(NEW_ID())
    before = command_calls(admin)
    store.put(record())
    assert commands_between(admin, before) == {"set": 1}


def test_cache_serves_reads_while_redis_is_stopped(redis_server, admin, redis_stores):
    store = open_redis(redis_server, redis_stores)
    seen, unseen = record(), record()
    store.put(seen)
    open_redis(redis_server, redis_stores).put(unseen)
    redis_server.stop()
    try:
        assert store.get(seen.id) == seen  # no round trip needed: Redis is not even running
        with pytest.raises(StoreUnavailable):
            store.get(unseen.id)
        with pytest.raises(StoreUnavailable):
            store.put(record())
        with pytest.raises(StoreUnavailable):
            store.revoke(seen.id)
    finally:
        redis_server.start()


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(b"not json", id="not json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[1, 2, 3]", id="json array"),
        pytest.param(
            b'{"v": 2, "id": "ID", "hops": [["a", ""]], "lineage": [], "created": 1, "expires": 9e12}',
            id="future version",
        ),
        pytest.param(b'{"v": 1, "id": "ID", "hops": [], "lineage": [], "created": 1, "expires": 9e12}', id="no hops"),
        pytest.param(
            b'{"v": 1, "id": "ID", "hops": [["a"]], "lineage": [], "created": 1, "expires": 9e12}', id="short hop"
        ),
        pytest.param(b'{"v": 1, "id": "ID", "hops": [["a", ""]], "lineage": [], "created": 1}', id="no expiry"),
        pytest.param(
            b'{"v": 1, "id": "ID", "hops": [["a", ""]], "lineage": [], "created": 1, "expires": "soon"}',
            id="bad expiry",
        ),
        pytest.param(
            b'{"v": 1, "id": "OTHER", "hops": [["a", ""]], "lineage": [], "created": 1, "expires": 9e12}',
            id="names another id",
        ),
        pytest.param(b"\xff\xfe\x00", id="binary"),
    ],
)
def test_a_corrupt_record_is_store_unavailable(redis_server, admin, redis_stores, stored):
    chain_id = NEW_ID()
    admin.set(
        RECORD_PREFIX + chain_id,
        stored.replace(b'"ID"', orjson.dumps(chain_id)).replace(b'"OTHER"', orjson.dumps(NEW_ID())),
    )
    store = open_redis(redis_server, redis_stores)
    for _ in range(2):  # and it is not cached as if it were good
        with pytest.raises(StoreUnavailable):
            store.get(chain_id)


def test_a_corrupt_record_fails_the_chain_closed(redis_server, admin, redis_stores):
    store = open_redis(redis_server, redis_stores, started=True)
    keys = ChainKeys.ephemeral()
    chain_id = keys.new_id()
    admin.set(RECORD_PREFIX + chain_id, b"{}")
    from authz.check.delegation import ChainRefusal

    with pytest.raises(ChainRefusal) as caught:
        ChainStep(store, keys).verify(keys.sign(chain_id), "x-delegation-chain")
    assert caught.value.verdict.reason == "chain_store_unavailable"


# --- Redis: revocation between replicas, and liveness ----------------------------------------


def test_revocation_reaches_another_replica_within_a_second(redis_server, admin, redis_stores):
    replica = open_redis(redis_server, redis_stores, started=True)
    operator = open_redis(redis_server, redis_stores)  # e.g. `mandate chain revoke`
    root = record()
    child = record(parent=root)
    other = record()
    for each in (root, child, other):
        replica.put(each)
        assert replica.get(each.id) == each  # cached on this replica
    started = time.monotonic()
    assert operator.revoke(root.id) == root
    wait_until(lambda: replica.is_revoked(child), 1.0, "the revocation to reach the replica")
    assert time.monotonic() - started < 1.0
    assert replica.is_revoked(root) and not replica.is_revoked(other)
    assert admin.zscore(REVOKED_KEY, root.id) is not None
    assert operator.revoked_now(child) and not operator.revoked_now(other)


def test_a_replica_started_later_knows_earlier_revocations(redis_server, admin, redis_stores):
    first = open_redis(redis_server, redis_stores)
    root = record()
    first.put(root)
    first.revoke(root.id)
    late = open_redis(redis_server, redis_stores, started=True)
    child = record(parent=root)
    assert late.is_revoked(root) and late.is_revoked(child)


def test_unavailable_within_a_second_of_redis_stopping_and_back_after_restart(redis_server, admin, redis_stores):
    store = open_redis(redis_server, redis_stores, started=True)
    root = record(ttl=600)
    store.put(root)
    assert store.available()

    redis_server.stop()
    stopped = time.monotonic()
    wait_until(lambda: not store.available(), 1.0, "available() to turn false")
    assert time.monotonic() - stopped < 1.0
    assert store.get(root.id) == root  # still in the local cache, but ChainStep refuses it (below)
    with pytest.raises(StoreUnavailable):
        store.get(NEW_ID())

    redis_server.start()  # same port, empty (no persistence); same store object
    assert store.wait_available(5), "the store did not recover without a restart"
    assert store.get(root.id) is None  # Redis lost it; the replica forgot its cache on reconnecting
    again = record()
    store.put(again)  # the very first write after recovery succeeds
    assert open_redis(redis_server, redis_stores).get(again.id) == again
    # and it hears revocations again
    observer = open_redis(redis_server, redis_stores)
    observer.revoke(again.id)
    wait_until(lambda: store.is_revoked(again), 1.0, "a revocation after recovery")


def test_unavailable_within_a_second_of_redis_hanging(redis_server, admin, redis_stores):
    """A paused Redis accepts nothing and answers nothing: the missing pongs give it away."""
    store = open_redis(redis_server, redis_stores, started=True)
    cached = record()
    store.put(cached)
    redis_server.pause()
    paused = time.monotonic()
    try:
        wait_until(lambda: not store.available(), 1.0, "available() to turn false")
        assert time.monotonic() - paused < 1.0
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get(NEW_ID())  # bounded by the command timeout, no hang
        assert time.monotonic() - began < 1.0
    finally:
        redis_server.resume()
    assert store.wait_available(5)


# --- the decision when the store is down (SPEC §5 "Store down") --------------------------------


def a2a_to_billing() -> AuthzInput:
    body = orjson.dumps({"jsonrpc": "2.0", "id": "x", "method": "SendMessage", "params": {}})
    return AuthzInput(method="POST", path="/", host=BILLING_HOST, body=body, source_principal=SUPPORT)


def billing_tool(name: str, token: str | None) -> AuthzInput:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}})
    headers = {"x-delegation-chain": token} if token else {}
    return AuthzInput(
        method="POST",
        path="/mcp",
        host="billing-db-mcp.billing.svc.cluster.local",
        headers=headers,
        body=body,
        source_principal=BILLING,
    )


def test_a_record_rewritten_in_redis_is_refused_as_forged(example_policy, redis_server, admin, redis_stores):
    """Write access to Redis is not privilege: records are sealed with the chain key, so a
    chain whose root was rewritten from support-agent (whose grant to billing-agent is
    lookup_invoice only) to orchestrator (which grants refund) is refused, not widened."""
    keys = ChainKeys.ephemeral()
    minting = Authorizer(example_policy, chains=ChainStep(open_redis(redis_server, redis_stores, started=True), keys))
    token = minting.decide(a2a_to_billing()).minted_token
    assert minting.decide(billing_tool("refund", token)).verdict.reason == "tool_not_allowed"
    stored = orjson.loads(admin.get(RECORD_PREFIX + keys.verify(token)))
    stored["hops"][0] = ["orchestrator", ORCHESTRATOR]
    admin.set(RECORD_PREFIX + keys.verify(token), orjson.dumps(stored), keepttl=True)
    reader = Authorizer(example_policy, chains=ChainStep(open_redis(redis_server, redis_stores, started=True), keys))
    decision = reader.decide(billing_tool("refund", token))
    assert (decision.result, decision.verdict.reason, decision.chain_events) == ("deny", "chain_forged", ["forged"])
    assert "tampered" in decision.verdict.message


def test_chains_fail_closed_while_redis_is_down_and_recover(example_policy, redis_server, admin, redis_stores):
    store = open_redis(redis_server, redis_stores, started=True)
    keys = ChainKeys.ephemeral()
    authorizer = Authorizer(example_policy, chains=ChainStep(store, keys))
    minted = authorizer.decide(a2a_to_billing())
    assert minted.result == "allow" and minted.minted_token
    token = minted.minted_token
    assert authorizer.decide(billing_tool("lookup_invoice", token)).result == "allow"

    redis_server.stop()
    try:
        wait_until(lambda: not store.available(), 1.0, "the store to notice")
        chained = authorizer.decide(billing_tool("lookup_invoice", token))  # cached record, but revocations unheard
        assert (chained.result, chained.verdict.reason) == ("deny", "chain_store_unavailable")
        assert chained.chain_events == ["store_unavailable"]
        delegating = authorizer.decide(a2a_to_billing())  # would mint
        assert (delegating.result, delegating.verdict.reason) == ("deny", "chain_store_unavailable")
        assert delegating.minted_token == "" and delegating.strip_chain_header  # no stale token forwarded
        own = authorizer.decide(billing_tool("refund", None))  # no chain involved: decided as usual
        assert own.result == "allow"
        forged = authorizer.decide(billing_tool("lookup_invoice", token[:-1] + ("A" if token[-1] != "A" else "B")))
        assert forged.verdict.reason == "chain_forged"  # the MAC is checked before the store is asked
    finally:
        redis_server.start()
    assert store.wait_available(5)  # the same Authorizer and store recover by themselves
    # the restarted Redis lost its records (no persistence): every replica, this one included,
    # now finds the old chain unknown, and the delegating call mints a new one (no stale reuse)
    assert authorizer.decide(billing_tool("lookup_invoice", token)).verdict.reason == "chain_unknown"
    other = Authorizer(example_policy, chains=ChainStep(open_redis(redis_server, redis_stores, started=True), keys))
    assert other.decide(billing_tool("lookup_invoice", token)).verdict.reason == "chain_unknown"
    fresh = authorizer.decide(a2a_to_billing())
    assert fresh.result == "allow" and fresh.chain_events == ["minted"] and fresh.minted_token != token
    assert authorizer.decide(billing_tool("lookup_invoice", fresh.minted_token)).result == "allow"
    assert other.decide(billing_tool("lookup_invoice", fresh.minted_token)).result == "allow"


# --- decoding what Redis hands back --------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_is_a_record_or_store_unavailable(raw):
    try:
        ChainRecord.decode(raw)
    except StoreUnavailable:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "v": st.just(1) | json_values,
            "id": st.text(max_size=5) | json_values,
            "hops": json_values | st.just([["a", ""]]),
            "lineage": json_values | st.just([]),
            "created": json_values,
            "expires": json_values,
        },
    )
)
def test_decoding_arbitrary_json_is_a_record_or_store_unavailable(data):
    try:
        decoded = ChainRecord.decode(orjson.dumps(data))
    except StoreUnavailable:
        return
    assert decoded.hops  # never a record without hops


def test_round_trip_encoding():
    root = record()
    child = record(parent=root)
    assert ChainRecord.decode(child.encode()) == child
    assert ChainRecord.decode(root.encode()) == root


def test_a_busy_replica_still_hears_its_store(example_policy, redis_server, admin, redis_stores):
    """A thread deciding back to back starves the listener thread of the GIL; the request
    path then reads the pongs itself. Before it did, a quarter of these checks found the
    (healthy) store unavailable, and chained calls were wrongly denied."""
    store = open_redis(redis_server, redis_stores, started=True)
    authorizer = Authorizer(example_policy)
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "list_issues", "arguments": {"repo": "acme/web"}},
        }
    )
    request = AuthzInput(
        method="POST", path="/mcp", host="github-mcp.tools.svc.cluster.local", body=body, source_principal=SUPPORT
    )
    assert authorizer.decide(request).verdict.allowed  # a decision with a CEL `when`, as busy as they come
    checks = unavailable = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        authorizer.decide(request)
        checks += 1
        unavailable += not store.available()
    assert checks > 10_000 and unavailable <= checks // 1000, (unavailable, checks)


def test_a_seal_is_checked_again_for_every_new_record_object():
    """The seal check is skipped only for the very object already checked: a record the
    store hands back anew (re-read after a reconnect, say) is checked again."""
    from dataclasses import replace

    store = MemoryChainStore()
    step = ChainStep(store, ChainKeys.ephemeral())
    now = time.time()
    minted = step.issue((Hop("support-agent", SUPPORT), Hop("billing-agent", "")), (), now, now + 60)
    assert step.verify(minted.token, "x-delegation-chain") is minted.record
    widened = replace(minted.record, hops=(Hop("orchestrator", ORCHESTRATOR), Hop("billing-agent", "")))
    store._records.put(minted.record.id, widened, 1)  # what a write to the store behind our back looks like
    from authz.check.delegation import ChainRefusal

    with pytest.raises(ChainRefusal) as caught:
        step.verify(minted.token, "x-delegation-chain")
    assert caught.value.verdict.reason == "chain_forged"


def test_the_in_process_store_holds_a_bounded_number_of_live_records():
    """Red-team finding 5: past its limit the store rebuilt its dict on every write (35 ms per
    minting call at 200,000 records) and held any number of live ones. It now drops expired
    records from the front and, when still full, the oldest live one, which is then unknown:
    denied, never allowed."""
    clock = [1000.0]
    store = MemoryChainStore(clock=lambda: clock[0], max_records=100)
    records = [
        ChainRecord(f"id-{index}", (Hop("a", ""),), (), clock[0], clock[0] + (10 if index < 50 else 1000))
        for index in range(150)
    ]
    for record in records[:100]:
        store.put(record)
    clock[0] += 60  # the first fifty expire
    for record in records[100:]:
        store.put(record)
    assert len(store) == 100 and store.evicted_live == 0
    assert all(store.get(record.id) is record for record in records[50:])
    store.put(ChainRecord("one-more", (Hop("a", ""),), (), clock[0], clock[0] + 1000))
    assert len(store) == 100 and store.evicted_live == 1
    assert store.get("id-50") is None and store.get("one-more") is not None
