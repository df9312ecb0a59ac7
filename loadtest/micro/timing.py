"""Timing one scenario: each call on its own with `time.perf_counter_ns()`, after a warm-up, with
the garbage collector enabled, so the tails include the collections a production process would
see; and the figures of the samples of every round, pooled."""

from __future__ import annotations

import gc
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from loadtest.micro.scenarios import Scenario, decision_label


def _percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted ns samples, in µs."""
    rank = math.ceil(round(q * len(ordered), 6))
    return ordered[max(0, min(len(ordered) - 1, rank - 1))] / 1000


def _redis_gets(client: Any) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


@dataclass
class Tally:
    """One scenario at one size, gathered over every round it was timed in."""

    scenario: Scenario
    samples: list[int] = field(default_factory=list)  # ns per timed call
    outcomes: Counter[str] = field(default_factory=Counter)
    allowed: int = 0
    denied: int = 0
    gc_collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    redis_gets: int = 0
    calls: int = 0  # every call so far, warm-up included: `prepare` never sees an index twice


def measure(tally: Tally, seconds: float, warmup_seconds: float, min_iterations: int) -> None:
    """Time one round of `tally.scenario`: a warm-up, then calls one by one until `seconds` passed."""
    scenario = tally.scenario
    call, args, prepare, label = scenario.call, scenario.args, scenario.prepare, scenario.label or decision_label
    count = len(args)
    clock = time.perf_counter_ns
    outcomes = tally.outcomes
    gets_before = _redis_gets(scenario.redis_client) if scenario.redis_client is not None else 0
    for phase, budget, minimum in (
        ("warmup", warmup_seconds, min(200, min_iterations)),
        ("timed", seconds, min_iterations),
    ):
        samples: list[int] = []
        append = samples.append
        deadline = clock() + int(budget * 1e9)
        gc_before = [s["collections"] for s in gc.get_stats()]
        index = 0
        while True:
            total = tally.calls
            arg = prepare(total) if prepare is not None else args[total % count]
            started = clock()
            result = call(arg)
            ended = clock()
            append(ended - started)
            tally.calls = total + 1
            index += 1
            if phase == "timed":
                ok, text = label(result)
                outcomes[text] += 1
                if ok:
                    tally.allowed += 1
                else:
                    tally.denied += 1
            if ended > deadline and index >= minimum:
                break
        gc_after = [s["collections"] for s in gc.get_stats()]
    tally.samples += samples
    tally.gc_collections = [
        kept + after - before for kept, before, after in zip(tally.gc_collections, gc_before, gc_after, strict=True)
    ]
    if scenario.redis_client is not None:
        tally.redis_gets += _redis_gets(scenario.redis_client) - gets_before


def tally_result(tally: Tally) -> dict[str, Any]:
    """A scenario's figures over every round, pooled."""
    scenario = tally.scenario
    ordered = sorted(tally.samples)
    mean_us = sum(ordered) / len(ordered) / 1000
    result: dict[str, Any] = {
        "description": scenario.description,
        "expect": scenario.expect,
        "spec": scenario.spec,
        "iterations": len(ordered),
        "p50_us": round(_percentile(ordered, 0.50), 2),
        "p90_us": round(_percentile(ordered, 0.90), 2),
        "p99_us": round(_percentile(ordered, 0.99), 2),
        "p999_us": round(_percentile(ordered, 0.999), 2),
        "max_us": round(ordered[-1] / 1000, 2),
        "mean_us": round(mean_us, 2),
        "calls_per_s": round(1e6 / mean_us, 1) if mean_us else 0.0,
        "allowed": tally.allowed,
        "denied": tally.denied,
        "outcomes": dict(tally.outcomes.most_common()),
        "gc_collections": tally.gc_collections,
    }
    if scenario.redis_client is not None:
        result["redis_gets_per_call"] = round(tally.redis_gets / tally.calls, 3)
    return result
