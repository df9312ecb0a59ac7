"""A second `mandate serve` on a port another one holds: run it to its end, check that it was
refused the way an operator should see it, and that the first server still answers."""

from __future__ import annotations

import subprocess

import grpc
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness.example_policies import EXAMPLES, GITHUB_HOST, REPO, SUPPORT
from tests.harness.processes import MandateProcess


def serve_again(*args: str, timeout: float = 15.0) -> tuple[int, str]:
    """Run another `mandate serve` to its end: (exit code, stderr). One still running after
    `timeout` seconds has taken the port: it is stopped (SIGTERM, so a supervisor stops its
    workers too) and the test fails."""
    command = [*MandateProcess.command(), "serve", "--policies", str(EXAMPLES), *args]
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
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
