"""What a chain store holds and promises, and how to open one from `--redis`.

A record is written once (never updated) and lives until its expiry. Revocation is a
separate fact about an id; a chain is revoked when it or any ancestor in its lineage is,
so revoking a chain denies all its descendants without finding them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson


class StoreUnavailable(Exception):
    """The store could not be asked, or its answer cannot be trusted; chains fail closed."""


@dataclass(frozen=True, slots=True)
class Hop:
    profile: str  # the MissionProfile governing the hop
    principal: str  # its exact SPIFFE ID when Mandate saw it, "" when only the profile is known


@dataclass(frozen=True, slots=True)
class ChainRecord:
    id: str
    hops: tuple[Hop, ...]  # root first, the current holder last
    lineage: tuple[str, ...]  # ids of every ancestor chain, root first; the parent is last
    created: float  # unix seconds
    expires: float

    @property
    def parent(self) -> str:
        return self.lineage[-1] if self.lineage else ""

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(hop.profile for hop in self.hops)

    def encode(self) -> bytes:
        return orjson.dumps({
            "v": 1,
            "id": self.id,
            "hops": [[hop.profile, hop.principal] for hop in self.hops],
            "lineage": list(self.lineage),
            "created": self.created,
            "expires": self.expires,
        })

    @classmethod
    def decode(cls, raw: bytes) -> ChainRecord:
        """Parse a stored record; StoreUnavailable if it is not one this version wrote."""
        try:
            data = orjson.loads(raw)
            if data["v"] != 1:
                raise ValueError(f"record version {data['v']!r}")
            hops = tuple(Hop(str(profile), str(principal)) for profile, principal in data["hops"])
            record = cls(str(data["id"]), hops, tuple(str(i) for i in data["lineage"]), float(data["created"]), float(data["expires"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StoreUnavailable(f"unreadable chain record: {exc}") from None
        if not hops:
            raise StoreUnavailable("unreadable chain record: no hops")
        return record


class ChainStore(Protocol):
    """Implemented by MemoryChainStore (one replica) and RedisChainStore (shared)."""

    description: str
    generation: int  # changes whenever records written before may have been lost (a reconnect)

    def available(self) -> bool:
        """False when revocations may be going unheard; chained requests then fail closed."""

    def get(self, chain_id: str) -> ChainRecord | None:
        """The record, or None if unknown or expired; raises StoreUnavailable."""

    def put(self, record: ChainRecord) -> None:
        """Write a new record before its token is handed out; raises StoreUnavailable."""

    def is_revoked(self, record: ChainRecord) -> bool:
        """Whether the chain or any ancestor was revoked (a local lookup, never a round trip)."""

    def revoke(self, chain_id: str) -> ChainRecord | None:
        """Revoke a chain (and so its descendants) everywhere, even one whose record is gone
        (replicas may still cache it); returns the record, or None if it was not found."""

    def start(self) -> None:
        """Begin background work (listening for revocations); returns at once."""

    def wait_available(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for `available()`; its final value."""

    def close(self) -> None: ...


def open_store(url: str | None, timeout: float) -> ChainStore:
    """`--redis` absent: the in-process store; otherwise Redis (redis://, rediss://, and
    redis+cluster:// / rediss+cluster:// for Redis Cluster)."""
    if not url:
        from .memory import MemoryChainStore

        return MemoryChainStore()
    from .redis_store import RedisChainStore

    return RedisChainStore(url, timeout=timeout)
