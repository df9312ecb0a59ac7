"""In-process micro-benchmark of Mandate's decision path alone (SPEC §8, first bullet).

What is timed is "parsed request in, response out": from an already-built `AuthzInput` to the
serialized `CheckResponse`, i.e. `Authorizer.decide(request)` followed by
`ResponseTemplates.render(decision)`, as `mandate serve` answers. The protobuf parse of the
CheckRequest, gRPC, metrics and the audit line are
*not* in it (the gRPC benchmarks measure those). Each call is timed on its own with
`time.perf_counter_ns()`, after a warm-up, with the garbage collector enabled and the heap
frozen after loading exactly as `mandate serve` does (`authz.serve.reload.freeze_heap`), so the tails
include the collections a production process would see.

Policy sets are generated, not hand-written, at any size. Rule *shapes* (how many rules, which
carry a `when` or a grant) follow the profile's index in fixed proportions, and request pools
are drawn in fixed proportions too, so every size meets the same mix. Each size is compiled
once with `compile_directory`, timed, and its resident memory measured twice: in this process
and, unless disabled, in a fresh Python process that only imports `authz` and compiles the
same directory.

Which agents send the requests is the other half of comparing sizes. By default they are the
first N profiles, N the smallest size (`--callers`): every size then meets the same agents
with the same rules, and only the number of profiles loaded differs, which is what SPEC §8's
"flat from 10 to 10,000 profiles" asks about. `--callers all` draws them from every profile, so
a larger size also meets more agents, whose objects no longer fit the CPU caches between two of
their requests, which a tight loop over ten agents never sees (ANALYSIS.md, "Flatness: profiles
against agents"). `loadtest.run` runs both.

The parts, in the order a run meets them:

  policyset.py     the generated policy sets: `write_policy_set(directory, profiles, seed)`
  pools.py         the requests each size's profiles send, built before any timing
  rss.py           the memory a compiled set takes, here and in a fresh process
  redis_server.py  a throwaway redis-server (`local_redis()`), and two replicas sharing it
  scenarios.py     what is timed at each size (listed there), and what each must decide
  timing.py        one scenario timed, one call at a time, and its percentiles
  bench.py         `run()`: every size loaded, every scenario timed in alternating rounds; the
                   shape of the JSON result
  summary.py       the sizes together: p50 / p99 by size, SPEC §8's two verdicts
  cli.py           the command line and its table

Run it as `python -m loadtest.micro [--sizes 10,1000,10000] [--seconds-per-case N] [--rounds N]
[--callers N|all] [--redis-url URL | --start-redis] [--json OUT.json] [--smoke]`.
"""
