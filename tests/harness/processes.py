"""Processes and servers the suite starts: `mandate serve` as a subprocess, ASGI apps under
uvicorn in a background thread. Every wait has a deadline; every start has a stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"


def free_port() -> int:
    """A port the kernel just handed out for 127.0.0.1 (for servers that cannot bind 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bound_socket() -> socket.socket:
    """A listening-ready socket on 127.0.0.1:0, for servers that accept pre-bound sockets."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- mandate serve -------------------------------------------------------------------------


class ProcessExited(RuntimeError):
    """The subprocess ended while we waited for it to become ready."""


class MandateProcess:
    """`mandate serve` on free ports; stdout (the audit log) and stderr go to files in `workdir`."""

    def __init__(
        self,
        policies: Path,
        workdir: Path,
        *,
        redis_url: str | None = None,
        chain_key: Path | None = None,
        admin_args: list[str] | None = None,
    ) -> None:
        """`admin_args`: serve the admin API on a free port (`admin_port`), with these extra flags
        (`--admin-key FILE`…); None: no admin listener."""
        self.policies = policies
        self.admin_args = admin_args
        self.admin_port = 0
        self.redis_url = redis_url
        self.chain_key = chain_key
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / "mandate.stdout.jsonl"
        self.stderr_path = workdir / "mandate.stderr.log"
        self.grpc_port = 0
        self.metrics_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def command() -> list[str]:
        """The installed console script next to this interpreter, else `python -m authz`."""
        script = Path(sys.executable).parent / "mandate"
        return [str(script)] if script.exists() else [sys.executable, "-m", "authz"]

    def start(self, timeout: float = 20.0, attempts: int = 3) -> MandateProcess:
        """Start and wait for gRPC health SERVING; retried on fresh ports if the process dies
        at start (another process may take a port between `free_port()` and Mandate's bind)."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout)
            except ProcessExited:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> MandateProcess:
        self.grpc_port, self.metrics_port = free_port(), free_port()
        command = [
            *self.command(),
            "serve",
            "--policies",
            str(self.policies),
            "--listen",
            f"127.0.0.1:{self.grpc_port}",
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            "--admin-listen",
            "",
        ]
        if self.admin_args is not None:
            self.admin_port = free_port()
            command += ["--admin-listen", f"127.0.0.1:{self.admin_port}", *self.admin_args]
        if self.redis_url:
            # One process, as `--workers auto` would not start with Redis on a multi-core machine:
            # the tests read exact metric deltas, which a supervisor sums up to 2 ms late.
            command += ["--redis", self.redis_url, "--workers", "1"]
        if self.chain_key:
            command += ["--chain-key", str(self.chain_key)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.stdout_path.open("ab") as stdout, self.stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env)
        try:
            self._wait_serving(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise ProcessExited(f"mandate exited with {self.proc.returncode}:\n{self.stderr_tail()}")
                if self._serving(stub, "") and self._serving(stub, AUTHORIZATION_SERVICE):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mandate not SERVING after {timeout}s:\n{self.stderr_tail()}")
                time.sleep(0.05)

    @staticmethod
    def _serving(stub: health_pb2_grpc.HealthStub, service: str) -> bool:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=0.5)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def health(self, service: str = "") -> int:
        """The gRPC health status enum for `service` (raises if unreachable)."""
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(reply.status)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- observation ------------------------------------------------------------------------

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
            return response.read().decode()

    def decisions(self) -> dict[tuple[str, str], float]:
        """`mandate_decisions_total` by (result, reason)."""
        counts: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == "mandate_decisions_total":
                    counts[(sample.labels["result"], sample.labels["reason"])] = sample.value
        return counts

    def chain_outcomes(self) -> dict[str, float]:
        """`mandate_chain_outcomes_total` by outcome (minted, verified, forged, ...)."""
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == "mandate_chain_outcomes_total":
                    counts[sample.labels["outcome"]] = sample.value
        return counts

    def decision_count(self) -> float:
        return sum(self.decisions().values())

    def cache_answers(self) -> float:
        """`mandate_decision_cache_answers_total`: answers given from the decision cache."""
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == "mandate_decision_cache_answers_total":
                    return sample.value
        return 0.0

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def audit_events(self) -> list[dict[str, Any]]:
        """Every stdout line that is a JSON object (the audit log), in order."""
        events = []
        for line in self.stdout_text().splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                events.append(value)
        return events

    def wait_audit(self, decision_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The audit line for `decision_id` (written just after the answer leaves)."""

        def find() -> dict[str, Any] | None:
            return next((event for event in self.audit_events() if event.get("decision_id") == decision_id), None)

        return wait_until(find, timeout, f"audit line for decision {decision_id}")

    def stderr_tail(self, lines: int = 40) -> str:
        if not self.stderr_path.exists():
            return "(no stderr)"
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])


# --- ASGI apps in a thread -----------------------------------------------------------------


class ThreadedUvicorn:
    """Serve an ASGI app with uvicorn on a pre-bound socket, in a daemon thread.

    Binding first means the port is known (and owned) before Envoy's config is written.
    uvicorn only installs signal handlers on the main thread, so a thread is safe.
    """

    def __init__(self, app: Any, name: str) -> None:
        self.name = name
        self.sock = bound_socket()
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=f"uvicorn-{name}", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # noqa: BLE001 - surfaced by start()/stop()
            self.error = exc

    def start(self, timeout: float = 10.0) -> ThreadedUvicorn:
        self.thread.start()
        wait_until(
            lambda: self.server.started or self.error or not self.thread.is_alive(), timeout, f"{self.name} to start"
        )
        if not self.server.started:
            raise RuntimeError(f"{self.name} failed to start: {self.error!r}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)
        self.sock.close()
