"""Step 7: record every answer — its audit line and its metrics — off the request path.

A request thread only appends `(decision, decision id, started, answered)` to a deque; it never takes
a lock, wakes a thread or touches prometheus_client. A background thread hands what has
gathered to each sink every FLUSH_EVERY seconds, in order: under load a request thread runs
with cold CPU caches, and the recorder's batches run warm (ANALYSIS.md, "The audit writer").

`flush()` waits until everything recorded so far has reached the sinks: the metrics
endpoint calls it, so a scrape counts every answer already given. `close()` drains the
queue, so no decision goes unrecorded at shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from authz.check.decision import Decision

FLUSH_EVERY = 0.002  # seconds the audit trail and metrics may lag: ANALYSIS.md, "The audit writer"
BATCH = 1000  # answers per hand-over to the sinks

# The decision, the id it was answered under, and perf_counter_ns() when the request came in and
# when it was answered: the sinks work out Mandate's time and the wall-clock time from them.
Answered = tuple[Decision, str, int, int]
Sink = Callable[[Sequence[Answered]], None]
T = TypeVar("T")
log = logging.getLogger("mandate")


class Recorder(Generic[T]):
    """Records of one type (`Answered` for Checks; the response path records its filtered lists
    through a Recorder of its own) handed to its sinks in batches."""

    def __init__(self, sinks: Sequence[Callable[[Sequence[T]], None]], flush_every: float = FLUSH_EVERY) -> None:
        self._sinks = tuple(sinks)
        self._flush_every = flush_every
        self._pending: deque[T] = deque()
        # Queue one answer; the sinks see it within FLUSH_EVERY seconds. The deque's own append,
        # so recording costs a request no Python call of its own.
        self.record: Callable[[T], None] = self._pending.append
        self._wake = threading.Event()
        self._closing = False
        self._rounds = threading.Condition()
        self._started = self._finished = 0
        self._writer = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._writer.start()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every answer recorded before this call has reached the sinks."""
        with self._rounds:
            target = self._started + 1  # a round that starts after now sees everything queued before
            self._wake.set()
            return self._rounds.wait_for(lambda: self._finished >= target or not self._writer.is_alive(), timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Hand every queued answer to the sinks, then stop the background thread."""
        self._closing = True
        self._wake.set()
        self._writer.join(timeout)

    def _run(self) -> None:
        while True:
            if not self._wake.wait(self._flush_every) and not self._pending:
                continue  # idle: nothing to hand over and nobody waiting for a round
            self._wake.clear()
            closing = self._closing  # read before draining: whatever was queued before close() is drained
            with self._rounds:
                self._started += 1
                this_round = self._started
            self._drain()
            with self._rounds:
                self._finished = this_round
                self._rounds.notify_all()
            if closing:
                return

    def _drain(self) -> None:
        pending = self._pending
        while pending:
            batch = [pending.popleft() for _ in range(min(BATCH, len(pending)))]
            for sink in self._sinks:
                try:
                    sink(batch)
                except Exception:
                    log.exception("recording %d answers failed in %r", len(batch), sink)
