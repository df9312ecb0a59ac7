"""The in-process chain store: the embedded default for a single replica (and for tests).

It holds at most MAX_RECORDS live records. Records are written in the order they are minted,
so the oldest is nearly always the first to expire: a write first drops expired records from
the front, then, when the store is still full, the oldest live one (that chain is then
`chain_unknown`: denied, never allowed). Every write is O(1) amortised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from authz.bounded import Bounded
from authz.chains.store import ChainRecord

MAX_RECORDS = 200_000


class MemoryChainStore:
    description = "in-process (single replica only)"
    generation = 0  # nothing is ever lost while the process lives

    def __init__(self, clock: Callable[[], float] = time.time, max_records: int = MAX_RECORDS) -> None:
        self._clock = clock
        self._records: Bounded[str, ChainRecord] = Bounded(max_records, max_records)
        self._revoked: set[str] = set()  # written only by an operator's `mandate chain revoke`, so not bounded
        self._lock = threading.Lock()
        self.evicted_live = 0  # live records pushed out by newer ones (the store was too small)

    def __len__(self) -> int:
        return len(self._records)

    def available(self) -> bool:
        return True

    def get(self, chain_id: str) -> ChainRecord | None:
        record = self._records.get(chain_id)
        if record is None or record.expires <= self._clock():
            return None
        return record

    def put(self, record: ChainRecord) -> None:
        with self._lock:
            if self._records.get(record.id) is not None:
                return  # immutable: the first write stands
            self._drop_expired()
            if len(self._records) >= self._records.max_entries:
                self.evicted_live += 1
            self._records.put(record.id, record, 1)

    def _drop_expired(self) -> None:
        """Take expired records off the front, stopping at the first live one."""
        now = self._clock()
        while (oldest := self._records.oldest()) is not None and oldest[1].expires <= now:
            self._records.pop(oldest[0])

    def is_revoked(self, record: ChainRecord) -> bool:
        revoked = self._revoked
        return bool(revoked) and (record.id in revoked or any(ancestor in revoked for ancestor in record.lineage))

    def revoke(self, chain_id: str) -> ChainRecord | None:
        self._revoked.add(chain_id)
        return self._records.get(chain_id)

    def start(self) -> None:
        pass

    def wait_available(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass
