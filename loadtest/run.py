"""The benchmark: Mandate against the no-op floor, side by side, and BENCHMARKS.md.

    python -m loadtest.run              # the full run (about 5 minutes on 2 cores), writes BENCHMARKS.md
    python -m loadtest.run --quick      # shorter runs, same report
    python -m loadtest.run --smoke      # seconds: proves every tool still runs (CI); writes nothing unless --out

What it does, in one process tree it cleans up after itself:

1. starts a throwaway `redis-server` (the chain store, as in production; `--chain-store
   memory` for none), then, for each gRPC flavour measured, the floor (`python -m
   loadtest.floor`) and `mandate serve` on the example policies, on free loopback ports,
   with the same flavour and thread count; the audit lines go to /dev/null;
2. checks that the representative request comes back with gRPC status OK from every
   server (h2load only sees HTTP 200) and that Mandate decides it and the whole request
   mix (chained calls carrying a token this Mandate handed out) as expected;
3. runs h2load (loadtest/h2load.py) alternately against the floor and Mandate, round after
   round, one request in flight (`-c 1 -m 1`) and sixteen (`-c 1 -m 16`), so noise from
   the shared machine hits both alike; the order within a round alternates too;
4. the same, shorter, for every gRPC flavour (threads, asyncio, uvloop);
5. locust (loadtest/locustfile.py, the weighted request mix, µs histogram) against each;
6. 1 vs 2 `--workers` (16 in flight over 8 connections), when `mandate serve` supports it;
7. Mandate's resident memory (VmRSS), and the in-process micro-benchmark
   (`python -m loadtest.micro`: decision path at 10 / 1,000 / 10,000 profiles, one Redis
   round trip on a cache miss, RSS with 10,000 profiles), twice: with the same agents sending
   at every size (what the profile count costs), then with every profile sending (`--callers
   all`: what more agents cost);
8. writes BENCHMARKS.md (loadtest/report.py: every figure the median of the rounds, min–max
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
import signal
import socket
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
from loadtest import h2load
from loadtest.micro.redis_server import local_redis
from loadtest.report import ONE_IN_FLIGHT, SIXTEEN_IN_FLIGHT, markdown, plot_cdf, targets, write_report
from loadtest.requests import ROOT, grpc_frame, grpc_sender, representative, verify

FLAVOURS = ("threads", "asyncio", "uvloop")
SERVER_THREADS = 16  # mandate serve's default; the floor is given the same


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    rounds: int  # main comparison: rounds of (floor, mandate) × (1, 16 in flight)
    seconds: float
    warmup: float
    flavour_rounds: int  # 0: only the main flavour is started, no flavour comparison
    flavour_seconds: float
    locust_rounds: int
    locust_seconds: int
    locust_users: int
    worker_rounds: int
    worker_seconds: float
    micro: tuple[str, ...]  # arguments to `python -m loadtest.micro`


PLANS = {
    "full": Plan(7, 2.0, 0.5, 3, 1.2, 1, 10, 16, 3, 2.0, ("--sizes", "10,1000,10000", "--seconds-per-case", "0.6")),
    "quick": Plan(
        3, 1.5, 0.3, 1, 1.0, 1, 5, 16, 1, 1.5, ("--sizes", "10,10000", "--seconds-per-case", "0.3", "--no-fresh-rss")
    ),
    "smoke": Plan(1, 0.4, 0.1, 0, 0.4, 1, 2, 4, 1, 0.4, ("--smoke",)),
}
# (name, h2load clients, streams per client)
ONE = (ONE_IN_FLIGHT, 1, 1)
SIXTEEN = (SIXTEEN_IN_FLIGHT, 1, 16)
SIXTEEN_SPREAD = ("16 in flight, 8 connections", 8, 2)

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                queue += [int(child) for child in (task / "children").read_text().split()]
    return pids


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of `pid` and its descendants, summed (one entry per process)."""
    totals = {"VmRSS": 0, "VmHWM": 0, "processes": 0}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    totals[key] += int(value.split()[0])
            totals["processes"] += 1
    return totals


class Server:
    """A Check server subprocess in its own session (so workers it forks are stopped with it)."""

    def __init__(
        self, label: str, kind: str, flavour: str, command: list[str], address: str, log: Path, workers: int = 1
    ) -> None:
        self.label, self.kind, self.flavour, self.command, self.address, self.log = (
            label,
            kind,
            flavour,
            command,
            address,
            log,
        )
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.ready_seconds = 0.0

    def start(self) -> Server:
        self.started = time.monotonic()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        return self

    def wait_serving(self, timeout: float = 60.0) -> Server:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise ServerExited(self, self.proc.returncode)
                with contextlib.suppress(grpc.RpcError):
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                        and self._ready()
                    ):
                        self.ready_seconds = time.monotonic() - self.started
                        return self
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.label} not serving on {self.address} after {timeout:.0f} s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def _ready(self) -> bool:
        """Mandate's /readyz (with --workers: every worker ready, not just the one that answered health)."""
        if "--metrics-listen" not in self.command:
            return True
        import urllib.error
        import urllib.request

        metrics = self.command[self.command.index("--metrics-listen") + 1]
        try:
            with urllib.request.urlopen(f"http://{metrics}/readyz", timeout=1) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def memory(self) -> dict[str, int]:
        assert self.proc is not None
        return memory_kb(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class ServerExited(RuntimeError):
    def __init__(self, server: Server, code: int) -> None:
        super().__init__(f"{server.label} exited with {code}:\n{server.log_tail()}")
        self.server, self.code = server, code


def floor_command(flavour: str, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loadtest.floor",
        "--listen",
        address,
        "--grpc-server",
        flavour,
        "--threads",
        str(SERVER_THREADS),
    ]


def mandate_command(
    flavour: str,
    address: str,
    chain_store: list[str],
    workers: int = 1,
    policies: Path = ROOT / "policies",
    decision_cache: int | None = None,
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "authz",
        "serve",
        "--policies",
        str(policies),
        "--listen",
        address,
        "--metrics-listen",
        f"127.0.0.1:{free_port()}",
        "--grpc-server",
        flavour,
        *chain_store,
    ]
    if decision_cache is not None:
        command += ["--decision-cache", str(decision_cache)]
    return command + (["--workers", str(workers)] if workers != 1 else [])


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Series:
    """Per-round summaries for one server in one mode, and (optionally) every latency."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)


def alternate(
    servers: Sequence[Server],
    modes: Sequence[tuple[str, int, int]],
    rounds: int,
    seconds: float,
    warmup: float,
    workdir: Path,
    keep_latencies: Callable[[Server, str], bool] = lambda s, m: False,
    label: str = "",
) -> dict[str, dict[str, Series]]:
    """h2load round after round: in each round, each mode, each server in turn (the order of
    the servers reversed every other round). Returns {mode: {server label: Series}}."""
    frame = grpc_frame(representative().payload)
    results: dict[str, dict[str, Series]] = {mode[0]: {server.label: Series() for server in servers} for mode in modes}
    for round_index in range(rounds):
        order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
        for mode, clients, streams in modes:
            for server in order:
                result = h2load.run(
                    server.address,
                    frame,
                    seconds=seconds,
                    clients=clients,
                    streams=streams,
                    warmup=warmup,
                    workdir=workdir,
                )
                series = results[mode][server.label]
                series.rounds.append(result.summary())
                if keep_latencies(server, mode):
                    series.latencies_us += result.latencies_us
                if result.failed or result.non_2xx:
                    say(f"  {server.label}: {result.failed} failed, {result.non_2xx} non-2xx responses")
            line = "  ".join(
                f"{s.label} p50 {results[mode][s.label].rounds[-1]['p50_us']:.0f} µs "
                f"{results[mode][s.label].rounds[-1]['rps']:.0f}/s"
                for s in servers
            )
            say(f"{label}round {round_index + 1}/{rounds} {mode}: {line}")
    return results


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


# --- figures -----------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else {}


def aggregate(series: Series) -> dict[str, dict[str, float]]:
    keys = ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "mean_us")
    return {key: spread([entry[key] for entry in series.rounds]) for key in keys}


def paired_ratios(mandate: Series, floor: Series) -> dict[str, dict[str, float]]:
    """Mandate / floor, round by round (each round's two runs are next to each other in time)."""
    ratios = {}
    for key in ("p50_us", "p90_us", "p99_us", "p999_us", "rps"):
        values = [m[key] / f[key] for m, f in zip(mandate.rounds, floor.rounds) if f[key]]
        ratios[key] = spread(values)
    return ratios


def comparison(results: dict[str, dict[str, Series]], floor_label: str, mandate_label: str) -> dict[str, Any]:
    return {
        mode: {
            "floor": {"rounds": by_server[floor_label].rounds, "aggregate": aggregate(by_server[floor_label])},
            "mandate": {"rounds": by_server[mandate_label].rounds, "aggregate": aggregate(by_server[mandate_label])},
            "ratio": paired_ratios(by_server[mandate_label], by_server[floor_label]),
        }
        for mode, by_server in results.items()
    }


# --- the machine -------------------------------------------------------------------------------


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


# --- the run -----------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Every part of the run, in the order of the module docstring; whatever happens, the stack
    stops every server and the Redis it started."""
    plan = PLANS[args.mode]
    main_flavour = args.grpc_server
    flavours = [main_flavour] + ([f for f in args.flavours if f != main_flavour] if plan.flavour_rounds else [])
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "loadtest.run", *argv]),
        "mode": args.mode,
        "plan": plan.__dict__,
        "machine": machine(),
        "versions": versions(),
    }
    say(
        f"{args.mode} run; {results['machine']['cpu']}, {results['machine']['cores']} cores; flavours "
        f"{', '.join(flavours)}"
    )
    with tempfile.TemporaryDirectory(prefix="mandate-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        redis_url, chain_store = start_chain_store(args.chain_store, workdir, stack)
        results["settings"] = {
            "main_flavour": main_flavour,
            "threads": SERVER_THREADS,
            "chain_store": args.chain_store,
            "audit": "one JSON line per decision to stdout, redirected to /dev/null",
            "representative": representative().name,
            "representative_bytes": len(representative().payload),
        }
        servers, uncached = start_servers(flavours, main_flavour, chain_store, workdir, stack)
        results["verification"] = check_servers(servers, args.ignore_verdicts)
        floor, mandate = servers[("floor", main_flavour)], servers[("mandate", main_flavour)]
        results.update(measure_main(plan, floor, mandate, uncached, workdir))
        results["flavours"] = measure_flavours(plan, servers, flavours, workdir)
        results["locust"] = measure_locust(plan, floor, mandate, workdir)
        results["workers"] = measure_workers(plan, mandate, chain_store, workdir, stack)
        results["memory"]["end"] = {
            label: server.memory() for label, server in (("mandate", mandate), ("floor", floor))
        }
        for server in servers.values():
            server.stop()
        results.update(measure_micro(plan, redis_url, workdir))
    return results


def start_chain_store(kind: str, workdir: Path, stack: contextlib.ExitStack) -> tuple[str | None, list[str]]:
    """A throwaway `redis-server` and a chain key, as in production: its URL and Mandate's flags
    for it. With `--chain-store memory`, neither."""
    if kind != "redis":
        return None, []
    redis_url = stack.enter_context(local_redis())
    key = workdir / "chain.key"
    key.write_text(os.urandom(32).hex() + "\n")
    return redis_url, ["--redis", redis_url, "--chain-key", str(key)]


def start_servers(
    flavours: Sequence[str], main_flavour: str, chain_store: list[str], workdir: Path, stack: contextlib.ExitStack
) -> tuple[dict[tuple[str, str], Server], Server]:
    """The floor and Mandate for every flavour, and an uncached Mandate of the main flavour, all
    started before any is waited for (they load in parallel); returned once every one serves."""
    servers: dict[tuple[str, str], Server] = {}
    for flavour in flavours:
        for kind in ("floor", "mandate"):
            address = f"127.0.0.1:{free_port()}"
            command = (
                floor_command(flavour, address) if kind == "floor" else mandate_command(flavour, address, chain_store)
            )
            server = Server(f"{kind}/{flavour}", kind, flavour, command, address, workdir / f"{kind}-{flavour}.log")
            servers[(kind, flavour)] = server
            stack.callback(server.stop)
            server.start()
    # The same Mandate deciding every request afresh: h2load repeats one request, which
    # the decision cache answers from the second on; this server shows a first decision.
    address = f"127.0.0.1:{free_port()}"
    uncached = Server(
        f"mandate-uncached/{main_flavour}",
        "mandate",
        main_flavour,
        mandate_command(main_flavour, address, chain_store, decision_cache=0),
        address,
        workdir / "mandate-uncached.log",
    )
    stack.callback(uncached.stop)
    uncached.start()
    for server in (*servers.values(), uncached):
        server.wait_serving()
    say("servers up: " + ", ".join(f"{s.label} {s.address} ({s.ready_seconds:.1f} s)" for s in servers.values()))
    return servers, uncached


def check_servers(servers: dict[tuple[str, str], Server], ignore_verdicts: bool) -> dict[str, Any]:
    """Correctness before speed: h2load only sees HTTP 200, so every server must answer the
    representative request with gRPC status OK, and every Mandate decide the mix as expected."""
    frame_payload = representative().payload
    grpc_ok: dict[str, bool] = {}
    verdicts: dict[str, list[str]] = {}
    for (kind, _), server in servers.items():
        send, close = grpc_sender(server.address)
        try:
            send(frame_payload)  # raises unless the gRPC status (grpc-status trailer) is OK
            grpc_ok[server.label] = True
        finally:
            close()
        if kind == "mandate":
            verdicts[server.label] = verify(server.address)
    problems = [f"{label}: {line}" for label, lines in verdicts.items() for line in lines]
    say(f"verified: gRPC OK from {len(grpc_ok)} servers; Mandate's verdicts: {len(problems)} unexpected")
    if problems and not ignore_verdicts:
        raise RuntimeError("Mandate did not decide the sample requests as expected:\n" + "\n".join(problems))
    return {"grpc_status_ok": grpc_ok, "verdict_problems": verdicts}


def measure_main(plan: Plan, floor: Server, mandate: Server, uncached: Server, workdir: Path) -> dict[str, Any]:
    """The main comparison, the three servers alternating: its figures, the latencies behind the
    CDF plot, and the servers' memory after it."""
    main_runs = alternate(
        [floor, mandate, uncached],
        [ONE, SIXTEEN],
        plan.rounds,
        plan.seconds,
        plan.warmup,
        workdir,
        keep_latencies=lambda server, mode: mode == ONE[0] and server is not uncached,
        label="main ",
    )
    uncached.stop()
    return {
        "main": comparison(main_runs, floor.label, mandate.label),
        "uncached": comparison(main_runs, floor.label, uncached.label),
        "cdf": {label: series.latencies_us for label, series in main_runs[ONE[0]].items()},
        "memory": {"after_main": {"mandate": mandate.memory(), "floor": floor.memory()}},
    }


def measure_flavours(
    plan: Plan, servers: dict[tuple[str, str], Server], flavours: Sequence[str], workdir: Path
) -> dict[str, Any]:
    """Every flavour's floor and Mandate, all alternated in the same rounds (none when the plan has
    no flavour rounds)."""
    found: dict[str, Any] = {}
    if plan.flavour_rounds:
        ordered = [servers[(kind, flavour)] for flavour in flavours for kind in ("floor", "mandate")]
        runs = alternate(
            ordered, [ONE, SIXTEEN], plan.flavour_rounds, plan.flavour_seconds, plan.warmup, workdir, label="flavours "
        )
        for flavour in flavours:
            found[flavour] = comparison(runs, f"floor/{flavour}", f"mandate/{flavour}")
            found[flavour]["memory"] = servers[("mandate", flavour)].memory()
    return found


def measure_locust(plan: Plan, floor: Server, mandate: Server, workdir: Path) -> dict[str, Any]:
    """locust's request mix against the floor and Mandate, the order swapped every other round."""
    found: dict[str, Any] = {"users": plan.locust_users, "seconds": plan.locust_seconds, "floor": [], "mandate": []}
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


def measure_workers(
    plan: Plan, single: Server, chain_store: list[str], workdir: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    """Mandate with 1 worker (the running one) against 2, 16 in flight over 8 connections."""
    help_text = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    if not workers_supported(help_text):
        return {"supported": False, "note": "`mandate serve --help` has no --workers option"}
    address = f"127.0.0.1:{free_port()}"
    double = Server(
        f"mandate/{single.flavour}/2 workers",
        "mandate",
        single.flavour,
        mandate_command(single.flavour, address, chain_store, workers=2),
        address,
        workdir / "mandate-2-workers.log",
        workers=2,
    )
    stack.callback(double.stop)
    try:
        double.start().wait_serving()
    except ServerExited as exc:
        note = exc.server.log_tail(3).strip().splitlines()
        say(f"workers: `mandate serve --workers 2` refused (exit {exc.code}): {note[-1] if note else ''}")
        return {"supported": False, "note": f"`mandate serve --workers 2` exits {exc.code}: {note[-1] if note else ''}"}
    problems = verify(address) if chain_store else []
    say(f"workers: 2 workers serving ({double.memory()['processes']} processes); verdicts: {len(problems)} unexpected")
    runs = alternate(
        [single, double],
        [SIXTEEN_SPREAD],
        plan.worker_rounds,
        plan.worker_seconds,
        plan.warmup,
        workdir,
        label="workers ",
    )
    series = runs[SIXTEEN_SPREAD[0]]
    one, two = series[single.label], series[double.label]
    result = {
        "supported": True,
        "mode": SIXTEEN_SPREAD[0],
        "verdict_problems": problems,
        "1": {"rounds": one.rounds, "aggregate": aggregate(one)},
        "2": {"rounds": two.rounds, "aggregate": aggregate(two)},
        "ratio": paired_ratios(two, one),
        "memory": {"1": single.memory(), "2": double.memory()},
    }
    double.stop()
    return result


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="shorter runs (about 2 minutes)"
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
    parser.add_argument("--grpc-server", choices=FLAVOURS, default="threads", help="the flavour of the main comparison")
    parser.add_argument(
        "--flavours",
        type=lambda text: [f for f in text.split(",") if f],
        default=list(FLAVOURS),
        help="flavours compared (comma-separated; default all three)",
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
    one = results["main"][ONE[0]]
    sixteen = results["main"][SIXTEEN[0]]
    print(
        f"1 in flight: floor p50 {one['floor']['aggregate']['p50_us']['median']:.0f} µs, Mandate p50 "
        f"{one['mandate']['aggregate']['p50_us']['median']:.0f} µs ({one['ratio']['p50_us']['median']:.2f}×), "
        f"Mandate p99 "
        f"{one['mandate']['aggregate']['p99_us']['median']:.0f} µs; 16 in flight: Mandate "
        f"{sixteen['ratio']['rps']['median'] * 100:.0f} % "
        f"of the floor's req/s"
    )
    for row in targets(results):
        print(f"  {row['result']:<12} {row['target']}: {row['measured']}")
    if args.out is not None:
        flavour = results["settings"]["main_flavour"]
        plot_cdf(
            {
                "floor": results["cdf"].get(f"floor/{flavour}", []),
                "Mandate": results["cdf"].get(f"mandate/{flavour}", []),
            },
            args.plot,
            f"Check latency, 1 in flight, h2load, gRPC {flavour} ({results['machine']['cores']} cores)",
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        raw = {key: value for key, value in results.items() if key != "cdf"}
        args.json.write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
        write_report(args.out, markdown(results, args.plot, args.out, args.json))
        say(f"wrote {args.out}, {args.plot}, {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
