"""The one kind of memory Mandate keeps between requests: a map bounded in entries and in cost.

Invariants every cache and store built on it holds:
1. It never holds more than `max_entries` entries, nor more than `max_cost` units of cost
   (bytes, or an estimate of them) summed over its entries.
2. A new entry evicts the oldest ones until both bounds hold: first in, first out, O(1)
   amortised per insertion. It never empties itself wholesale, so a full cache keeps
   answering (no thrash) and an attacker's stream of unique keys only pushes out the oldest.
3. An entry costing more than `max_cost` on its own is not kept at all.
4. Reads take no lock (a dict read is atomic); writes take one, since request threads share it.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """A FIFO map with a bound on entries and on their summed cost."""

    __slots__ = ("_costs", "_lock", "_values", "cost", "max_cost", "max_entries")

    def __init__(self, max_entries: int, max_cost: int) -> None:
        self.max_entries = max_entries
        self.max_cost = max_cost
        self.cost = 0
        self._values: dict[K, V] = {}
        self._costs: dict[K, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def put(self, key: K, value: V, cost: int) -> bool:
        """Keep `value` under `key` (replacing one there); False when it is too costly to keep."""
        if cost > self.max_cost or self.max_entries <= 0:
            return False
        with self._lock:
            self._take(key)
            values = self._values
            while values and (len(values) >= self.max_entries or self.cost + cost > self.max_cost):
                self._take(next(iter(values)))
            values[key] = value
            self._costs[key] = cost
            self.cost += cost
        return True

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._take(key)

    def oldest(self) -> tuple[K, V] | None:
        """The oldest entry, left in place; None when empty."""
        with self._lock:
            if not self._values:
                return None
            key = next(iter(self._values))
            return key, self._values[key]

    def _take(self, key: K) -> V | None:
        value = self._values.pop(key, None)
        if value is not None:
            self.cost -= self._costs.pop(key)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values = {}
            self._costs = {}
            self.cost = 0
