"""Audit lines are written off the request path, in order, and none is lost at shutdown."""

from __future__ import annotations

import io
import signal
import subprocess
import sys

import grpc
import orjson
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.audit import AuditLog
from authz.explain import read_request_file
from authz.request import to_check_request
from authz.verdict import Decision, Verdict
from tests.conftest import EXAMPLES, REPO
from tests.harness.processes import free_port, wait_until


class Stream(io.BytesIO):
    def lines(self) -> list[dict]:
        return [orjson.loads(line) for line in self.getvalue().splitlines()]


def test_close_writes_every_queued_line_in_order() -> None:
    stream = Stream()
    audit = AuditLog(stream)
    for number in range(2000):
        audit.record(Decision(f"d{number}", Verdict(True, "allowed")))
    audit.close()
    assert [line["decision_id"] for line in stream.lines()] == [f"d{number}" for number in range(2000)]


def test_a_line_that_fails_does_not_stop_the_others() -> None:
    stream = Stream()
    audit = AuditLog(stream)
    broken = Decision("broken", Verdict(True, "allowed"))
    broken.verdict = None  # type: ignore[assignment]  # cannot be rendered
    for decision in (Decision("before", Verdict(True, "allowed")), broken, Decision("after", Verdict(True, "allowed"))):
        audit.record(decision)
    audit.close()
    assert [line["decision_id"] for line in stream.lines()] == ["before", "after"]


def test_sigterm_after_a_burst_loses_no_audit_line(tmp_path) -> None:
    """Every Check answered before SIGTERM has its line on stdout when the process exits."""
    port, metrics_port = free_port(), free_port()
    out = tmp_path / "audit.jsonl"
    with out.open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "authz", "serve", "--policies", str(EXAMPLES), "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{metrics_port}"],
            cwd=REPO, stdout=stdout, stderr=subprocess.DEVNULL,
        )
    try:
        request = to_check_request(read_request_file(str(REPO / "examples" / "list-issues.yaml")).input)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            wait_until(lambda: _ok(stub, request), 20, "mandate to answer")
            answered = [stub.Check(request, timeout=5) for _ in range(500)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    decision_ids = {header.header.value for response in answered for header in response.ok_response.headers
                    if header.header.key == "x-mandate-decision-id"}
    logged = {line["decision_id"] for line in map(orjson.loads, out.read_bytes().splitlines()) if "decision_id" in line}
    assert len(decision_ids) == 500 and decision_ids <= logged


def _ok(stub: external_auth_pb2_grpc.AuthorizationStub, request) -> bool:
    try:
        return stub.Check(request, timeout=2).HasField("ok_response")
    except grpc.RpcError:
        return False
