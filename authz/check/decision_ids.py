"""Decision ids: unique and unguessable, since a kept answer is cut where its id stands and no
request may predict one. They are made a batch at a time from `os.urandom`, one system call
per 512 requests (ANALYSIS.md, "Decision ids"); a forked child starts a batch of its own."""

from __future__ import annotations

import os

_ID_BATCH = 512
_ready_ids: list[str] = []
os.register_at_fork(after_in_child=_ready_ids.clear)


def new_decision_id() -> str:
    """64 random bits in hex."""
    try:
        return _ready_ids.pop()  # atomic: request threads share the batch
    except IndexError:
        return _new_batch()


def _new_batch() -> str:
    made = os.urandom(8 * _ID_BATCH).hex()
    ids = [made[start : start + 16] for start in range(0, len(made), 16)]
    _ready_ids.extend(ids[1:])
    return ids[0]
