"""Audit lines and metrics are recorded off the request path, in order, and none is lost at shutdown."""

from __future__ import annotations

import datetime
import io
import signal
import subprocess
import sys
import time

import grpc
import orjson
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.check.decision import Decision, Verdict
from authz.check.record import Answered, Recorder
from authz.check.request import to_check_request
from authz.explain import read_request_file
from authz.serve.audit import AuditLog
from authz.serve.metrics import Metrics
from tests.harness.example_policies import EXAMPLES, REPO
from tests.harness.processes import free_port, wait_until


def answered_now(decision: Decision, decision_id: str) -> Answered:
    """An answer given now to a request that came in a moment ago."""
    started = time.perf_counter_ns()
    return decision, decision_id, started, time.perf_counter_ns()


class Stream(io.BytesIO):
    def lines(self) -> list[dict]:
        return [orjson.loads(line) for line in self.getvalue().splitlines()]


def test_close_writes_every_queued_line_in_order() -> None:
    stream = Stream()
    recorder = Recorder([AuditLog(stream).write])
    started = time.perf_counter_ns()
    for number in range(2500):  # more than one batch
        recorder.record((Decision("", Verdict(True, "allowed")), f"d{number}", started, time.perf_counter_ns()))
    recorder.close()
    lines = stream.lines()
    assert [line["decision_id"] for line in lines] == [f"d{number}" for number in range(2500)]
    assert all(line["latency_us"] > 0 for line in lines)


def test_a_line_that_fails_does_not_stop_the_others() -> None:
    stream = Stream()
    recorder = Recorder([AuditLog(stream).write])
    broken = Decision("", Verdict(True, "allowed"), details={1: "a key JSON cannot have"})  # type: ignore[dict-item]
    for decision, decision_id in (
        (Decision("", Verdict(True, "allowed")), "before"),
        (broken, "broken"),
        (Decision("", Verdict(True, "allowed")), "after"),
    ):
        recorder.record(answered_now(decision, decision_id))
    recorder.close()
    assert [line["decision_id"] for line in stream.lines()] == ["before", "after"]


def test_a_failing_sink_does_not_silence_the_others() -> None:
    stream = Stream()

    def broken(batch) -> None:
        raise RuntimeError("sink down")

    recorder = Recorder([broken, AuditLog(stream).write])
    recorder.record(answered_now(Decision("", Verdict(True, "allowed")), "kept"))
    recorder.close()
    assert [line["decision_id"] for line in stream.lines()] == ["kept"]


def test_flush_returns_once_every_answer_so_far_is_counted() -> None:
    """What the metrics endpoint relies on: a scrape after an answer counts that answer."""
    metrics = Metrics()
    recorder = Recorder([metrics.count], flush_every=60)  # the timer alone would not drain it in time
    for _ in range(3):
        recorder.record(answered_now(Decision("", Verdict(False, "tool_not_allowed"), chain_events=["verified"]), "d"))
    assert recorder.flush(timeout=5)
    sample = metrics.registry.get_sample_value
    assert sample("mandate_decisions_total", {"result": "deny", "reason": "tool_not_allowed"}) == 3
    assert sample("mandate_chain_outcomes_total", {"outcome": "verified"}) == 3
    assert sample("mandate_check_duration_seconds_count") == 3
    recorder.close()


def test_sigterm_after_a_burst_loses_no_audit_line(tmp_path) -> None:
    """Every Check answered before SIGTERM has its line on stdout when the process exits."""
    port, metrics_port = free_port(), free_port()
    out = tmp_path / "audit.jsonl"
    with out.open("wb") as stdout:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "authz",
                "serve",
                "--policies",
                str(EXAMPLES),
                "--listen",
                f"127.0.0.1:{port}",
                "--metrics-listen",
                f"127.0.0.1:{metrics_port}",
            ],
            cwd=REPO,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
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
    decision_ids = {
        header.header.value
        for response in answered
        for header in response.ok_response.headers
        if header.header.key == "x-mandate-decision-id"
    }
    logged = {line["decision_id"] for line in map(orjson.loads, out.read_bytes().splitlines()) if "decision_id" in line}
    assert len(decision_ids) == 500 and decision_ids <= logged


def _ok(stub: external_auth_pb2_grpc.AuthorizationStub, request) -> bool:
    try:
        return stub.Check(request, timeout=2).HasField("ok_response")
    except grpc.RpcError:
        return False


def test_a_repeated_decision_says_what_a_fresh_one_would_under_its_own_id_time_and_latency() -> None:
    """The decision cache answers again from one Decision; each line keeps its own id, time
    and latency while the body, rendered once, says the same as a fresh rendering."""
    audit = AuditLog(Stream())
    first = Decision(
        "",
        Verdict(False, "tool_not_allowed", "no", rule="p.mcp[0]"),
        caller="spiffe://x/a",
        hops=("a",),
        details={"gen_ai.tool.name": "refund"},
    )
    other = Decision("", Verdict(True, "allowed"), caller="spiffe://x/b")
    epoch = time.time_ns()
    lines = [
        orjson.loads(audit.line(decision, f"id-{number}", 10.0 + number, epoch))
        for number, decision in enumerate((first, first, other, first))
    ]
    assert [line["decision_id"] for line in lines] == ["id-0", "id-1", "id-2", "id-3"]
    assert [line["latency_us"] for line in lines] == [10.0, 11.0, 12.0, 13.0]
    assert [line["caller"] for line in lines] == ["spiffe://x/a", "spiffe://x/a", "spiffe://x/b", "spiffe://x/a"]
    same_but_fresh = Decision(
        "id-0", first.verdict, caller="spiffe://x/a", hops=("a",), details={"gen_ai.tool.name": "refund"}
    )
    assert lines[0] == orjson.loads(AuditLog(Stream()).line(same_but_fresh, "id-0", 10.0, epoch))
    assert (
        lines[0]["gen_ai.tool.name"] == "refund"
        and lines[0]["reason"] == "tool_not_allowed"
        and lines[0]["level"] == "info"
    )


def test_the_time_is_when_the_answer_was_given_in_utc() -> None:
    stream = Stream()
    recorder = Recorder([AuditLog(stream).write], flush_every=60)
    before = time.time()
    recorder.record(answered_now(Decision("d", Verdict(True, "allowed")), "d"))
    after = time.time()
    time.sleep(0.05)  # written later than answered
    recorder.close()
    (line,) = stream.lines()
    written = datetime.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()
    assert before - 0.002 <= written <= after + 0.002


def test_an_odd_decision_id_still_makes_valid_json() -> None:
    line = AuditLog(Stream()).line(Decision("x", Verdict(True, "allowed")), 'a"b\\c\n', 1.0, time.time_ns())
    assert orjson.loads(line)["decision_id"] == 'a"b\\c\n'
