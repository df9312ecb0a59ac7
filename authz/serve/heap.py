"""The garbage collector and the heap, set for a server that holds a large compiled policy and
makes no reference cycles per request (ANALYSIS.md, "The garbage collector" and "100,000
profiles"): what a Check may wait for while a policy set is loaded, swapped in, or freed."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from authz.policy.compiled import PolicySet

# Young collections only re-walk what lives on (a Check leaves no cycles): fewer of them (ANALYSIS.md).
GEN0_THRESHOLD = 50_000
# While a reload runs beside the Checks, the thread holding the GIL is asked to hand it over after
# this long (CPython's default is 5 ms, which a Check waiting for the GIL would wait out each time).
RELOAD_SWITCH_INTERVAL = 0.000_5
RELEASE_SLICE = 250  # entries of a replaced set freed at a time (a few hundred µs of deallocation)
RELEASE_WAIT = 5.0  # seconds to wait for the Checks still deciding with a replaced set


def freeze_heap() -> None:
    """Move what is alive now (the compiled policy, above all) out of the garbage collector's
    sight, so its full collections stop walking 10,000 profiles in the middle of a Check, and
    collect young objects less often (GEN0_THRESHOLD). Frozen objects are still freed by
    reference counting when a reload drops them. Once, at start: the full collection here walks
    the whole heap, which a reload must not do (`adopt`)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD)


@contextmanager
def switching_often() -> Iterator[None]:
    """Hand the GIL over every RELOAD_SWITCH_INTERVAL while a reload compiles or frees a set."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(RELOAD_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def adopt() -> None:
    """After a set built with the collector paused is in service: freeze it with everything else
    young, before the collector runs again. A collection would otherwise walk its millions of
    new objects (the first young one after the pause, then each older generation's), holding
    the GIL for as long; frozen, no collection walks them, and nothing in them is a cycle."""
    gc.freeze()


def release(replaced: list[PolicySet]) -> int:
    """Free the set in `replaced` (its only reference) a slice at a time, letting Checks run in
    between, rather than in one deallocation of millions of objects; returns the entries freed
    in slices. Checks that still decide with it are waited for (RELEASE_WAIT); a table anyone
    else still holds is left whole, to be freed whenever they let it go."""
    policy = replaced.pop()
    while policy.condition_results.forget(RELEASE_SLICE):  # its keys hold the conditions, which hold it: a cycle
        time.sleep(0)
    deadline = time.monotonic() + RELEASE_WAIT
    while sys.getrefcount(policy) > 2 and time.monotonic() < deadline:  # `policy`, and the argument
        time.sleep(0.01)
    if sys.getrefcount(policy) > 2:
        return 0
    tables = (
        policy.targets_by_host,
        policy.egress_hosts,
        policy.targets_by_principal.exact,
        policy.targets_by_principal.namespaces,
        policy.callers.exact,
        policy.callers.namespaces,
        policy.targets,
        policy.profiles,
    )
    freed = 0
    for table in tables:
        if sys.getrefcount(table) <= 4:  # its owner's field, `tables`, `table`, and the argument
            freed += _empty(table)
    return freed


def _empty(table: dict[str, Any]) -> int:
    entries = len(table)
    while table:
        for _ in range(min(RELEASE_SLICE, len(table))):
            table.popitem()
        time.sleep(0)  # let a Check waiting for the GIL have it
    return entries
