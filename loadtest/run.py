"""The benchmark: Mandate against the fastest no-op floor, side by side, and BENCHMARKS.md.

    python -m loadtest.run              # the full run (about 9 minutes on 2 cores), writes BENCHMARKS.md
    python -m loadtest.run --quick      # shorter runs, same report
    python -m loadtest.run --smoke      # seconds: proves every tool still runs (CI); writes nothing unless --out

What it does, in one process tree it cleans up after itself:

1. starts a throwaway `redis-server` (the chain store, as in production; `--chain-store
   memory` for none), the floor (`python -m loadtest.floor`) in every gRPC flavour, `mandate
   serve` on the example policies at its **default settings** (no `--grpc-server`, no
   `--workers`), and, for the flavour table, `mandate serve --grpc-server F` for each flavour;
   all on free loopback ports, audit lines to /dev/null;
2. writes the distinct stream (loadtest/stream.py: 40,000 different CheckRequests in a
   realistic mix), its chained calls carrying tokens the default Mandate minted (every Mandate
   shares the Redis and the key, so they hold for all);
3. checks correctness before speed: every server answers the representative request with gRPC
   status OK; every Mandate decides the request mix and a sample of the stream as expected;
4. **distinct traffic** (SPEC §8's targets): loadtest/h2grpc, the C driver, cycles through the
   stream against every server in turn, round after round (the order reversed every other
   round), one request in flight (`-c 1 -m 1`) and sixteen (`-c 1 -m 16`); every answer's
   gRPC status is checked; the servers' CPU time and Mandate's own check duration
   (`mandate_check_duration_seconds`) are read around every run. Mandate is held against the
   **fastest floor**: lowest median p50 at 1 in flight, highest median req/s at 16;
5. the **repeated request** (one request resent, h2load): the floors and Mandate, reported;
6. locust (loadtest/locustfile.py, the weighted request mix, µs histogram) against the fastest
   floor and Mandate;
7. `--workers 1` against `--workers 2` on the distinct stream, 16 in flight over 8 connections;
8. Mandate's resident memory (VmRSS), and the in-process micro-benchmark
   (`python -m loadtest.micro`: decision path at 10 / 1,000 / 10,000 profiles, one Redis
   round trip on a cache miss, RSS with 10,000 profiles), twice: with the same agents sending
   at every size (what the profile count costs), then with every profile sending (`--callers
   all`: what more agents cost);
9. writes BENCHMARKS.md (loadtest/report.py: every figure the median of the rounds, min–max
   beside it, ratios to the floor, SPEC §8's targets MET / NOT MET; any section of the file
   it does not write itself is kept), a latency CDF plot and the raw results as JSON under
   benchmarks/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import authz.check.pipeline
from authz.serve.grpc_server import GRPC_SERVERS
from loadtest import h2grpc, h2load
from loadtest.floor import FLAVOURS, OWN_LOOP
from loadtest.micro.redis_server import local_redis
from loadtest.report import ONE_IN_FLIGHT, SIXTEEN_IN_FLIGHT, SIXTEEN_SPREAD, markdown, plot_cdf, targets, write_report
from loadtest.requests import ROOT, grpc_frame, grpc_sender, representative, verify
from loadtest.servers import (
    SERVER_THREADS,
    Server,
    ServerExited,
    check_histogram,
    cpu_seconds,
    floor_server,
    histogram_figures,
    mandate_server,
)
from loadtest.stream import DEFAULT_SEED, Stream, generate, mint_tokens, write

DEFAULT_FLAVOUR = GRPC_SERVERS[0]


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    rounds: int  # distinct traffic: rounds of every server × (1, 16 in flight)
    seconds: float
    warmup: float
    stream: int  # requests in the distinct stream
    flavours: bool  # Mandate in every flavour too (the flavour table)
    repeated_rounds: int  # h2load, the one request resent
    repeated_seconds: float
    locust_rounds: int
    locust_seconds: int
    locust_users: int
    worker_rounds: int
    worker_seconds: float
    micro: tuple[str, ...]  # arguments to `python -m loadtest.micro`


PLANS = {
    "full": Plan(
        7,
        2.0,
        0.5,
        40_000,
        True,
        3,
        1.5,
        1,
        10,
        16,
        3,
        2.0,
        ("--sizes", "10,1000,10000,100000", "--seconds-per-case", "0.6"),
    ),
    "quick": Plan(
        3,
        1.5,
        0.3,
        40_000,
        True,
        1,
        1.0,
        1,
        5,
        16,
        1,
        1.5,
        ("--sizes", "10,10000", "--seconds-per-case", "0.3", "--no-fresh-rss"),
    ),
    "smoke": Plan(1, 0.4, 0.1, 2_000, False, 1, 0.4, 1, 2, 4, 1, 0.4, ("--smoke",)),
}
# (name, connections, streams per connection)
ONE = (ONE_IN_FLIGHT, 1, 1)
SIXTEEN = (SIXTEEN_IN_FLIGHT, 1, 16)
SPREAD = (SIXTEEN_SPREAD, 8, 2)
# Every figure a run may give; a series' aggregate has those every one of its rounds gave.
FIGURES = (
    "rps",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "mean_us",
    "errors",
    "server_cpu_us_per_request",
    "driver_cpu_us_per_request",
    "in_server_mean_us",
    "in_server_p50_us",
    "in_server_p99_us",
)
RATIOS = ("p50_us", "p90_us", "p99_us", "p999_us", "rps", "server_cpu_us_per_request")

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- one run ---------------------------------------------------------------------------------

# (server, connections, streams, seconds, warm-up) -> (the run's figures, its latencies in µs)
RunOne = Callable[[Server, int, int, float, float], tuple[dict[str, Any], list[float]]]


def distinct_runner(stream: Path, workdir: Path) -> RunOne:
    """h2grpc through the distinct stream; beside its figures, the server's CPU per answer (every
    answer of the run, warm-up included, against the CPU the server spent meanwhile) and, from
    Mandate's /metrics, its own time per Check over the same requests."""

    def run_one(server: Server, connections: int, streams: int, seconds: float, warmup: float) -> Any:
        cpu = cpu_seconds(server.pid)
        before = check_histogram(server.metrics) if server.metrics else None
        result = h2grpc.run(
            server.address,
            stream,
            seconds=seconds,
            warmup=warmup,
            connections=connections,
            streams=streams,
            workdir=workdir,
        )
        figures = result.figures()
        completed = result.summary["completed"]
        figures["server_cpu_us_per_request"] = (cpu_seconds(server.pid) - cpu) / completed * 1e6 if completed else 0
        if before is not None and server.metrics:
            figures.update(histogram_figures(before, check_histogram(server.metrics)))
        return figures, result.latencies_us()

    return run_one


def repeated_runner(workdir: Path) -> RunOne:
    """h2load resending the representative request (HTTP status only: gRPC OK is checked before)."""
    frame = grpc_frame(representative().payload)

    def run_one(server: Server, connections: int, streams: int, seconds: float, warmup: float) -> Any:
        result = h2load.run(
            server.address, frame, seconds=seconds, clients=connections, streams=streams, warmup=warmup, workdir=workdir
        )
        return {**result.summary(), "errors": result.failed + result.non_2xx}, result.latencies_us

    return run_one


@dataclass
class Series:
    """Per-round figures for one server in one mode, and (optionally) every latency."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    latencies_us: list[float] = field(default_factory=list)


def alternate(
    servers: Sequence[Server],
    modes: Sequence[tuple[str, int, int]],
    rounds: int,
    seconds: float,
    warmup: float,
    run_one: RunOne,
    keep_latencies: Callable[[Server, str], bool] = lambda s, m: False,
    label: str = "",
) -> dict[str, dict[str, Series]]:
    """Round after round: in each round, each mode, each server in turn (the order of the servers
    reversed every other round), so a noisy minute hits them alike. {mode: {server label: Series}}."""
    results: dict[str, dict[str, Series]] = {mode[0]: {server.label: Series() for server in servers} for mode in modes}
    for round_index in range(rounds):
        order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
        for mode, connections, streams in modes:
            for server in order:
                figures, latencies = run_one(server, connections, streams, seconds, warmup)
                series = results[mode][server.label]
                series.rounds.append(figures)
                if keep_latencies(server, mode):
                    series.latencies_us += latencies
                if figures.get("errors"):
                    say(f"  {server.label}: {figures['errors']} errors {figures.get('first_error', '')}")
            line = "  ".join(
                f"{s.label} p50 {results[mode][s.label].rounds[-1]['p50_us']:.0f} µs "
                f"{results[mode][s.label].rounds[-1]['rps']:.0f}/s"
                for s in servers
            )
            say(f"{label}round {round_index + 1}/{rounds} {mode}: {line}")
    return results


# --- figures -----------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else {}


def aggregate(series: Series) -> dict[str, dict[str, float]]:
    return {
        key: spread([entry[key] for entry in series.rounds])
        for key in FIGURES
        if series.rounds and all(key in entry for entry in series.rounds)
    }


def paired_ratios(mandate: Series, floor: Series) -> dict[str, dict[str, float]]:
    """Mandate / floor, round by round (each round's runs are next to each other in time)."""
    ratios = {}
    for key in RATIOS:
        values = [m[key] / f[key] for m, f in zip(mandate.rounds, floor.rounds, strict=True) if f.get(key) and key in m]
        if values:
            ratios[key] = spread(values)
    return ratios


def fastest_floor(mode: str, by_server: dict[str, Series], floors: Sequence[str]) -> tuple[str, str]:
    """The floor Mandate is held against in `mode`, and why: at one in flight the lowest median
    p50 (the latency targets), under load the highest median req/s (the throughput target)."""
    if mode == ONE_IN_FLIGHT:
        return min(floors, key=lambda f: aggregate(by_server[f])["p50_us"]["median"]), "lowest median p50"
    return max(floors, key=lambda f: aggregate(by_server[f])["rps"]["median"]), "highest median req/s"


def versus_fastest_floor(
    runs: dict[str, dict[str, Series]], floors: Sequence[str], mandate: str, every_floor: bool = True
) -> dict[str, dict[str, Any]]:
    """Per mode: the fastest floor and Mandate's figures against it round by round; with
    `every_floor`, every floor's figures too (once per comparison is enough)."""
    found = {}
    for mode, by_server in runs.items():
        best, chosen_by = fastest_floor(mode, by_server, floors)
        found[mode] = {
            "fastest_floor": best,
            "chosen_by": chosen_by,
            "floor": {"rounds": by_server[best].rounds, "aggregate": aggregate(by_server[best])},
            "mandate": {"rounds": by_server[mandate].rounds, "aggregate": aggregate(by_server[mandate])},
            "ratio": paired_ratios(by_server[mandate], by_server[best]),
        }
        if every_floor:
            found[mode]["floors"] = {
                f: {"rounds": by_server[f].rounds, "aggregate": aggregate(by_server[f])} for f in floors
            }
    return found


# --- the run -----------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Every part of the run, in the order of the module docstring; whatever happens, the stack
    stops every server and the Redis it started."""
    plan = PLANS[args.mode]
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "loadtest.run", *argv]),
        "mode": args.mode,
        "plan": plan.__dict__,
        "machine": machine(),
        "versions": versions(),
    }
    say(f"{args.mode} run; {results['machine']['cpu']}, {results['machine']['cores']} cores")
    with tempfile.TemporaryDirectory(prefix="mandate-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        redis_url, chain_store = start_chain_store(args.chain_store, workdir, stack)
        floors, own_loop, mandate, flavoured = start_servers(plan, args.flavours, chain_store, workdir, stack)
        stream, stream_path, results["stream"] = prepare_stream(plan, mandate, args.chain_store, workdir)
        results["settings"] = settings(args, mandate)
        everyone = [*floors, own_loop, mandate, *flavoured]
        results["verification"] = check_servers(everyone, stream, args.ignore_verdicts)
        results.update(measure_distinct(plan, floors, own_loop, mandate, flavoured, stream_path, workdir))
        results["verification"]["stream_after_timing"] = {
            server.label: stream_problems(server, stream) for server in (mandate, *flavoured)
        }
        for server in (own_loop, *flavoured):
            server.stop()
        results["repeated"] = measure_repeated(plan, floors, mandate, workdir)
        fastest = next(f for f in floors if f.label == results["distinct"][SIXTEEN[0]]["fastest_floor"])
        results["locust"] = measure_locust(plan, fastest, mandate, workdir)
        results["workers"] = measure_workers(plan, chain_store, stream_path, workdir, stack)
        results["memory"]["end"] = {"mandate": mandate.memory(), "floor": fastest.memory()}
        for server in (*floors, mandate):
            server.stop()
        results.update(measure_micro(plan, redis_url, workdir))
    results["machine"]["load_after"] = os.getloadavg()[1]
    return results


def settings(args: argparse.Namespace, mandate: Server) -> dict[str, Any]:
    """How the servers ran: what the report's machine section says."""
    return {
        "mandate_command": shown_command(mandate.command),
        "mandate_processes": mandate.memory()["processes"],
        "floor_threads": SERVER_THREADS,
        "chain_store": args.chain_store,
        "audit": "one JSON line per decision to stdout, redirected to /dev/null",
        "representative": representative().name,
        "representative_bytes": len(representative().payload),
    }


def shown_command(command: Sequence[str]) -> str:
    """`mandate serve ...` as the report shows it: the ports, the Redis URL and the key file the run
    made up replaced by what they stand for."""
    placeholders = {
        "--listen": "127.0.0.1:PORT",
        "--metrics-listen": "127.0.0.1:PORT",
        "--redis": "redis://127.0.0.1:PORT/0",
        "--chain-key": "KEY_FILE",
    }
    shown = list(command[command.index("serve") :])
    for index, part in enumerate(shown[1:], start=1):
        shown[index] = placeholders.get(shown[index - 1], part.replace(str(ROOT) + "/", ""))
    return "mandate " + shlex.join(shown)


def start_servers(
    plan: Plan, flavours: Sequence[str], chain_store: list[str], workdir: Path, stack: contextlib.ExitStack
) -> tuple[list[Server], Server, Server, list[Server]]:
    """The floor in every grpcio flavour, the no-op on Mandate's own loop, Mandate at its defaults
    and (with the flavour table) Mandate in every other flavour, all started before any is waited
    for (they load in parallel)."""
    floors = [floor_server(flavour, workdir) for flavour in flavours]
    own_loop = floor_server(OWN_LOOP, workdir)
    mandate = mandate_server("mandate", chain_store, workdir)
    flavoured = [mandate_server(f"mandate/{f}", chain_store, workdir, flavour=f) for f in flavours if plan.flavours]
    for server in (*floors, own_loop, mandate, *flavoured):
        stack.callback(server.stop)
        server.start()
    for server in (*floors, own_loop, mandate, *flavoured):
        server.wait_serving()
    say("servers up: " + ", ".join(f"{s.label} {s.address} ({s.ready_seconds:.1f} s)" for s in (*floors, mandate)))
    return floors, own_loop, mandate, flavoured


def prepare_stream(plan: Plan, mandate: Server, chain_store: str, workdir: Path) -> tuple[Stream, Path, dict[str, Any]]:
    """The distinct stream on disk. Its chained calls carry tokens the default Mandate minted, which
    every Mandate verifies (one Redis, one key); with the in-process chain store each Mandate
    knows only its own chains, so the stream has no chained calls."""
    started = time.monotonic()
    tokens = None
    if chain_store == "redis":
        send, close = grpc_sender(mandate.address)
        try:
            tokens = mint_tokens(send)
        finally:
            close()
    stream = generate(plan.stream, DEFAULT_SEED, tokens)
    path = write(stream, workdir / "stream")
    meta = {
        "requests": len(stream.payloads),
        "bytes": path.stat().st_size,
        "seed": DEFAULT_SEED,
        "scenarios": len(stream.scenarios),
        "chained": tokens is not None,
        "shares": stream.shares(),
        "distinct": len(set(stream.payloads)),
        "seconds": round(time.monotonic() - started, 1),
    }
    say(f"stream: {meta['requests']:,} requests ({meta['distinct']:,} distinct), {meta['bytes']:,} bytes")
    return stream, path, meta


def stream_problems(server: Server, stream: Stream, sample: int = 500) -> list[str]:
    """About `sample` requests of the stream, evenly spaced, sent with grpcio: the unexpected verdicts."""
    from loadtest.stream import check

    send, close = grpc_sender(server.address)
    try:
        return check(send, stream, every=max(1, len(stream.payloads) // sample))
    finally:
        close()


def check_servers(servers: Sequence[Server], stream: Stream, ignore_verdicts: bool) -> dict[str, Any]:
    """Correctness before speed: every server answers the representative request with gRPC status
    OK, and every Mandate decides the request mix and a sample of the stream as expected."""
    grpc_ok: dict[str, bool] = {}
    verdicts: dict[str, list[str]] = {}
    sampled: dict[str, list[str]] = {}
    for server in servers:
        send, close = grpc_sender(server.address)
        try:
            send(representative().payload)  # raises unless the gRPC status is OK
            grpc_ok[server.label] = True
        finally:
            close()
        if server.kind == "mandate":
            verdicts[server.label] = verify(server.address)
            sampled[server.label] = stream_problems(server, stream)
    problems = [f"{label}: {line}" for found in (verdicts, sampled) for label, lines in found.items() for line in lines]
    say(f"verified: gRPC OK from {len(grpc_ok)} servers; Mandate's verdicts: {len(problems)} unexpected")
    if problems and not ignore_verdicts:
        raise RuntimeError("Mandate did not decide the sample requests as expected:\n" + "\n".join(problems[:40]))
    return {
        "grpc_status_ok": grpc_ok,
        "verdict_problems": verdicts,
        "stream_sample": min(500, len(stream.payloads)),
        "stream_problems": sampled,
    }


def measure_distinct(
    plan: Plan,
    floors: list[Server],
    own_loop: Server,
    mandate: Server,
    flavoured: list[Server],
    stream: Path,
    workdir: Path,
) -> dict[str, Any]:
    """SPEC §8's comparison: every floor, the no-op on Mandate's loop, Mandate at its defaults
    (the default flavour's row of the flavour table) and in each other flavour, alternated
    through the distinct stream; the latencies of 1 in flight kept for the CDF plot."""
    servers = [*floors, own_loop, mandate, *flavoured]
    runs = alternate(
        servers,
        [ONE, SIXTEEN, SPREAD],
        plan.rounds,
        plan.seconds,
        plan.warmup,
        distinct_runner(stream, workdir),
        keep_latencies=lambda server, mode: mode == ONE[0] and server not in (own_loop, *flavoured),
        label="distinct ",
    )
    labels = [floor.label for floor in floors]
    flavours = {DEFAULT_FLAVOUR: mandate, **{server.flavour: server for server in flavoured}} if flavoured else {}
    return {
        "distinct": versus_fastest_floor(runs, labels, mandate.label),
        "own_loop": versus_fastest_floor(runs, [own_loop.label], mandate.label),
        "distinct_flavours": {
            name: {**versus_fastest_floor(runs, labels, server.label, False), "memory": server.memory()}
            for name, server in flavours.items()
        },
        "cdf": {label: series.latencies_us for label, series in runs[ONE[0]].items() if series.latencies_us},
        "memory": {"after_distinct": {"mandate": mandate.memory(), **{f.label: f.memory() for f in floors}}},
    }


def measure_repeated(plan: Plan, floors: list[Server], mandate: Server, workdir: Path) -> dict[str, Any]:
    """One request resent (h2load), every floor and Mandate alternated: what the decision cache
    answers. Reported; it meets no target by itself."""
    runs = alternate(
        [*floors, mandate],
        [ONE, SIXTEEN],
        plan.repeated_rounds,
        plan.repeated_seconds,
        plan.warmup,
        repeated_runner(workdir),
        label="repeated ",
    )
    return versus_fastest_floor(runs, [floor.label for floor in floors], mandate.label)


def measure_locust(plan: Plan, floor: Server, mandate: Server, workdir: Path) -> dict[str, Any]:
    """locust's request mix against the floor and Mandate, the order swapped every other round."""
    found: dict[str, Any] = {
        "users": plan.locust_users,
        "seconds": plan.locust_seconds,
        "floor_label": floor.label,
        "floor": [],
        "mandate": [],
    }
    for round_index in range(plan.locust_rounds):
        order = [floor, mandate] if round_index % 2 == 0 else [mandate, floor]
        for server in order:
            outcome = run_locust(
                server.address, plan.locust_seconds, plan.locust_users, workdir, server.kind == "mandate"
            )
            found[server.kind].append(outcome)
            say(
                f"locust {server.label}: p50 {outcome['p50_us']:.0f} µs p99 {outcome['p99_us']:.0f} µs, "
                f"{outcome['rps']:.0f} req/s, "
                f"{outcome['failures']} failures, {outcome['unexpected_verdicts']} unexpected verdicts"
            )
    return found


def measure_workers(
    plan: Plan, chain_store: list[str], stream: Path, workdir: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    """`--workers 1` against `--workers 2` (both otherwise at the defaults), the distinct stream 16
    in flight over 8 connections, so the kernel spreads connections over the workers' SO_REUSEPORT
    sockets."""
    help_text = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    if not workers_supported(help_text):
        return {"supported": False, "note": "`mandate serve --help` has no --workers option"}
    single, double = (
        mandate_server(f"mandate/{n} worker{'s' * (n > 1)}", chain_store, workdir, workers=n) for n in (1, 2)
    )
    for server in (single, double):
        stack.callback(server.stop)
        server.start()
    try:
        single.wait_serving()
        double.wait_serving()
    except ServerExited as exc:
        note = exc.server.log_tail(3).strip().splitlines()
        say(f"workers: `{exc.server.label}` refused (exit {exc.code}): {note[-1] if note else ''}")
        single.stop()
        return {"supported": False, "note": f"`{exc.server.label}` exits {exc.code}: {note[-1] if note else ''}"}
    problems = verify(double.address) if chain_store else []
    say(f"workers: 2 workers serving ({double.memory()['processes']} processes); verdicts: {len(problems)} unexpected")
    runs = alternate(
        [single, double],
        [SPREAD],
        plan.worker_rounds,
        plan.worker_seconds,
        plan.warmup,
        distinct_runner(stream, workdir),
        label="workers ",
    )
    one, two = runs[SPREAD[0]][single.label], runs[SPREAD[0]][double.label]
    result = {
        "supported": True,
        "mode": SPREAD[0],
        "verdict_problems": problems,
        "1": {"rounds": one.rounds, "aggregate": aggregate(one)},
        "2": {"rounds": two.rounds, "aggregate": aggregate(two)},
        "ratio": paired_ratios(two, one),
        "memory": {"1": single.memory(), "2": double.memory()},
    }
    single.stop()
    double.stop()
    return result


def start_chain_store(kind: str, workdir: Path, stack: contextlib.ExitStack) -> tuple[str | None, list[str]]:
    """A throwaway `redis-server` and a chain key, as in production: its URL and Mandate's flags
    for it. With `--chain-store memory`, neither."""
    if kind != "redis":
        return None, []
    redis_url = stack.enter_context(local_redis())
    key = workdir / "chain.key"
    key.write_text(os.urandom(32).hex() + "\n")
    return redis_url, ["--redis", redis_url, "--chain-key", str(key)]


def run_locust(address: str, seconds: int, users: int, workdir: Path, expect_verdicts: bool) -> dict[str, Any]:
    out = workdir / f"locust-{address.replace(':', '-')}.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtest" / "locustfile.py"),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--host",
        address,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
        "--latency-json",
        str(out),
    ]
    if expect_verdicts:
        command.append("--expect-verdicts")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"locust exited {done.returncode}:\n{done.stderr[-2000:]}\n{done.stdout[-1000:]}")
    result = json.loads(out.read_text())
    result.pop("histogram_us", None)
    return result


def workers_supported(help_text: str) -> bool:
    return "--workers" in help_text


def run_micro(args: Sequence[str], redis_url: str | None, workdir: Path) -> dict[str, Any]:
    """`python -m loadtest.micro --json FILE ...` in a subprocess: its JSON and its text table."""
    out = workdir / "micro.json"
    command = [sys.executable, "-m", "loadtest.micro", "--json", str(out), "--quiet", *args]
    if redis_url:
        command += ["--redis-url", redis_url]
    shown = "python " + shlex.join(command[1:]).replace(str(out), "FILE")
    if redis_url:
        shown = shown.replace(redis_url, "redis://127.0.0.1:PORT/0")  # the runner's throwaway redis-server
    failures: list[dict[str, str]] = []
    for attempt in (1, 2):  # one retry: a neighbour's CPU burst can starve the chain store's liveness ping
        out.unlink(missing_ok=True)
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode == 0 and out.exists():
            return {
                "command": shown,
                "seconds": round(time.monotonic() - started, 1),
                "report": json.loads(out.read_text()),
                "table": done.stdout.strip(),
                "failed_attempts": failures,
            }
        failures.append(
            {
                "error": f"exited {done.returncode}: {last_error(done.stderr or done.stdout)}",
                "output": (done.stderr or done.stdout)[-3000:],
            }
        )
        say(f"micro-benchmark attempt {attempt} failed: {failures[-1]['error']}")
    return {"command": shown, "error": failures[-1]["error"], "failed_attempts": failures}


def last_error(text: str) -> str:
    """The exception line (and its continuation) at the end of a traceback, on one line."""
    lines = text.strip().splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if (
            lines[index]
            and not lines[index].startswith(" ")
            and ("Error" in lines[index].split(":")[0] or "Exception" in lines[index].split(":")[0])
        ):
            return "; ".join(line.strip() for line in lines[index:] if line.strip())[:600]
    return "; ".join(lines[-3:])[:600]


def measure_micro(plan: Plan, redis_url: str | None, workdir: Path) -> dict[str, Any]:
    """The in-process micro-benchmark twice, once the servers are stopped: the same agents at
    every size (with the Redis cases), then requests from every profile."""
    say("micro-benchmark: python -m loadtest.micro " + " ".join(plan.micro))
    found = {"micro": run_micro(plan.micro, redis_url, workdir)}
    every_profile = (*plan.micro, "--callers", "all", "--no-fresh-rss")
    say("micro-benchmark: python -m loadtest.micro " + " ".join(every_profile))
    found["micro_spread"] = run_micro(every_profile, None, workdir)
    for name in ("micro", "micro_spread"):
        if "error" in found[name]:
            say(f"micro-benchmark: {found[name]['error']}")
    return found


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "memory_gb": memory_gb,
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "load_before": os.getloadavg()[1],  # what else ran on the cores, averaged over 5 minutes
    }


def versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    found: dict[str, str] = {"python": platform.python_version()}
    for name in ("mandate", "grpcio", "protobuf", "uvloop", "locust", "gevent", "matplotlib"):
        found[name] = dist(name)
    # how this install runs the request path (setup.py)
    found["request path"] = (
        "interpreted (not compiled at install)" if authz.check.pipeline.__file__.endswith(".py") else "compiled (mypyc)"
    )
    with contextlib.suppress(RuntimeError, OSError):
        found["h2load"] = h2load.h2load_version()
    with contextlib.suppress(RuntimeError, OSError):
        found["h2grpc"] = h2grpc.version()
    if shutil.which("redis-server"):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()
        found["redis-server"] = next((part.split("=", 1)[1] for part in out if part.startswith("v=")), "unknown")
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        found["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    return found


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="shorter runs (about 3 minutes)"
    )
    mode.add_argument(
        "--smoke",
        dest="mode",
        action="store_const",
        const="smoke",
        help="seconds: every tool end to end, for CI; no BENCHMARKS.md unless --out",
    )
    parser.set_defaults(mode="full")
    parser.add_argument(
        "--out", type=Path, help="the report (default: BENCHMARKS.md at the repository root; none with --smoke)"
    )
    parser.add_argument("--plot", type=Path, help="the CDF plot (default: benchmarks/latency-cdf.png next to --out)")
    parser.add_argument("--json", type=Path, help="raw results (default: benchmarks/results.json next to --out)")
    parser.add_argument(
        "--flavours",
        type=lambda text: [f for f in text.split(",") if f],
        default=list(FLAVOURS),
        help="grpcio's flavours of the floor (and of the flavour table, beside Mandate's default); comma-separated, "
        "default all three",
    )
    parser.add_argument(
        "--chain-store",
        choices=("redis", "memory"),
        default="redis",
        help="Mandate's chain store (default: a throwaway redis-server)",
    )
    parser.add_argument(
        "--ignore-verdicts", action="store_true", help="measure even if Mandate decides a sample request unexpectedly"
    )
    args = parser.parse_args(argv)
    for flavour in args.flavours:
        if flavour not in FLAVOURS:
            parser.error(f"--flavours: unknown flavour {flavour!r}")
    if not args.flavours:
        parser.error("--flavours: at least one")
    if args.out is None and args.mode != "smoke":
        args.out = ROOT / "BENCHMARKS.md"
    if args.out is not None:
        args.plot = args.plot or args.out.parent / "benchmarks" / "latency-cdf.png"
        args.json = args.json or args.out.parent / "benchmarks" / "results.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results = benchmark(args, argv)
    one, sixteen = results["distinct"][ONE[0]], results["distinct"][SIXTEEN[0]]
    print(
        f"distinct, 1 in flight: fastest floor ({one['fastest_floor']}) p50 "
        f"{one['floor']['aggregate']['p50_us']['median']:.0f} µs, Mandate p50 "
        f"{one['mandate']['aggregate']['p50_us']['median']:.0f} µs ({one['ratio']['p50_us']['median']:.2f}×), "
        f"p99 {one['mandate']['aggregate']['p99_us']['median']:.0f} µs; 16 in flight: Mandate "
        f"{sixteen['ratio']['rps']['median'] * 100:.0f} % of {sixteen['fastest_floor']}'s req/s"
    )
    for row in targets(results):
        print(f"  {row['result']:<12} {row['target']}: {row['measured']}")
    if args.out is not None:
        plot_cdf(
            {
                f"fastest floor ({one['fastest_floor']})": results["cdf"].get(one["fastest_floor"], []),
                "Mandate": results["cdf"].get("mandate", []),
            },
            args.plot,
            f"Check latency, 1 in flight, distinct stream (h2grpc), {results['machine']['cores']} cores",
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        raw = {key: value for key, value in results.items() if key != "cdf"}
        args.json.write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
        write_report(args.out, markdown(results, args.plot, args.out, args.json))
        say(f"wrote {args.out}, {args.plot}, {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
