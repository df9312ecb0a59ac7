"""Step 2b: who the request acts for (SPEC §10): the user of Envoy's verified claims or of a bearer
JWT, and, along a chain, the user the chain was minted for.

A user token that fails is refused here (401, `token_…`), before any rule is read: whether a
rule needs a user or not. A chain minted for a user makes every later hop act for that user
without the JWT; a JWT presented with a chain minted for someone else, or for no one, is refused
(`user_mismatch`), enforced like the chain's own integrity.
"""

from __future__ import annotations

from authz.chains.store import ChainRecord
from authz.check.delegation import ChainRefusal
from authz.check.request import AuthzInput
from authz.reasons import USER_MISMATCH
from authz.users.user import ActingUser, User, acting
from authz.users.verify import UserSettings

DEFAULT_GROUPS_CLAIM = "groups"  # a chain's user read after a reload took the users settings away


def presented_user(settings: UserSettings | None, request: AuthzInput, now: float) -> User | None:
    """The user the request itself carries: Envoy's verified claims first (they are not verified
    twice), else the token in the configured header; None without users settings or a user."""
    if settings is None:
        return None
    if request.jwt_authn:
        user = settings.from_metadata(request.jwt_authn, now)
        if user is not None:
            return user
    value = request.headers.get(settings.header)
    return None if value is None else settings.from_header(value, now)


def acting_user(presented: User | None, record: ChainRecord | None) -> User | None:
    """The user a decision acts for: the chain's, which a presented user must be."""
    if record is None:
        return presented
    root = record.user
    if presented is None:
        return root
    if root is None:
        raise ChainRefusal(
            USER_MISMATCH,
            f"a user token for {presented.sub!r} came with delegation chain {record.id}, which was minted for no "
            "user: a chain stays without one",
        )
    if not root.same_person(presented):
        raise ChainRefusal(
            USER_MISMATCH,
            f"a user token for {presented.sub!r} came with delegation chain {record.id}, which acts for another user",
        )
    return root


def acting_for(user: User | None, settings: UserSettings | None) -> ActingUser | None:
    """The user as rules and `when`s see them: with their groups, by this policy set's `groupsClaim`."""
    if user is None:
        return None
    return acting(user, settings.groups_claim if settings is not None else DEFAULT_GROUPS_CLAIM)
