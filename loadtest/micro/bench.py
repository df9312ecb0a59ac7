"""The benchmark run: load every size, then time every scenario in rounds, the sizes alternating.

All sizes are loaded first; then each scenario's seconds are timed in `--rounds` rounds, the
sizes alternating and their order reversed every other round, so that a noisy minute on a
shared machine lands on every size alike. Each figure pools the samples of every round.

`run(sizes, seconds_per_case, redis_url)` returns a JSON-serialisable dict:

  {
    "benchmark": "mandate-micro", "version": 1,
    "python": str, "platform": str, "cpu_count": int, "started": ISO-8601 str,
    "seconds_per_case": float, "rounds": int, "seed": int,
    "callers": int | None,                        # requests from the first N profiles; None: every profile
    "smoke": bool, "gc_enabled": bool, "heap_frozen": bool,
    "redis": str | None,                          # the URL used, or None (Redis cases skipped)
    "what_is_timed": str,
    "sizes": [                                    # one per requested size, in order
      {
        "profiles": int, "targets": int, "policy_files": int,
        "generate_seconds": float, "compile_seconds": float,
        "fresh_process_compile_seconds": float | None,  # load + compile in a fresh interpreter (SPEC: < 30 s)
        "rss_mb": {"in_process_after_compile": float, "in_process_growth": float,
                   "fresh_process_after_compile": float | None, "fresh_process_peak": float | None,
                   "fresh_process_after_import": float | None},
        "pool": int,                              # distinct requests built per scenario
        "scenarios": {
          name: {
            "description": str,
            "expect": "allow" | "deny" | "mixed",
            "spec": bool,                         # counts for SPEC §8's 50 µs / flatness targets
            "iterations": int,                    # timed calls (warm-up excluded)
            "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us": float,
            "calls_per_s": float,                 # 1e6 / mean_us: one core, timed region only
            "allowed": int, "denied": int,        # by the response actually built (OK vs not)
            "outcomes": {label: count},           # e.g. "allow+verified", "deny:tool_not_allowed"
            "gc_collections": [gen0, gen1, gen2], # collections that ran during the timed calls
            "redis_gets_per_call": float,         # Redis cases only
          }
        },
        "skipped": {name: reason},               # scenarios that could not run at this size
        "warnings": [str],                        # e.g. Redis liveness lapses: calls denied
                                                  # chain_store_unavailable (the scenario then also
                                                  # carries "store_unavailable_calls": int)
      }
    ],
    "summary": {
      "by_scenario": {name: {"p50_us": {size: v}, "p99_us": {size: v},
                             "p99_ratio_largest_vs_smallest": float | None}},
      "spec": {"p99_target_us": 50.0, "flat_tolerance": 0.2,
               "worst_p99_us": {size: {"scenario": str, "p99_us": float}},
               "p99_target_met": bool, "flat": bool | None, "flat_detail": {name: ratio},
               "excluded": {name: reason}},       # spec cases left out of the two verdicts
    },
  }

Sizes are JSON object keys as strings in "summary".
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.check.pipeline import Authorizer
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from authz.serve.heap import freeze_heap
from loadtest.micro.policyset import write_policy_set
from loadtest.micro.pools import Pools, build_pools, first_callers
from loadtest.micro.redis_server import RedisReplicas
from loadtest.micro.rss import fresh_process_rss, rss_mb
from loadtest.micro.scenarios import (
    REDIS_SCENARIOS,
    STORE_DOWN,
    Scenario,
    check_expectations,
    in_process_scenarios,
    redis_scenarios,
    store_down_calls,
)
from loadtest.micro.summary import summarize
from loadtest.micro.timing import Tally, measure, tally_result

DEFAULT_ROUNDS = 3  # each size's share of a scenario's seconds is timed in this many alternating rounds
WHAT_IS_TIMED = (
    "Authorizer.decide(AuthzInput) + ResponseTemplates.render(decision) (serialized CheckResponse), one call per "
    "sample, "
    "time.perf_counter_ns, gc enabled; no protobuf parse, no gRPC, no metrics/audit"
)


@dataclass
class Size:
    """One policy set, loaded and compiled, with its request pools and what was measured on it."""

    size: int
    policy: PolicySet
    pools: Pools
    result: dict[str, Any]
    tallies: dict[str, Tally] = field(default_factory=dict)
    redis: RedisReplicas | None = None


def prepare_size(
    size: int,
    *,
    seed: int = 1,
    pool: int = 512,
    fresh_rss: bool = True,
    callers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Size:
    """Generate and compile `size` profiles, measure the memory they take, draw the request pools."""
    say = progress or (lambda _: None)
    gc.collect()
    rss_before = rss_mb()
    with tempfile.TemporaryDirectory(prefix=f"mandate-micro-{size}-") as directory:
        started = time.perf_counter()
        generated = write_policy_set(directory, size, seed)
        generate_seconds = time.perf_counter() - started
        started = time.perf_counter()
        policy = compile_directory(directory)
        compile_seconds = time.perf_counter() - started
        gc.collect()
        rss_after = rss_mb()
        say(
            f"{size} profiles: generated in {generate_seconds:.1f} s, compiled in {compile_seconds:.2f} s, "
            f"RSS {rss_after:.0f} MB (+{rss_after - rss_before:.0f})"
        )
        fresh = fresh_process_rss(Path(directory)) if fresh_rss else None
        if fresh:
            say(f"{size} profiles: fresh process RSS {fresh['after_compile']} MB, peak {fresh['peak']} MB")
    result: dict[str, Any] = {
        "profiles": len(policy.profiles),
        "targets": generated.targets,
        "policy_files": generated.files,
        "generate_seconds": round(generate_seconds, 2),
        "compile_seconds": round(compile_seconds, 3),
        "fresh_process_compile_seconds": fresh["seconds"] if fresh else None,
        "rss_mb": {
            "in_process_after_compile": round(rss_after, 1),
            "in_process_growth": round(rss_after - rss_before, 1),
            "fresh_process_after_import": fresh["after_import"] if fresh else None,
            "fresh_process_after_compile": fresh["after_compile"] if fresh else None,
            "fresh_process_peak": fresh["peak"] if fresh else None,
        },
        "pool": pool,
        "scenarios": {},
        "skipped": {},
        "warnings": [],
    }
    return Size(size, policy, build_pools(first_callers(generated, callers), pool, seed), result)


def time_rounds(
    sizes: list[Size],
    batch: Callable[[Size], list[Scenario]],
    rounds: int,
    seconds_per_case: float,
    warmup_seconds: float,
    min_iterations: int,
    say: Callable[[str], None],
) -> None:
    """Time every size's scenarios of one batch in `rounds` rounds, the sizes alternating (reversed
    every other round), so that a noisy minute on this shared machine lands on every size alike."""
    scenarios = {entry.size: batch(entry) for entry in sizes}
    freeze_heap()  # as `mandate serve` does once the policy is loaded: gc stops walking it
    for round_number in range(rounds):
        for entry in sizes if round_number % 2 == 0 else sizes[::-1]:
            for scenario in scenarios[entry.size]:
                tally = entry.tallies.setdefault(scenario.name, Tally(scenario))
                measure(tally, seconds_per_case / rounds, warmup_seconds, max(1, min_iterations // rounds))
    for entry in sizes:
        for scenario in scenarios[entry.size]:
            _finish(entry, entry.tallies[scenario.name], say)


def _finish(entry: Size, tally: Tally, say: Callable[[str], None]) -> None:
    measured = tally_result(tally)
    name, result = tally.scenario.name, entry.result
    down = store_down_calls(measured) if tally.scenario.uses_redis else 0
    if down:
        measured["store_unavailable_calls"] = down
        result["warnings"].append(
            f"{name}: {down} of {measured['iterations']} calls denied {STORE_DOWN}: the Redis store's "
            "revocation listener thread was not heard for 0.75 s while this thread ran decisions back to back "
            "(GIL-starved), so available() turned false; those calls are in the percentiles"
        )
        say(f"{entry.size:>6} {name:<28} warning: {result['warnings'][-1]}")
    result["scenarios"][name] = measured
    say(
        f"{entry.size:>6} {name:<28} p50 {measured['p50_us']:>8.1f}  p99 {measured['p99_us']:>8.1f}  "
        f"max {measured['max_us']:>9.1f} µs  n={measured['iterations']}"
    )


def run(
    sizes: Sequence[int],
    seconds_per_case: float,
    redis_url: str | None,
    *,
    seed: int = 1,
    smoke: bool = False,
    fresh_rss: bool | None = None,
    callers: int | None = None,
    rounds: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark every size; see the module docstring for the shape of the result."""
    say = progress or (lambda _: None)
    pool, warmup_seconds, min_iterations = (64, 0.02, 50) if smoke else (512, 0.1, 2_000)
    rounds = (1 if smoke else DEFAULT_ROUNDS) if rounds is None else rounds
    fresh = bool(fresh_rss) if smoke else (True if fresh_rss is None else fresh_rss)
    report = _report_head(seconds_per_case, rounds, seed, callers, smoke, redis_url)
    loaded = [
        prepare_size(size, seed=seed, pool=pool, fresh_rss=fresh, callers=callers, progress=progress) for size in sizes
    ]
    _time_every_scenario(loaded, redis_url, seed, (rounds, seconds_per_case, warmup_seconds, min_iterations, say))
    problems = [
        problem
        for entry in loaded
        for tally in entry.tallies.values()
        for problem in check_expectations(tally.scenario, entry.result["scenarios"][tally.scenario.name])
    ]
    if problems:
        raise RuntimeError("the generated requests did not decide as intended:\n" + "\n".join(problems))
    report["sizes"] = [entry.result for entry in loaded]
    report["summary"] = summarize(report["sizes"])
    return report


def _report_head(
    seconds_per_case: float, rounds: int, seed: int, callers: int | None, smoke: bool, redis_url: str | None
) -> dict[str, Any]:
    """What was run, where and how, before any size is loaded (so "started" is when the run began)."""
    return {
        "benchmark": "mandate-micro",
        "version": 1,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count() or 0,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds_per_case": seconds_per_case,
        "rounds": rounds,
        "seed": seed,
        "callers": callers,
        "smoke": smoke,
        "gc_enabled": gc.isenabled(),
        "heap_frozen": True,  # gc.freeze() after loading, as `mandate serve` does (authz.serve.reload.freeze_heap)
        "redis": redis_url,
        "what_is_timed": WHAT_IS_TIMED,
        "sizes": [],
    }


def _time_every_scenario(loaded: list[Size], redis_url: str | None, seed: int, timing: tuple[Any, ...]) -> None:
    """The in-process cases at every size, then the Redis ones: each store's listener thread
    competes with the others for the GIL, so no store runs while the in-process cases are timed."""
    try:
        time_rounds(
            loaded,
            lambda entry: in_process_scenarios(entry.policy, entry.pools, seed, entry.result["skipped"]),
            *timing,
        )
        with_redis = []
        for entry in loaded:
            if not redis_url:
                entry.result["skipped"].update(
                    dict.fromkeys(REDIS_SCENARIOS, "no Redis (--redis-url or --start-redis)")
                )
            elif not entry.pools.edges:
                entry.result["skipped"].update(dict.fromkeys(REDIS_SCENARIOS, "no agents rules at this size"))
            else:
                entry.redis = RedisReplicas(redis_url, entry.policy, Authorizer(entry.policy).chains.keys)
                with_redis.append(entry)
        time_rounds(with_redis, lambda entry: redis_scenarios(entry.policy, entry.pools, seed, entry.redis), *timing)
    finally:
        for entry in loaded:
            if entry.redis is not None:
                entry.redis.close()
        gc.unfreeze()
