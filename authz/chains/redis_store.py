"""The shared chain store: Redis (or Redis Cluster), with a local cache in front of it.

Request path: a record already seen is served from the local cache (records are immutable,
so the cache never goes stale); a miss costs exactly one GET; a mint costs one SET NX.
Every command has a bounded timeout and no retries, so a slow Redis turns into a prompt
`chain_store_unavailable` deny instead of a hang past Envoy's own timeout.

Revocations live in one sorted set (id -> keep-until) and are announced on a pub/sub
channel. A listener thread keeps a local copy of the revoked ids and PINGs over its
subscription; if it has not heard Redis within `LIVENESS` seconds, `available()` turns
false and chained requests fail closed, as SPEC §5 asks, until it has resubscribed and
re-read the revoked set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from authz.chains.store import ChainRecord, StoreUnavailable

log = logging.getLogger("mandate")

RECORD_PREFIX = "mandate:chain:"
REVOKED_KEY = "mandate:revoked"
REVOCATION_CHANNEL = "mandate:revocations"
LIVENESS = 0.75  # seconds without a pong before chains fail closed (SPEC: notice within 1 s)
PING_EVERY = 0.2
REVOCATION_KEPT = 3600.0  # seconds a revocation outlives the revoked chain's expiry (clock skew)
UNKNOWN_EXPIRY = 86400.0  # seconds a revocation of a chain with no record is assumed to need
MAX_CACHED = 100_000
FAILURES = (RedisError, RedisClusterException, OSError)  # cluster errors are not RedisErrors


def connect(url: str, timeout: float) -> Any:
    """A client for `url` with bounded timeouts and no retries (a retry would double them)."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    for scheme in ("redis+cluster://", "rediss+cluster://"):
        if url.startswith(scheme):
            return RedisCluster.from_url(url.replace("+cluster", "", 1), **options)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"--redis {url!r}: expected redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"
        )
    return redis.Redis.from_url(url, **options)


class RedisChainStore:
    def __init__(self, url: str, timeout: float = 0.25, clock: Callable[[], float] = time.time) -> None:
        self.description = f"redis ({_redact(url)})"
        self._url, self._timeout = url, timeout
        self._connect_lock = threading.Lock()
        self._client: Any = None
        try:
            self._client = connect(url, timeout)
        except (RedisError, RedisClusterException):
            pass  # a cluster client connects when built; the listener keeps trying
        self._clock = clock
        self._cache: dict[str, ChainRecord] = {}
        self._revoked: dict[str, float] = {}  # id -> keep until (unix seconds)
        self._last_heard = float("-inf")  # monotonic time of the last pong or message
        self.generation = 0  # connections made by the listener; see _listen
        self._pubsub: Any = None  # the live subscription, used only under _pump_lock
        self._pump_lock = threading.Lock()
        self._next_ping = 0.0
        self._requests_seen_until = 0.0  # monotonic; see available() and _listen
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    @property
    def _redis(self) -> Any:
        """The client, built on first use if the store was down when Mandate started."""
        client = self._client
        if client is None:
            with self._connect_lock:
                try:
                    client = self._client = self._client or connect(self._url, self._timeout)
                except (RedisError, RedisClusterException) as exc:
                    raise StoreUnavailable(f"connecting: {exc}") from None
        return client

    # --- request path ------------------------------------------------------------------

    def available(self) -> bool:
        now = time.monotonic()
        self._requests_seen_until = now + PING_EVERY / 2  # the listener steps back while requests flow
        silent = now - self._last_heard
        if silent > PING_EVERY:
            self._pump()  # a busy server pings and reads the pongs itself (see _pump)
            silent = time.monotonic() - self._last_heard
        return silent < LIVENESS

    def get(self, chain_id: str) -> ChainRecord | None:
        record = self._cache.get(chain_id)
        if record is None:
            try:
                raw = self._redis.get(RECORD_PREFIX + chain_id)
            except FAILURES as exc:
                raise StoreUnavailable(f"reading chain {chain_id}: {exc}") from None
            if raw is None:
                return None
            record = ChainRecord.decode(raw)
            if record.id != chain_id:
                raise StoreUnavailable(f"chain record under {chain_id} names {record.id}")
            self._remember(record)
        return record if record.expires > self._clock() else None

    def put(self, record: ChainRecord) -> None:
        ttl_ms = int((record.expires - self._clock()) * 1000)
        if ttl_ms <= 0:
            raise StoreUnavailable(f"chain {record.id} would be written already expired")
        try:
            written = self._redis.set(RECORD_PREFIX + record.id, record.encode(), nx=True, px=ttl_ms)
        except FAILURES as exc:
            raise StoreUnavailable(f"writing chain {record.id}: {exc}") from None
        if not written:
            raise StoreUnavailable(f"chain id {record.id} is already taken")
        self._remember(record)

    def is_revoked(self, record: ChainRecord) -> bool:
        revoked = self._revoked
        return bool(revoked) and (record.id in revoked or any(ancestor in revoked for ancestor in record.lineage))

    def _remember(self, record: ChainRecord) -> None:
        if len(self._cache) >= MAX_CACHED:
            now = self._clock()
            self._cache = {key: value for key, value in self._cache.items() if value.expires > now}
            if len(self._cache) >= MAX_CACHED:
                self._cache = {}
        self._cache[record.id] = record

    # --- revocation ----------------------------------------------------------------------

    def revoke(self, chain_id: str) -> ChainRecord | None:
        """Record the revocation, then announce it; every replica denies it within LIVENESS."""
        try:
            raw = self._redis.get(RECORD_PREFIX + chain_id)
            record = ChainRecord.decode(raw) if raw is not None else None
            expires = record.expires if record is not None else self._clock() + UNKNOWN_EXPIRY
            keep_until = max(expires, self._clock()) + REVOCATION_KEPT
            self._redis.zadd(REVOKED_KEY, {chain_id: keep_until})
            self._redis.publish(REVOCATION_CHANNEL, f"{chain_id} {keep_until}")
        except FAILURES as exc:
            raise StoreUnavailable(f"revoking chain {chain_id}: {exc}") from None
        self._revoked[chain_id] = keep_until
        return record

    def revoked_now(self, record: ChainRecord) -> bool:
        """Ask Redis (not the local copy) whether the chain or an ancestor is revoked: for the CLI."""
        try:
            scores = self._redis.zmscore(REVOKED_KEY, [record.id, *record.lineage])
        except FAILURES as exc:
            raise StoreUnavailable(f"reading revocations: {exc}") from None
        return any(score is not None and score > self._clock() for score in scores)

    def start(self) -> None:
        """Start listening for revocations; returns at once (chains fail closed until heard)."""
        self._listener = threading.Thread(target=self._listen, name="chain-revocations", daemon=True)
        self._listener.start()

    def wait_available(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.available() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.available()

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(2)
        if self._client is not None:
            self._client.close()

    def _listen(self) -> None:
        """Keep a subscription: (re)subscribe, re-read revocations, then pump until it fails."""
        healthy = True
        while not self._stop.is_set():
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(REVOCATION_CHANNEL)  # subscribe first, then read: no gap
                self._load_revocations()
                if self.generation:
                    # Reconnected: Redis may have restarted without its data. Forget cached
                    # records so every replica agrees on what exists, and (through
                    # `generation`) stop re-handing chains minted before.
                    self._cache = {}
                self.generation += 1
                with self._pump_lock:
                    self._pubsub, self._next_ping = pubsub, 0.0
                self._last_heard = time.monotonic()
                if not healthy:
                    log.warning("chain store reachable again: delegation chains served")
                healthy = True
                while not self._stop.is_set() and self._pubsub is pubsub:
                    now = time.monotonic()
                    if now > self._requests_seen_until or now - self._last_heard > PING_EVERY:
                        self._pump()  # idle (or nobody else pumped): notice a dropped connection at once
                    self._stop.wait(PING_EVERY / 4)  # sleeping, not holding the GIL or the lock
            except (*FAILURES, StoreUnavailable, ValueError) as exc:
                if healthy:
                    log.error(
                        "chain store unreachable (%s): requests with or minting chains are denied until it is back", exc
                    )
                healthy = False
                self._stop.wait(0.1)
            finally:
                self._drop_subscription()

    def _pump(self) -> None:
        """Ping when due and handle whatever has arrived, without waiting for anything.

        Request threads call it when the last pong is getting old (`available`); the listener
        thread every 50 ms while no requests flow, and otherwise only when they have not.
        Under full CPU load a lone listener is starved of the GIL for longer than LIVENESS, and
        would hold this lock while it waits: replies sitting unread would make a healthy store
        look dead. The lock is only ever tried, never waited for.
        """
        if not self._pump_lock.acquire(blocking=False):
            return
        try:
            pubsub = self._pubsub
            if pubsub is None:
                return
            now = time.monotonic()
            if now >= self._next_ping:
                pubsub.ping()
                self._next_ping = now + PING_EVERY
            while (message := pubsub.get_message(timeout=0.0)) is not None:
                self._last_heard = time.monotonic()
                if message["type"] == "message":
                    chain_id, _, until = message["data"].decode("ascii", "replace").partition(" ")
                    self._revoked[chain_id] = float(until or self._clock() + REVOCATION_KEPT)
                    log.info("chain %s revoked", chain_id)
        except (*FAILURES, ValueError):
            self._last_heard = float("-inf")
            self._pubsub = None  # the listener notices and reconnects
        finally:
            self._pump_lock.release()

    def _drop_subscription(self) -> None:
        with self._pump_lock:
            pubsub, self._pubsub = self._pubsub, None
        self._last_heard = float("-inf")
        if pubsub is not None:
            try:
                pubsub.close()
            except FAILURES:
                pass

    def _load_revocations(self) -> None:
        now = self._clock()
        self._redis.zremrangebyscore(REVOKED_KEY, "-inf", now)
        for chain_id, until in self._redis.zrangebyscore(REVOKED_KEY, now, "+inf", withscores=True):
            self._revoked[chain_id.decode("ascii", "replace")] = until
        self._revoked = {key: until for key, until in self._revoked.items() if until > now}


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest
