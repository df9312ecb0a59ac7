"""The in-process chain store: the embedded default for a single replica (and for tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .store import ChainRecord

MAX_RECORDS = 200_000


class MemoryChainStore:
    description = "in-process (single replica only)"
    generation = 0  # nothing is ever lost while the process lives

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: dict[str, ChainRecord] = {}
        self._revoked: set[str] = set()
        self._lock = threading.Lock()

    def available(self) -> bool:
        return True

    def get(self, chain_id: str) -> ChainRecord | None:
        record = self._records.get(chain_id)
        if record is None or record.expires <= self._clock():
            return None
        return record

    def put(self, record: ChainRecord) -> None:
        with self._lock:
            if len(self._records) >= MAX_RECORDS:
                now = self._clock()
                self._records = {key: value for key, value in self._records.items() if value.expires > now}
            self._records.setdefault(record.id, record)  # immutable: the first write stands

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
