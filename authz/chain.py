"""Step 4: the delegation chain a request runs under (SPEC §5).

A chain is one more input to the decision: the list of scopes that must *all* allow the
action, one per hop. Without a chain token the caller acts on its own behalf and the list is
just its own profile's scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from .policy.compiler import CompiledProfile, CompiledScope


@dataclass(frozen=True, slots=True)
class HopScope:
    """The scope one hop must stay within: `given_by` granted it (or owns it, for the caller)."""

    given_by: str
    scope: CompiledScope


@dataclass(frozen=True, slots=True)
class Chain:
    id: str
    hops: tuple[str, ...]  # profile names, root first, the current caller last
    scopes: tuple[HopScope, ...]  # the caller's own scope first, then each earlier hop's grant

    @property
    def depth(self) -> int:
        return len(self.hops)


def unchained(caller: CompiledProfile) -> Chain:
    return Chain("", (caller.name,), (HopScope(caller.name, caller.scope),))
