"""`mandate serve --workers 2`: two processes on one port, one metrics endpoint for both,
shared chains through Redis, and a supervisor that fails loudly when a worker dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authz.explain import read_request_file
from authz.request import to_check_request
from tests.conftest import EXAMPLES, REPO
from tests.harness.processes import free_port, wait_until
from tests.harness.redis import RedisServer

MANDATE = [sys.executable, "-m", "authz", "serve"]


@pytest.fixture
def supervisor(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    key = tmp_path / "chain.key"
    key.write_text(os.urandom(32).hex())
    port, metrics_port = free_port(), free_port()
    command = [*MANDATE, "--policies", str(EXAMPLES), "--listen", f"127.0.0.1:{port}", "--metrics-listen",
               f"127.0.0.1:{metrics_port}", "--workers", "2", "--redis", redis_server.url, "--chain-key", str(key)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: ready(metrics_port) and len(workers_of(process.pid)) == 2, 20, "two workers")
    yield process, port, metrics_port
    if process.poll() is None:
        process.terminate()
        process.wait(15)


def ready(metrics_port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1).status == 200
    except OSError:
        return False


def workers_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def counters(metrics_port: int, name: str, label: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_workers_share_the_port_and_one_metrics_endpoint(supervisor) -> None:
    process, port, metrics_port = supervisor
    request = to_check_request(read_request_file(str(REPO / "examples" / "ask-billing.yaml")).input)
    for _ in range(40):  # a new connection each time, so the kernel spreads them over the workers
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5).HasField("ok_response")
    # each worker's recorder hands its answers to the metrics files within 20 ms
    wait_until(lambda: counters(metrics_port, "mandate_decisions_total", "result") == {"allow": 40.0}, 5, "40 allows counted")
    # each worker mints the support-agent -> billing-agent edge once, then reuses it
    assert counters(metrics_port, "mandate_chain_outcomes_total", "outcome") == {"minted": 2.0, "reused": 38.0}


def test_a_dead_worker_stops_the_supervisor(supervisor) -> None:
    process, _, _ = supervisor
    first, second = workers_of(process.pid)
    os.kill(first, signal.SIGKILL)
    assert process.wait(15) == 1
    wait_until(lambda: not Path(f"/proc/{second}").exists() or "Z" in Path(f"/proc/{second}/stat").read_text().split()[2], 15, "the other worker to stop")


def test_sigterm_stops_every_worker(supervisor) -> None:
    process, _, _ = supervisor
    children = workers_of(process.pid)
    process.terminate()
    assert process.wait(15) == 0
    assert all(not Path(f"/proc/{child}").exists() for child in children)


@pytest.mark.parametrize(
    ("extra", "message"),
    [([], "needs --redis"), (["--redis", "redis://127.0.0.1:1/0", "--chain-key", "k", "--metrics-listen", ""], "needs --metrics-listen")],
)
def test_workers_refuse_what_would_break_them(extra: list[str], message: str) -> None:
    result = subprocess.run([*MANDATE, "--policies", str(EXAMPLES), "--workers", "2", *extra], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr
