"""How much a policy reload under load stalls a Check (SPEC §8: "a reload under load never stalls a
Check by more than a few ms"), measured against a real `mandate serve`.

It writes a generated policy set (loadtest.micro.policyset, 100,000 profiles by default), starts
`mandate serve --policies DIR` on loopback, and sends Checks with grpcio, one in flight, each
distinct (a new JSON-RPC id and argument, or a new query string), drawn from what the first ten
profiles send (allowed and refused tool calls, tools/list, egress GETs) and each checked against
the verdict it must get. Between quiet stretches it triggers reloads, by SIGHUP and by rewriting a
policy file in turn, and reads from the server's log when each one finished. Every Check is timed
on the client; those that started while a reload ran (from the trigger to the log line that says
it is done, the old set freed) are reported apart from the others: p50 / p99 / p99.9 / max, and
per reload its duration, the server's own compile time and the slowest Check during it.

    python -m loadtest.reload_stall [--profiles 100000] [--reloads 4] [--quiet-seconds 5] [--json F]
    python -m loadtest.reload_stall --smoke     # 200 profiles, two reloads: seconds (CI)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc import code_pb2

from authz.check.request import AuthzInput, to_check_request
from loadtest.micro.policyset import write_policy_set
from loadtest.micro.pools import build_pools, first_callers

CHECK = "/envoy.service.auth.v3.Authorization/Check"
CALLERS = 10  # requests come from the first ten profiles, the same agents at every size
RELOADED = re.compile(r"policy reloaded: version (\S+), (\d+) profiles(?:, compiled in ([\d.]+) s)?")
REJECTED = "policy reload rejected"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loadtest.reload_stall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=100_000, help="size of the generated set (default 100000)")
    parser.add_argument("--policies", type=Path, help="reload this directory instead of generating one")
    parser.add_argument("--reloads", type=int, default=4, help="reloads to trigger, SIGHUP and file rewrite in turn")
    parser.add_argument("--quiet-seconds", type=float, default=5.0, help="load without a reload before each one")
    parser.add_argument("--reload-timeout", type=float, default=300.0, help="give up on a reload after this long")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--smoke", action="store_true", help="200 profiles, two reloads, 1 s quiet: seconds (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.profiles, args.reloads, args.quiet_seconds = 200, 2, 1.0
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`mandate serve` as a subprocess, its log read line by line with the time each arrived."""

    def __init__(self, policies: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "authz", "serve", "--policies", str(policies), "--listen", self.address]
        command += ["--metrics-listen", f"127.0.0.1:{free_port()}", "--workers", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_") or k == "MANDATE_COMPILE"}
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, bufsize=1
        )
        self.lines: list[tuple[float, str]] = []
        self._new_line = threading.Condition()
        threading.Thread(target=self._read, name="server-log", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._new_line:
                self.lines.append((time.perf_counter(), line.rstrip("\n")))
                self._new_line.notify_all()

    def wait_for(self, pattern: str, after: int, timeout: float) -> tuple[float, str]:
        """The first log line from index `after` on that contains `pattern` (or a rejected reload)."""
        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                for at, line in self.lines[after:]:
                    if pattern in line or REJECTED in line:
                        return at, line
                if self.proc.poll() is not None or not self._new_line.wait(deadline - time.monotonic()):
                    tail = "\n".join(line for _, line in self.lines[-15:])
                    raise RuntimeError(f"no {pattern!r} in mandate serve's log within {timeout:.0f} s:\n{tail}")

    def memory_mb(self) -> dict[str, float]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status if ":" in line)
        return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def requests(generated_set: Any) -> list[tuple[AuthzInput, bool]]:
    """What the first profiles send, each with whether it must be allowed."""
    pools = build_pools(first_callers(generated_set, CALLERS), 64)
    allowed = pools.mcp_call_allowed + pools.mcp_tools_list + pools.egress_get
    return [(request, True) for request in allowed] + [(request, False) for request in pools.mcp_call_denied]


def distinct(pool: list[tuple[AuthzInput, bool]]) -> Iterator[tuple[bytes, bool]]:
    """The pool over and over, every CheckRequest different from every other: a JSON-RPC body gets
    a new id (and a tool call a new argument), a GET a new query string."""
    number = 0
    while True:
        for request, allowed in pool:
            number += 1
            if request.body:
                message = orjson.loads(request.body)
                message["id"] = number
                if "arguments" in message.get("params", {}):
                    message["params"]["arguments"]["request_number"] = number
                body = orjson.dumps(message)
                headers = {**request.headers, "content-length": str(len(body))}
                varied = dataclasses.replace(request, body=body, headers=headers)
            else:
                path = f"{request.path}?n={number}"
                varied = dataclasses.replace(request, path=path, headers={**request.headers, ":path": path})
            yield to_check_request(varied).SerializeToString(), allowed


@dataclasses.dataclass
class Sample:
    started: float  # perf_counter seconds
    micros: float
    right: bool  # the verdict it had to get


class Driver(threading.Thread):
    """Checks one at a time until stopped, each timed on its own."""

    def __init__(self, address: str, pool: list[tuple[AuthzInput, bool]]) -> None:
        super().__init__(name="driver", daemon=True)
        self.channel = grpc.insecure_channel(address)
        self.check = self.channel.unary_unary(CHECK)
        self.pool = pool
        self.samples: list[Sample] = []
        self.errors = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        for payload, allowed in distinct(self.pool):
            if self.stopping.is_set():
                return
            started = time.perf_counter()
            try:
                answer = self.check(payload, timeout=10)
            except grpc.RpcError:
                self.errors += 1
                continue
            micros = (time.perf_counter() - started) * 1e6
            ok = CheckResponse.FromString(answer).status.code == code_pb2.OK
            self.samples.append(Sample(started, micros, ok == allowed))

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.channel.close()


@dataclasses.dataclass
class Reload:
    how: str  # "SIGHUP" or "file rewrite"
    triggered: float
    finished: float = 0.0
    server_compile_s: float | None = None
    log: str = ""


def trigger(how: str, server: Server, directory: Path, number: int) -> None:
    """SIGHUP reloads even an unchanged set; a rewritten file is noticed by the watcher's polling."""
    if how == "SIGHUP":
        server.proc.send_signal(signal.SIGHUP)
        return
    settings = directory / "settings.yaml"
    settings.write_text(settings.read_text() + f"# reload {number}\n", encoding="utf-8")


def reload_once(how: str, server: Server, directory: Path, number: int, timeout: float) -> Reload:
    seen = len(server.lines)
    reload = Reload(how, time.perf_counter())
    trigger(how, server, directory, number)
    reload.finished, reload.log = server.wait_for("policy reloaded", seen, timeout)
    found = RELOADED.search(reload.log)
    if found is None:
        raise RuntimeError(f"reload {number} ({how}) did not apply: {reload.log}")
    reload.server_compile_s = float(found.group(3)) if found.group(3) else None
    return reload


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(ordered), "p50_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999), "max_us": at(1.0)}


def summarize(samples: list[Sample], reloads: list[Reload], measured_from: float) -> dict[str, Any]:
    """Checks that started while a reload ran against every other one after the warm-up."""
    during: list[float] = []
    outside: list[float] = []
    per_reload = []
    for reload in reloads:
        inside = [s.micros for s in samples if reload.triggered <= s.started <= reload.finished]
        during += inside
        per_reload.append(
            {
                "how": reload.how,
                "seconds": round(reload.finished - reload.triggered, 2),
                "server_compile_seconds": reload.server_compile_s,
                "checks": len(inside),
                "p99_us": percentiles(inside).get("p99_us"),
                "max_us": round(max(inside), 1) if inside else None,
            }
        )
    for sample in samples:
        if sample.started >= measured_from and not any(r.triggered <= sample.started <= r.finished for r in reloads):
            outside.append(sample.micros)
    return {"during_reloads": percentiles(during), "outside_reloads": percentiles(outside), "reloads": per_reload}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mandate-reload-stall-") as scratch:
        directory = args.policies or Path(scratch) / "policies"
        started = time.perf_counter()
        generated = write_policy_set(directory, args.profiles)
        generate_seconds = time.perf_counter() - started
        server = Server(directory)
        try:
            return _measure(args, server, directory, requests(generated), generate_seconds)
        finally:
            server.stop()


def _measure(
    args: argparse.Namespace, server: Server, directory: Path, pool: list[tuple[AuthzInput, bool]], generated_s: float
) -> dict[str, Any]:
    launched = time.perf_counter()
    ready_at, _ = server.wait_for("mandate serving on", 0, args.reload_timeout)
    driver = Driver(server.address, pool)
    driver.start()
    time.sleep(min(2.0, args.quiet_seconds))  # warm-up: connections, caches
    measured_from = time.perf_counter()
    memory = {"serving": server.memory_mb()}
    reloads = []
    for number in range(args.reloads):
        time.sleep(args.quiet_seconds)
        how = "SIGHUP" if number % 2 == 0 else "file rewrite"
        reloads.append(reload_once(how, server, directory, number, args.reload_timeout))
    time.sleep(args.quiet_seconds)
    driver.stop()
    memory["after_reloads"] = server.memory_mb()
    return {
        "benchmark": "mandate-reload-stall",
        "profiles": args.profiles,
        "smoke": args.smoke,
        "generate_seconds": round(generated_s, 1),
        "start_seconds": round(ready_at - launched, 1),
        "memory_mb": memory,
        "checks": len(driver.samples),
        "wrong_verdicts": sum(not s.right for s in driver.samples),
        "grpc_errors": driver.errors,
        **summarize(driver.samples, reloads, measured_from),
    }


def format_report(result: dict[str, Any]) -> str:
    memory = result["memory_mb"]
    head = (
        f"mandate serve with {result['profiles']:,} profiles: started in {result['start_seconds']} s; "
        f"{result['checks']:,} Checks, one in flight, {result['wrong_verdicts']} wrong verdicts, "
        f"{result['grpc_errors']} gRPC errors; RSS serving {memory['serving']['VmRSS']:.0f} MB, "
        f"after the reloads {memory['after_reloads']['VmRSS']:.0f} MB (peak {memory['after_reloads']['VmHWM']:.0f} MB)"
    )
    lines = [
        head,
        "",
        f"{'Checks':<16} {'n':>8} {'p50 µs':>8} {'p99 µs':>8} {'p99.9 µs':>9} {'max µs':>9}",
    ]
    for label, key in (("outside reloads", "outside_reloads"), ("during reloads", "during_reloads")):
        s = result[key]
        if s["n"]:
            lines.append(
                f"{label:<16} {s['n']:>8} {s['p50_us']:>8} {s['p99_us']:>8} {s['p999_us']:>9} {s['max_us']:>9}"
            )
    lines += ["", f"{'reload':<14} {'seconds':>8} {'compile s':>10} {'Checks':>7} {'p99 µs':>8} {'max µs':>9}"]
    for r in result["reloads"]:
        compile_s = r["server_compile_seconds"] if r["server_compile_seconds"] is not None else "-"
        lines.append(
            f"{r['how']:<14} {r['seconds']:>8} {compile_s:>10} {r['checks']:>7} {r['p99_us'] or '-':>8} "
            f"{r['max_us'] or '-':>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if result["wrong_verdicts"] or result["grpc_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
