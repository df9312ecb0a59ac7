"""The chain store on the Redis deployments `--redis` accepts: TLS (rediss://) and Redis
Cluster (redis+cluster://), each a real redis-server. Two store instances stand for two
Mandate replicas: what one writes or revokes, the other must see."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.chains.redis_store import RedisChainStore
from authz.chains.store import ChainRecord, Hop, StoreUnavailable
from authz.chains.tokens import ChainKeys
from tests.harness.pki import MeshPKI
from tests.harness.processes import wait_until
from tests.harness.redis import RedisClusterNodes, RedisServer, cluster_port


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, MeshPKI]]:
    pki = MeshPKI(tmp_path_factory.mktemp("redis-pki"))
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=pki.server, ca_cert=pki.ca_cert).start()
    yield server, pki
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster")).start()
    yield nodes
    nodes.stop()


def replicas(url: str) -> Iterator[tuple[RedisChainStore, RedisChainStore]]:
    first, second = RedisChainStore(url), RedisChainStore(url)
    for store in (first, second):
        store.start()
        assert store.wait_available(5), f"{store.description} never became available"
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def record(parent: ChainRecord | None = None) -> ChainRecord:
    now = time.time()
    hops = (Hop("frontdesk", "spiffe://cluster.local/ns/a/sa/frontdesk"), Hop("admin-agent", ""))
    lineage = (*parent.lineage, parent.id) if parent else ()
    return ChainRecord(ChainKeys.ephemeral().new_id(), hops, lineage, now, now + 60)


def shares_chains(first: RedisChainStore, second: RedisChainStore) -> None:
    """Records written by one replica are read by the other; a revocation reaches both."""
    roots = [record() for _ in range(20)]  # enough ids to land on every cluster slot range
    for root in roots:
        first.put(root)
    assert [second.get(root.id) for root in roots] == roots
    child = record(parent=roots[0])
    second.put(child)
    assert first.get(child.id) == child
    with pytest.raises(StoreUnavailable):
        first.put(roots[1])  # records are immutable: an id is written once
    assert second.revoke(roots[0].id) == roots[0]
    wait_until(lambda: first.is_revoked(child), 1.0, "the revocation to reach the other replica")
    assert not first.is_revoked(roots[1])
    assert first.revoked_now(child)


def test_tls_store_is_shared_between_replicas(tls_redis: tuple[RedisServer, MeshPKI]) -> None:
    server, _ = tls_redis
    for first, second in replicas(server.url):
        shares_chains(first, second)


def test_tls_store_refuses_a_server_it_cannot_verify(tls_redis: tuple[RedisServer, MeshPKI], tmp_path: Path) -> None:
    """Without the CA the server's certificate does not verify: the store never becomes
    available, so chains fail closed rather than trusting an unauthenticated Redis."""
    server, _ = tls_redis
    other = MeshPKI(tmp_path / "other-pki")
    store = RedisChainStore(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={other.ca_cert}")
    store.start()
    try:
        assert not store.wait_available(1.5)
        with pytest.raises(StoreUnavailable):
            store.get(record().id)
    finally:
        store.close()


def test_cluster_store_is_shared_between_replicas(cluster: RedisClusterNodes) -> None:
    for first, second in replicas(cluster.url):
        shares_chains(first, second)


def test_store_started_before_its_cluster_connects_when_it_comes_up(tmp_path: Path) -> None:
    """A cluster client connects as it is built; a replica started while the cluster is down
    must not crash, and must serve chains once the cluster is reachable."""
    nodes = RedisClusterNodes(tmp_path / "late")
    for node in nodes.nodes:
        node.port = cluster_port()
    store = RedisChainStore(f"redis+cluster://127.0.0.1:{nodes.nodes[0].port}")
    store.start()
    try:
        assert not store.wait_available(0.5)
        with pytest.raises(StoreUnavailable):
            store.put(record())
        nodes.start()
        assert store.wait_available(10)
        root = record()
        store.put(root)
        assert store.get(root.id) == root
    finally:
        store.close()
        nodes.stop()


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="redis://, rediss://"):
        RedisChainStore("http://127.0.0.1:6379")
