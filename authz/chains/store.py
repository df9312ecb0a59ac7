"""What a chain store holds and promises, and how to open one from `--redis`.

A record is written once (never updated) and lives until its expiry. Revocation is a
separate fact about an id; a chain is revoked when it or any ancestor in its lineage is,
so revoking a chain denies all its descendants without finding them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import orjson

from authz.users.user import User, chain_user


class StoreUnavailable(Exception):
    """The store could not be asked, or its answer cannot be trusted; chains fail closed."""


@dataclass(frozen=True, slots=True)
class Hop:
    profile: str  # the MissionProfile governing the hop
    principal: str  # its exact SPIFFE ID when Mandate saw it, "" when only the profile is known

    def __init__(self, profile: str, principal: str) -> None:
        object.__setattr__(self, "profile", profile)
        object.__setattr__(self, "principal", principal)


@dataclass(frozen=True, slots=True)
class ChainRecord:
    id: str
    hops: tuple[Hop, ...]  # root first, the current holder last
    lineage: tuple[str, ...]  # ids of every ancestor chain, root first; the parent is last
    created: float  # unix seconds
    expires: float
    seal: str = ""  # MAC over `content()` by a chain key, checked on every use
    user: User | None = None  # the user the chain acts for, from its root on (SPEC §10); sealed

    def __init__(
        self,
        id: str,
        hops: tuple[Hop, ...],
        lineage: tuple[str, ...],
        created: float,
        expires: float,
        seal: str = "",
        user: User | None = None,
    ) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "hops", hops)
        object.__setattr__(self, "lineage", lineage)
        object.__setattr__(self, "created", created)
        object.__setattr__(self, "expires", expires)
        object.__setattr__(self, "seal", seal)
        object.__setattr__(self, "user", user)

    @property
    def parent(self) -> str:
        return self.lineage[-1] if self.lineage else ""

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(hop.profile for hop in self.hops)

    def content(self) -> bytes:
        """The sealed fields, in a fixed order (a record without a user as records were before users)."""
        fields: list[object] = [
            self.id,
            [[hop.profile, hop.principal] for hop in self.hops],
            list(self.lineage),
            self.created,
            self.expires,
        ]
        if self.user is not None:
            fields.append(_user_fields(self.user))
        return orjson.dumps(fields)

    def encode(self) -> bytes:
        record: dict[str, object] = {
            "v": 1,
            "id": self.id,
            "hops": [[hop.profile, hop.principal] for hop in self.hops],
            "lineage": list(self.lineage),
            "created": self.created,
            "expires": self.expires,
            "seal": self.seal,
        }
        if self.user is not None:
            record["user"] = _user_fields(self.user)
        return orjson.dumps(record)

    @classmethod
    def decode(cls, raw: bytes) -> ChainRecord:
        """Parse a stored record strictly; StoreUnavailable if it is not one this version wrote."""
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or set(data) - {"user"} != _FIELDS or type(data["v"]) is not int:
                raise ValueError("not a version 1 chain record")
            if data["v"] != 1:
                raise ValueError("not a version 1 chain record")
            user = _decode_user(data.get("user"))
            hops = data["hops"]
            if not isinstance(hops, list) or not hops or not all(_is_hop(hop) for hop in hops):
                raise ValueError("hops must be a non-empty list of [profile, principal]")
            lineage = data["lineage"]
            if not isinstance(lineage, list) or not all(isinstance(i, str) and i for i in lineage):
                raise ValueError("lineage must be a list of chain ids")
            created, expires = data["created"], data["expires"]
            if not all(_is_time(value) for value in (created, expires)):
                raise ValueError("created and expires must be finite numbers")
            if not all(isinstance(data[key], str) for key in ("id", "seal")):
                raise ValueError("id and seal must be strings")
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise StoreUnavailable(f"unreadable chain record: {exc}") from None
        return cls(
            data["id"],
            tuple(Hop(*hop) for hop in hops),
            tuple(lineage),
            float(created),
            float(expires),
            data["seal"],
            user,
        )


_FIELDS = {"v", "id", "hops", "lineage", "created", "expires", "seal"}


def _user_fields(user: User) -> list[str]:
    return [user.iss, user.sub, user.text]


def _decode_user(value: object) -> User | None:
    """A record's `user`: [iss, sub, claims as JSON text]; absent in records minted without one."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(part, str) and part for part in value):
        raise ValueError("user must be [iss, sub, claims]")
    return chain_user(value[0], value[1], value[2])


def _is_hop(value: object) -> bool:
    return (
        isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value) and bool(value[0])
    )


def _is_time(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


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
        from authz.chains.memory import MemoryChainStore

        return MemoryChainStore()
    from authz.chains.redis_store import RedisChainStore

    return RedisChainStore(url, timeout=timeout)
