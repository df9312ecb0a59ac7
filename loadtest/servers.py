"""The Check servers the benchmark starts and watches: the floor and `mandate serve`, each a
subprocess in its own session on free loopback ports, with what the runner reads from them
between runs: resident memory, CPU time, and Mandate's own `mandate_check_duration_seconds`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from loadtest.requests import ROOT

SERVER_THREADS = 16  # the floor's thread count: mandate serve's default
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# What `mandate serve` reads from the environment: the servers are started without them, so
# "default settings" are mandate serve's own defaults, not whatever this shell has set.
SERVE_ENVIRONMENT = ("MANDATE_GRPC_SERVER", "MANDATE_WORKERS", "MANDATE_DECISION_CACHE", "MANDATE_CHAIN_STORE_TIMEOUT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its live descendants, every thread included (/proc/PID/stat)."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return ticks / CLOCK_TICKS


def check_histogram(metrics: str) -> dict[str, Any]:
    """`mandate_check_duration_seconds` from Mandate's /metrics: cumulative counts by upper bound
    (seconds), the sum and the count."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, Any] = {"buckets": {}, "sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name != "mandate_check_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                found["buckets"][float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                found["sum"] = sample.value
            elif sample.name.endswith("_count"):
                found["count"] = sample.value
    return found


def histogram_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Mandate's own time per Check over the requests between two scrapes: the mean (exact) and
    p50 / p99 interpolated within the histogram's buckets (coarse: 10, 25, 50, 100, 250 µs ...)."""
    count = after["count"] - before["count"]
    if count <= 0:
        return {}
    bounds = sorted(after["buckets"])
    cumulative = [after["buckets"][b] - before["buckets"].get(b, 0.0) for b in bounds]
    figures = {"in_server_mean_us": (after["sum"] - before["sum"]) / count * 1e6}
    for name, fraction in (("in_server_p50_us", 0.5), ("in_server_p99_us", 0.99)):
        rank = fraction * count
        lower_bound, lower_count = 0.0, 0.0
        for bound, seen in zip(bounds, cumulative, strict=True):
            if seen >= rank:
                if bound == float("inf"):
                    figures[name] = lower_bound * 1e6
                else:
                    share = (rank - lower_count) / (seen - lower_count) if seen > lower_count else 1.0
                    figures[name] = (lower_bound + share * (bound - lower_bound)) * 1e6
                break
            lower_bound, lower_count = bound, seen
    return figures


class Server:
    """A Check server subprocess in its own session (so workers it forks are stopped with it)."""

    def __init__(self, label: str, kind: str, flavour: str, command: list[str], address: str, log: Path) -> None:
        self.label, self.kind, self.flavour, self.command = label, kind, flavour, command
        self.address, self.log = address, log
        self.metrics = command[command.index("--metrics-listen") + 1] if "--metrics-listen" in command else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.ready_seconds = 0.0

    def start(self) -> Server:
        self.started = time.monotonic()
        environment = {key: value for key, value in os.environ.items() if key not in SERVE_ENVIRONMENT}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=environment,
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
        """Mandate's /readyz (with workers: every worker ready, not just the one that answered health)."""
        if self.metrics is None:
            return True
        try:
            with urllib.request.urlopen(f"http://{self.metrics}/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def memory(self) -> dict[str, int]:
        return memory_kb(self.pid)

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


def floor_server(flavour: str, workdir: Path) -> Server:
    """The no-op floor (loadtest/floor.py) in `flavour`."""
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "loadtest.floor", "--listen", address, "--grpc-server", flavour]
    command += ["--threads", str(SERVER_THREADS)]
    return Server(f"floor/{flavour}", "floor", flavour, command, address, workdir / f"floor-{flavour}.log")


def mandate_server(
    label: str, chain_store: list[str], workdir: Path, flavour: str | None = None, workers: int | None = None
) -> Server:
    """`mandate serve` on the example policies; a flavour or worker count only where given (none:
    its defaults). The metrics port is its own, for /readyz and the check duration."""
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "authz", "serve", "--policies", str(ROOT / "policies"), "--listen", address]
    command += ["--metrics-listen", f"127.0.0.1:{free_port()}", *chain_store]
    command += ["--admin-listen", f"127.0.0.1:{free_port()}"]  # its loopback default would be shared by them all
    if flavour is not None:
        command += ["--grpc-server", flavour]
    if workers is not None:
        command += ["--workers", str(workers)]
    log = workdir / (label.replace("/", "-").replace(" ", "-") + ".log")
    return Server(label, "mandate", flavour or "default", command, address, log)
