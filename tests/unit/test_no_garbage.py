"""A decision frees everything it allocated by reference counting alone.

A reference cycle made per request waits for the garbage collector, and a collection lands in
the middle of some later request: about half of the decision path's slowest 1 % were such
collections while `when` values were frozen by a closure that called itself. Every kind of
request the micro-benchmark sends (allowed, denied, remembered and fresh `when`s, tools/list,
egress, A2A minting and re-using chains, chained calls, cache hits) is run here with the
collector off, then one collection must find nothing.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from authz.check.pipeline import Authorizer
from authz.check.record import Recorder
from authz.policy.compiler import compile_directory
from authz.serve.heap import freeze_heap
from loadtest.micro.policyset import write_policy_set
from loadtest.micro.pools import build_pools
from loadtest.micro.scenarios import Scenario, in_process_scenarios
from loadtest.requests import build_mix, mint_chain_token


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> list[Scenario]:
    directory = tmp_path_factory.mktemp("generated")
    generated = write_policy_set(directory, 40, seed=5)
    policy = compile_directory(directory)
    return [s for s in in_process_scenarios(policy, build_pools(generated, 64, seed=5), 5, {}) if s.name != "floor"]


def cycles_left(call: Callable[[Any], object], args: Sequence[Any]) -> list[str]:
    """What the collector finds after `call(arg)` for every arg (the first tenth run first,
    to fill the caches and memos meant to live on), with the collector off meanwhile."""
    warm = max(1, len(args) // 10)
    for arg in args[:warm]:
        call(arg)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for arg in args[warm:]:
            call(arg)
        gc.collect()
        return [type(thing).__qualname__ for thing in gc.garbage]
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def test_every_kind_of_request_leaves_no_reference_cycle(scenarios: list[Scenario]) -> None:
    kinds = {"mcp_call_allowed_when_afresh", "a2a_send_mint", "chained_call_cached", "mix_cache_hit"}
    assert kinds <= {s.name for s in scenarios}
    for scenario in scenarios:
        args = [scenario.prepare(i) if scenario.prepare else scenario.args[i % len(scenario.args)] for i in range(200)]
        left = cycles_left(scenario.call, args)
        assert left == [], f"{scenario.name}: requests left reference cycles of {sorted(set(left))}"


def test_the_serving_path_leaves_no_reference_cycle_either(example_policy) -> None:
    """The same through `check_bytes` (parse, decide, respond, record) with the decision cache
    off, over the load test's mix of the example policies, a malformed CheckRequest included."""
    recorder = Recorder([])
    authorizer = Authorizer(example_policy, recorder, decision_cache=0)
    samples = build_mix(mint_chain_token(authorizer.check_bytes))
    payloads = [sample.payload for sample in samples] + [b"\xff not protobuf"]
    try:
        assert cycles_left(authorizer.check_bytes, payloads * 10) == []
    finally:
        recorder.close()


def test_after_a_load_minting_a_thousand_chains_runs_no_collection(scenarios: list[Scenario]) -> None:
    """With no cycles to find, a collection on the request path only re-walks what lives on:
    chain records, above all. After freeze_heap (every policy load), a burst of minting does not
    meet the collector; at CPython's default threshold, one call in about 70 did."""
    mint = next(s for s in scenarios if s.name == "a2a_send_mint")
    assert mint.prepare is not None
    thresholds = gc.get_threshold()
    try:
        freeze_heap()
        before = [generation["collections"] for generation in gc.get_stats()]
        for index in range(1000):
            mint.call(mint.prepare(index))
        assert [generation["collections"] for generation in gc.get_stats()] == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
