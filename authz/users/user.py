"""Who a request acts for, once verified: the user of a JWT, of Envoy's verified claims, or of a chain."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

TOKEN, METADATA, CHAIN = "token", "metadata", "chain"  # where a request's user came from


@dataclass(frozen=True, slots=True)
class User:
    """One user: the same user is the same (`iss`, `sub`); `claims` are every verified claim.

    `text` is the claims as JSON: what a chain record seals, and what tells two tokens of one
    user apart. `expires` bounds every answer given for the user's token (inf for a chain's
    user, whom the chain's own expiry bounds); `key` is the fingerprint of the JWK that verified
    a token, so that an answer given for it ends when the issuer withdraws that key."""

    iss: str
    sub: str
    claims: dict[str, Any]
    text: str
    expires: float
    source: str
    key: bytes

    def __init__(
        self, iss: str, sub: str, claims: dict[str, Any], text: str, expires: float, source: str, key: bytes = b""
    ) -> None:
        object.__setattr__(self, "iss", iss)
        object.__setattr__(self, "sub", sub)
        object.__setattr__(self, "claims", claims)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "expires", expires)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "key", key)

    def same_person(self, other: User) -> bool:
        return self.iss == other.iss and self.sub == other.sub

    def for_chain(self) -> User:
        """The user as a chain minted for them records them: their claims, no expiry of their token's."""
        return User(self.iss, self.sub, self.claims, self.text, math.inf, CHAIN)


def chain_user(iss: str, sub: str, text: str) -> User:
    """The user a stored chain record names (its claims as the record sealed them)."""
    claims = orjson.loads(text)
    if type(claims) is not dict:
        raise ValueError("a chain's user claims must be a JSON object")
    return User(iss, sub, claims, text, math.inf, CHAIN)


@dataclass(frozen=True, slots=True)
class ActingUser:
    """The user a decision acts for, with their groups as this policy set's `groupsClaim` reads them."""

    user: User
    groups: tuple[str, ...]

    def __init__(self, user: User, groups: tuple[str, ...]) -> None:
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "groups", groups)

    def root(self) -> dict[str, Any]:
        """The `user` CEL variable."""
        user = self.user
        return {"sub": user.sub, "iss": user.iss, "groups": list(self.groups), "claims": user.claims}


def acting(user: User, groups_claim: str) -> ActingUser:
    """`groupsClaim` names a top-level list of strings; anything else there is no groups."""
    value = user.claims.get(groups_claim)
    groups: tuple[str, ...] = ()
    if isinstance(value, list) and all(isinstance(group, str) for group in value):
        groups = tuple(value)
    return ActingUser(user, groups)
