"""Stand-ins for what a ChainStep depends on, for the in-process tests: a clock the test sets,
and the in-process chain store behind a reachability switch."""

from __future__ import annotations

import time
from typing import Any

from authz.chains.memory import MemoryChainStore


class Clock:
    """Stands still at the time it was made until a test moves `now`."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class SwitchableStore:
    """The in-process store behind a switch (`up`), with a generation to bump (a Redis
    reconnect); a wrapper, since a compiled class cannot be subclassed from the tests."""

    def __init__(self, clock: Clock) -> None:
        self.inner = MemoryChainStore(clock=clock)
        self.up = True
        self.generation = 0

    def available(self) -> bool:
        return self.up

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
