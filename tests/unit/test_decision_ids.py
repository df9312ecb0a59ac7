"""Decision ids: 64 random bits in hex, never repeated, not even across a fork (`--workers`)."""

from __future__ import annotations

import os
import re

from authz.check.decision_ids import new_decision_id


def test_ids_are_sixteen_hex_digits_and_unique_across_batches() -> None:
    ids = [new_decision_id() for _ in range(5_000)]  # several batches of 512
    assert all(re.fullmatch("[0-9a-f]{16}", each) for each in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_never_hands_out_its_parents_next_ids() -> None:
    new_decision_id()  # a batch is under way in the parent
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write_end, " ".join(new_decision_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        in_child = set(pipe.read().split())
    os.waitpid(child, 0)
    in_parent = {new_decision_id() for _ in range(100)}
    assert len(in_child) == 100 and not in_child & in_parent
