"""What every ext_proc stream of one `mandate serve` shares: the Authorizer (its current policy
set and chain store), where filtered lists are recorded, and the bounds.

A stream lives as long as its request, upstream time included, and in the `threads` gRPC
flavour holds a thread all along: so at most `streams` at once (the gRPC server gives them
threads of their own, beside the Check threads), each holding at most `limit` bytes of answer.
One more is refused at once, and Envoy answers the agent with an error (fail closed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from authz.check.pipeline import Authorizer
from authz.listing.stream import ListAnswered, ListStream

ANSWER_LIMIT = 8 << 20  # bytes of one list answer, once decoded: a 10,000-tool list is ~2-5 MB
STREAMS = 16  # list answers being filtered at once, per process


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
    ) -> None:
        self.authorizer, self.record, self.limit, self.streams = authorizer, record, limit, streams
        self._opened = opened
        self._slots = threading.BoundedSemaphore(streams)

    def open(self) -> ListStream | None:
        """A new stream, or None when `streams` are already open."""
        if not self._slots.acquire(blocking=False):
            return None
        self._opened()
        return ListStream(self)

    def close(self, stream: ListStream) -> None:
        self._slots.release()
