"""loadtest/h2grpc, the C load driver for the distinct stream: it builds, it runs against the
floor and `mandate serve`, and it counts as an error every answer whose gRPC status is not OK,
which h2load counts as a success (each is an HTTP 200).

Structure and counts only, never a timing: speed is measured by the benchmark, not by tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import h2grpc
from loadtest.requests import ROOT, grpc_sender
from loadtest.stream import generate, mint_tokens, write
from tests.harness.failing_check import failing_check_server
from tests.harness.processes import MandateProcess, free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def small_stream(path: Path, tokens=None) -> Path:
    return write(generate(600, seed=3, tokens=tokens), path / "stream")


def test_the_build_is_cached_by_source() -> None:
    binary = h2grpc.build()
    assert binary.exists() and h2grpc.build() == binary
    assert h2grpc.version().startswith("nghttp2/")


def test_against_the_floor_every_answer_is_ok_and_every_measured_latency_kept(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    floor = subprocess.Popen(
        [sys.executable, "-m", "loadtest.floor", "--listen", address, "--grpc-server", "threads"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(address), 30, "the floor")
        result = h2grpc.run(address, small_stream(tmp_path), seconds=1.0, warmup=0.2, connections=2, streams=4)
    finally:
        floor.terminate()
        floor.wait(10)
    summary = result.summary
    assert summary["errors"] == 0 and summary["first_error"] == ""
    assert 0 < summary["requests"] == summary["ok"] == len(result.latencies_ns) <= summary["completed"]
    assert all(value > 0 for value in result.latencies_ns)
    assert summary["messages"] == 600 and (summary["connections"], summary["streams"]) == (2, 4)
    assert result.figures()["p50_us"] > 0 and summary["cpu_us_per_request"] > 0


def test_against_mandate_every_request_sent_is_decided(tmp_path: Path) -> None:
    """Mandate answers every request of the stream, chained calls included, with gRPC status OK
    (an allow or a deny is a CheckResponse); its decision counter moves by what h2grpc completed."""
    mandate = MandateProcess(ROOT / "policies", tmp_path / "mandate").start()
    try:
        address = f"127.0.0.1:{mandate.grpc_port}"
        send, close = grpc_sender(address)
        try:
            tokens = mint_tokens(send)
        finally:
            close()
        before = mandate.decision_count()
        result = h2grpc.run(address, small_stream(tmp_path, tokens), seconds=1.0, warmup=0.2, streams=4)
        wait_until(lambda: mandate.decision_count() - before >= result.summary["completed"], 5, "the metrics")
        decided = mandate.decision_count() - before
    finally:
        mandate.stop()
    assert result.summary["errors"] == 0, result.summary["first_error"]
    assert decided == result.summary["completed"] > result.summary["requests"] > 0


def test_a_non_zero_grpc_status_is_an_error_however_it_is_sent(tmp_path: Path) -> None:
    """Trailers-Only (`abort`) and a status in the trailers after a message are both errors, each
    counted once, by code; every other answer is OK and its latency kept."""
    with failing_check_server(abort_every=7, trail_every=5) as (address, servicer):
        result = h2grpc.run(address, small_stream(tmp_path), seconds=1.0, warmup=0.2, streams=4)
    summary, sent = result.summary, servicer.sent
    assert sent["INTERNAL"] > 0 and sent["NOT_FOUND"] > 0
    assert summary["completed"] == sum(sent.values())
    assert summary["errors"] == summary["errors_by_kind"]["grpc_status"] == sent["INTERNAL"] + sent["NOT_FOUND"]
    assert summary["grpc_status_codes"] == {"13": sent["INTERNAL"], "5": sent["NOT_FOUND"]}
    assert summary["ok"] == len(result.latencies_ns) < summary["requests"]
    assert summary["first_error"].startswith("grpc_status: grpc-status ")


def test_a_server_that_is_not_there_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot connect"):
        h2grpc.run(f"127.0.0.1:{free_port()}", small_stream(tmp_path), seconds=0.2, warmup=0)


def _answers(address: str) -> bool:
    import grpc

    send, close = grpc_sender(address, timeout=1)
    try:
        send(b"")
        return True
    except grpc.RpcError:
        return False
    finally:
        close()
