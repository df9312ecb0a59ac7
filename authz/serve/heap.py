"""The garbage collector, set for a server that holds a large compiled policy and makes no
reference cycles per request (ANALYSIS.md, "The garbage collector")."""

from __future__ import annotations

import gc

# Young collections only re-walk what lives on (a Check leaves no cycles): fewer of them (ANALYSIS.md).
GEN0_THRESHOLD = 50_000


def freeze_heap() -> None:
    """Move what is alive now (the compiled policy, above all) out of the garbage collector's
    sight, so its full collections stop walking 10,000 profiles in the middle of a Check, and
    collect young objects less often (GEN0_THRESHOLD). Frozen objects are still freed by
    reference counting when a reload drops them."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD)
