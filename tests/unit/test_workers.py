"""`mandate serve --workers 2`: two processes on one port, one metrics endpoint for both,
shared chains through Redis, and a supervisor that fails loudly when a worker dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authz.check.request import to_check_request
from authz.explain import read_request_file
from authz.serve.grpc_server import CheckServer, ListenError, claim_port
from authz.serve.workers import hold_port
from tests.harness.busy_ports import assert_refused, assert_still_serving, serve_again
from tests.harness.example_policies import EXAMPLES, REPO
from tests.harness.processes import free_port, wait_until
from tests.harness.redis import RedisServer

MANDATE = [sys.executable, "-m", "authz", "serve"]


def supervisor_args(redis_server: RedisServer, tmp_path: Path, port: int, metrics_port: int) -> list[str]:
    """`--workers 2` on loopback ports, with the shared chain store that workers need."""
    key = tmp_path / "chain.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex())
    return [
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--workers",
        "2",
        "--redis",
        redis_server.url,
        "--chain-key",
        str(key),
    ]


@pytest.fixture
def supervisor(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    port, metrics_port = free_port(), free_port()
    command = [*MANDATE, "--policies", str(EXAMPLES), *supervisor_args(redis_server, tmp_path, port, metrics_port)]
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
    found = subprocess.run(["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True).stdout.split()
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
    _, port, metrics_port = supervisor
    request = to_check_request(read_request_file(str(REPO / "examples" / "ask-billing.yaml")).input)
    for _ in range(40):  # a new connection each time, so the kernel spreads them over the workers
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5).HasField("ok_response")
    # each worker's recorder hands its answers to the metrics files within 2 ms
    wait_until(
        lambda: counters(metrics_port, "mandate_decisions_total", "result") == {"allow": 40.0}, 5, "40 allows counted"
    )
    # each worker mints the support-agent -> billing-agent edge once, then reuses it
    assert counters(metrics_port, "mandate_chain_outcomes_total", "outcome") == {"minted": 2.0, "reused": 38.0}


def test_a_dead_worker_stops_the_supervisor(supervisor) -> None:
    process, _, _ = supervisor
    first, second = workers_of(process.pid)
    os.kill(first, signal.SIGKILL)
    assert process.wait(15) == 1
    wait_until(
        lambda: not Path(f"/proc/{second}").exists() or "Z" in Path(f"/proc/{second}/stat").read_text().split()[2],
        15,
        "the other worker to stop",
    )


def test_sigterm_stops_every_worker(supervisor) -> None:
    process, _, _ = supervisor
    children = workers_of(process.pid)
    process.terminate()
    assert process.wait(15) == 0
    assert all(not Path(f"/proc/{child}").exists() for child in children)
    assert process.stderr.read().decode().count(" INFO mandate: mandate stopped: 2 workers on ") == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --redis"),
        (["--redis", "redis://127.0.0.1:1/0", "--chain-key", "k", "--metrics-listen", ""], "needs --metrics-listen"),
    ],
)
def test_workers_refuse_what_would_break_them(extra: list[str], message: str) -> None:
    result = subprocess.run(
        [*MANDATE, "--policies", str(EXAMPLES), "--workers", "2", *extra],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and message in result.stderr


def test_a_single_server_on_a_supervisors_port_is_refused(supervisor) -> None:
    _, port, _ = supervisor
    code, stderr = serve_again("--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{free_port()}")
    assert_refused(code, stderr, port)
    assert_still_serving(port)


def test_a_second_supervisor_on_a_supervisors_port_is_refused(
    supervisor, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The workers' sockets all carry SO_REUSEPORT, yet the second supervisor's plain bind fails."""
    _, port, _ = supervisor
    code, stderr = serve_again(*supervisor_args(redis_server, tmp_path, port, free_port()))
    assert_refused(code, stderr, port)
    assert_still_serving(port)


def test_two_supervisors_started_together_one_is_refused(redis_server: RedisServer, tmp_path: Path) -> None:
    """Neither has workers listening while both start: the port each holds from its first bind
    until its last worker ends is what keeps the other out (probing and letting go would not)."""
    port, metrics_ports = free_port(), [free_port(), free_port()]
    commands = [
        [*MANDATE, "--policies", str(EXAMPLES), *supervisor_args(redis_server, tmp_path, port, metrics_port)]
        for metrics_port in metrics_ports
    ]
    processes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    try:
        refused = wait_until(lambda: [process for process in processes if process.poll() is not None], 15, "a refusal")
        assert len(refused) == 1
        assert_refused(refused[0].returncode, refused[0].stderr.read(), port)
        survivor = 1 - processes.index(refused[0])
        pid = processes[survivor].pid
        wait_until(lambda: ready(metrics_ports[survivor]) and len(workers_of(pid)) == 2, 20, "two workers")
        assert_still_serving(port)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(15)


def test_the_held_port_admits_only_sharing_workers() -> None:
    """What the supervisor holds: plain binds (a lone server, another supervisor) fail, even one
    that forgives TIME_WAIT; its workers' SO_REUSEPORT servers get in and serve."""
    address = f"127.0.0.1:{free_port()}"
    with hold_port(address):
        with pytest.raises(ListenError, match=f"{address} for gRPC: address already in use"):
            claim_port(address, "gRPC")
        with pytest.raises(ListenError):
            hold_port(address)
        workers = [CheckServer(lambda payload: b"", address, "threads", 2, share_port=True) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.stop(0)


def test_a_restart_is_not_refused_for_the_last_runs_time_wait() -> None:
    """Connections the last run closed first linger in TIME_WAIT on the port, and refuse a bind
    without SO_REUSEADDR: the supervisor's hold retries with it (a listener still refuses)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server's side closes first: its socket waits in TIME_WAIT
            wait_until(lambda: client.recv(1) == b"", 5, "the close to reach the client")
    with pytest.raises(ListenError):
        claim_port(f"127.0.0.1:{port}", "gRPC", reuse_address=False)
    with hold_port(f"127.0.0.1:{port}"), pytest.raises(ListenError):
        claim_port(f"127.0.0.1:{port}", "gRPC")
