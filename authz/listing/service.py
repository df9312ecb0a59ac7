"""What every ext_proc stream of one `mandate serve` shares: the Authorizer (its current policy
set and chain store), where filtered lists are recorded, and the bounds.

A stream lives as long as its request, upstream time included, and in the `threads` gRPC
flavour holds a thread all along: so at most `streams` at once (the gRPC server gives them
threads of their own, beside the Check threads), each holding at most `limit` bytes of answer.
One more is refused at once, and Envoy answers the agent with an error (fail closed). One caller
may hold at most `per_caller` of them (a quarter), so an agent that keeps streams open (a GET that
resumes an SSE stream lasts as long as the upstream keeps it) cannot take every other agent's
lists away; its next one is refused with `list_caller_busy`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from authz.check.pipeline import Authorizer
from authz.listing.stream import ListAnswered, ListStream

ANSWER_LIMIT = 8 << 20  # bytes of one list answer, once decoded: a 10,000-tool list is ~2-5 MB
STREAMS = 16  # list answers being filtered at once, per process
PER_CALLER = STREAMS // 4  # of them, held by one caller (SPIFFE ID) at once


def _unrecorded(answered: ListAnswered) -> None:
    """Where a ListService that records nothing (tests, explain) puts its lists."""


class ListService:
    def __init__(
        self,
        authorizer: Authorizer,
        record: Callable[[ListAnswered], None] = _unrecorded,
        opened: Callable[[], None] = lambda: None,
        limit: int = ANSWER_LIMIT,
        streams: int = STREAMS,
        per_caller: int = PER_CALLER,
    ) -> None:
        self.authorizer, self.record, self.limit, self.streams = authorizer, record, limit, streams
        self.per_caller = per_caller
        self._opened = opened
        self._slots = threading.BoundedSemaphore(streams)
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # streams open per caller: at most `streams` entries

    def open(self) -> ListStream | None:
        """A new stream, or None when `streams` are already open."""
        if not self._slots.acquire(blocking=False):
            return None
        self._opened()
        return ListStream(self)

    def hold(self, principal: str) -> bool:
        """Count one more open stream for `principal`; False when it holds `per_caller` already."""
        with self._lock:
            held = self._held.get(principal, 0)
            if held >= self.per_caller:
                return False
            self._held[principal] = held + 1
            return True

    def close(self, stream: ListStream) -> None:
        if stream.holder is not None:
            with self._lock:
                left = self._held.pop(stream.holder) - 1
                if left:
                    self._held[stream.holder] = left
        self._slots.release()
