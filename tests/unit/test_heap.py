"""What a reload does with the heap (authz/serve/heap.py): the replaced policy set is freed entry
by entry once no Check decides with it any more, leaving nothing for the garbage collector, and a
table someone still holds is left whole rather than emptied under them."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from authz.check.pipeline import Authorizer
from authz.policy.compiled import PolicySet
from authz.policy.compiler import collector_paused, compile_directory
from authz.serve import heap
from loadtest.micro.policyset import generate, write_policy_set
from loadtest.micro.pools import build_pools


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("generated")
    write_policy_set(directory, 120, seed=2)
    return directory


def used(directory: Path) -> list[PolicySet]:
    """A compiled set whose `when` memo holds answers, alone in a list (as a reload hands it over)."""
    policy = compile_directory(directory)
    authorizer = Authorizer(policy)
    pools = build_pools(generate(120, seed=2)[0], 32)
    for request in pools.mcp_call_allowed + pools.mcp_call_denied:
        authorizer.decide(request)
    assert len(policy.condition_results) > 0
    del authorizer
    return [policy]


def entries(policy: PolicySet) -> int:
    tables = (policy.targets_by_host, policy.egress_hosts, policy.targets, policy.profiles)
    indexes = (policy.targets_by_principal, policy.callers)
    return sum(map(len, tables)) + sum(len(index.exact) + len(index.namespaces) for index in indexes)


def test_a_replaced_set_is_freed_entry_by_entry_leaving_no_cycle(directory: Path) -> None:
    replaced = used(directory)
    expected = entries(replaced[0])
    with collector_paused():
        gc.collect()
        assert heap.release(replaced) == expected
        assert not replaced
        assert gc.collect() == 0


def test_a_table_someone_holds_is_left_whole(directory: Path) -> None:
    replaced = used(directory)
    profiles = replaced[0].profiles
    count = len(profiles)
    freed = heap.release(replaced)
    assert len(profiles) == count and freed > 0


def test_a_set_a_check_still_decides_with_is_not_taken_apart(directory: Path, monkeypatch) -> None:
    monkeypatch.setattr(heap, "RELEASE_WAIT", 0.05)
    replaced = used(directory)
    in_use = replaced[0]
    assert heap.release(replaced) == 0
    assert len(in_use.profiles) == 120 and sys.getrefcount(in_use) == 2
