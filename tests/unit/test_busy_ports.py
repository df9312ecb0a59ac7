"""A port already in use is a one-line error and a non-zero exit, never a port silently shared.

Before, every server set SO_REUSEPORT, so a second `mandate serve` on a busy gRPC port started
without a word and the kernel split Envoy's connections between the old policy and the new.
Only a `--workers` supervisor's own children may share a port (tests/unit/test_workers.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import EXAMPLES, GITHUB_HOST, REPO, SUPPORT
from tests.harness.processes import MandateProcess, free_port


@pytest.fixture
def running(tmp_path: Path) -> Iterator[MandateProcess]:
    process = MandateProcess(EXAMPLES, tmp_path / "first").start()
    yield process
    process.stop()


def serve_again(*args: str, timeout: float = 15.0) -> tuple[int, str]:
    """Run another `mandate serve` to its end: (exit code, stderr). One still running after
    `timeout` seconds has taken the port: it is stopped (SIGTERM, so a supervisor stops its
    workers too) and the test fails."""
    command = [*MandateProcess.command(), "serve", "--policies", str(EXAMPLES), *args]
    process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
        pytest.fail(f"mandate serve {' '.join(args)} still running after {timeout}s: it shares a busy port\n{stderr}")
    return process.returncode, stderr


def assert_refused(code: int, stderr: str, port: int) -> None:
    """Non-zero, no traceback, and exactly one stderr line naming the port (gRPC's own bind
    error would be a second one)."""
    naming = [line for line in stderr.splitlines() if f":{port}" in line]
    assert code == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert len(naming) == 1 and "already in use" in naming[0], stderr


def assert_still_serving(grpc_port: int) -> None:
    """gRPC health SERVING and a Check answered, on the first server's port."""
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.principal = SUPPORT
    http = request.attributes.request.http
    http.method, http.path, http.host = "POST", "/mcp", GITHUB_HOST
    http.raw_body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_me"}})
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5).HasField("ok_response")


def test_a_second_server_on_the_grpc_port_is_refused(running: MandateProcess) -> None:
    code, stderr = serve_again(
        "--listen", f"127.0.0.1:{running.grpc_port}", "--metrics-listen", f"127.0.0.1:{free_port()}"
    )
    assert_refused(code, stderr, running.grpc_port)
    assert_still_serving(running.grpc_port)


def test_a_second_server_on_the_metrics_port_is_refused(running: MandateProcess) -> None:
    code, stderr = serve_again(
        "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{running.metrics_port}"
    )
    assert_refused(code, stderr, running.metrics_port)
    assert_still_serving(running.grpc_port)
    assert "mandate_decisions_total" in running.metrics_text()


def test_a_supervisor_on_a_served_port_is_refused(running: MandateProcess, tmp_path: Path) -> None:
    """Refused before any worker starts, so the (unreachable) chain store never matters."""
    key = tmp_path / "chain.key"
    key.write_text("00" * 32)
    code, stderr = serve_again(
        "--listen", f"127.0.0.1:{running.grpc_port}", "--metrics-listen", f"127.0.0.1:{free_port()}",
        "--workers", "2", "--redis", "redis://127.0.0.1:1/0", "--chain-key", str(key),
    )
    assert_refused(code, stderr, running.grpc_port)
    assert_still_serving(running.grpc_port)


def test_a_single_server_logs_its_shutdown(running: MandateProcess) -> None:
    running.stop()
    assert [line for line in running.stderr_tail().splitlines() if "mandate stopped" in line and " INFO " in line]
