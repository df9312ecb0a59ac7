"""Locust: a gRPC user sending the request mix (loadtest/requests.py) to a Check server.

    locust -f loadtest/locustfile.py --headless -u 16 -r 16 -t 10s --host 127.0.0.1:9191

Every call is timed with `time.perf_counter_ns` into a µs-resolution histogram (locust's
own statistics round to whole milliseconds); locust's `request` event is fired too, so its
usual table and failure counts still work. At the end it prints p50/p90/p99/p99.9 and
throughput and, with `--latency-json PATH` (or MANDATE_LOCUST_JSON), writes them as JSON.
With `--processes N` / distributed workers, each worker's histogram travels to the master
in its stats reports and the master merges them.

Options (after locust's own):
  --mix mix|representative   the weighted mix (default) or the single representative request
  --expect-verdicts          check each answer against the expected allow/deny (for Mandate,
                             not the floor); a wrong verdict counts as a locust failure
  --latency-json PATH        where to write the summary

The chained samples carry a real `x-delegation-chain` token: each process first sends the
A2A call the token comes from to the server under test (the floor hands out none; its
chained samples then carry a placeholder it never reads).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import Any

# locust puts this file's directory first on sys.path; loadtest/requests.py must not shadow
# the `requests` library, and `loadtest` must be importable as a package from the repo root.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]
if os.path.dirname(_HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(_HERE))

import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists: grpcio must yield to gevent, not block it

import orjson
from locust import User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtest.requests import (
    CHECK_METHOD,
    build_mix,
    chain_token_of,
    representative,
    schedule,
    send_message_to_billing,
    serialize,
    verdict_of,
)

REPORT_KEY = "mandate_latency"


class Recorder:
    """This process's µs histogram (µs -> count), call count and time window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.histogram: Counter[int] = Counter()
        self.failures = 0
        self.unexpected = 0
        self.first_ns = 0  # time.time_ns of the first call's start (comparable across processes)
        self.last_ns = 0  # ... and of the last call's end
        self._sent: Counter[int] = Counter()  # the part already reported to the master

    def record(self, started_wall_ns: int, elapsed_ns: int) -> None:
        self.histogram[elapsed_ns // 1000] += 1
        if not self.first_ns or started_wall_ns < self.first_ns:
            self.first_ns = started_wall_ns
        self.last_ns = max(self.last_ns, started_wall_ns + elapsed_ns)

    def delta(self) -> dict[str, Any]:
        """What changed since the last report (for the master)."""
        new = self.histogram - self._sent
        self._sent = self.histogram.copy()
        failures, unexpected, self.failures, self.unexpected = self.failures, self.unexpected, 0, 0
        return {
            "histogram": {str(k): v for k, v in new.items()},
            "failures": failures,
            "unexpected": unexpected,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        }

    def merge(self, report: dict[str, Any]) -> None:
        self.histogram.update({int(k): v for k, v in report["histogram"].items()})
        self.failures += report["failures"]
        self.unexpected += report["unexpected"]
        if report["first_ns"] and (not self.first_ns or report["first_ns"] < self.first_ns):
            self.first_ns = report["first_ns"]
        self.last_ns = max(self.last_ns, report["last_ns"])


RECORDER = Recorder()
_STATE: dict[str, Any] = {"channel": None, "call": None, "sequence": None}


def percentile_of_histogram(histogram: Counter[int], fraction: float) -> float:
    """Nearest-rank percentile (µs) of a µs -> count histogram."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    rank = max(1, -(-int(total * fraction * 1_000_000) // 1_000_000))  # ceil(total * fraction), no float drift
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def summary(recorder: Recorder) -> dict[str, Any]:
    histogram = recorder.histogram
    count = sum(histogram.values())
    window = max(recorder.last_ns - recorder.first_ns, 1) / 1e9
    return {
        "requests": count,
        "failures": recorder.failures,
        "unexpected_verdicts": recorder.unexpected,
        "seconds": round(window, 3),
        "rps": round(count / window, 1) if count else 0.0,
        "mean_us": round(sum(k * v for k, v in histogram.items()) / count, 1) if count else 0.0,
        "p50_us": percentile_of_histogram(histogram, 0.50),
        "p90_us": percentile_of_histogram(histogram, 0.90),
        "p99_us": percentile_of_histogram(histogram, 0.99),
        "p999_us": percentile_of_histogram(histogram, 0.999),
        "max_us": float(max(histogram)) if histogram else 0.0,
        "histogram_us": {str(k): histogram[k] for k in sorted(histogram)},
    }


# --- options and lifecycle ------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--mix", choices=("mix", "representative"), default="mix", help="what to send")
    parser.add_argument(
        "--expect-verdicts", action="store_true", default=False, help="check allow/deny of every answer"
    )
    parser.add_argument(
        "--latency-json", default=os.environ.get("MANDATE_LOCUST_JSON", ""), help="write the µs summary here"
    )


@events.test_start.add_listener
def _connect(environment: Any, **_: Any) -> None:
    RECORDER.reset()
    if isinstance(environment.runner, MasterRunner):
        return
    address = (environment.host or "127.0.0.1:9191").removeprefix("http://").removeprefix("grpc://").rstrip("/")
    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(CHECK_METHOD, request_serializer=None, response_deserializer=None)
    if environment.parsed_options.mix == "representative":
        samples = [representative()]
    else:
        samples = build_mix(chain_token_of(call(serialize(send_message_to_billing()), timeout=10)))
    _STATE.update(
        channel=channel, call=call, sequence=schedule(samples), expect=environment.parsed_options.expect_verdicts
    )


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any]) -> None:
    data[REPORT_KEY] = RECORDER.delta()


@events.worker_report.add_listener
def _merge(client_id: str, data: dict[str, Any]) -> None:
    if REPORT_KEY in data:
        RECORDER.merge(data[REPORT_KEY])


def _finish(environment: Any) -> None:
    result = summary(RECORDER)
    print(
        f"Check latency (µs, perf_counter_ns): p50 {result['p50_us']:.0f}  p90 {result['p90_us']:.0f}  "
        f"p99 {result['p99_us']:.0f}  p99.9 {result['p999_us']:.0f}  max {result['max_us']:.0f}; "
        f"{result['requests']} requests in {result['seconds']} s = {result['rps']} req/s; "
        f"{result['failures']} failed, {result['unexpected_verdicts']} unexpected verdicts",
        flush=True,
    )
    path = environment.parsed_options.latency_json
    if path:
        with open(path, "wb") as out:
            out.write(orjson.dumps(result, option=orjson.OPT_INDENT_2))


@events.test_stop.add_listener
def _stopped(environment: Any, **_: Any) -> None:
    if _STATE["channel"] is not None:
        _STATE["channel"].close()
        _STATE["channel"] = None
    if not isinstance(environment.runner, (MasterRunner, WorkerRunner)):
        _finish(environment)


@events.quitting.add_listener
def _quitting(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):  # workers' last reports have arrived by now
        _finish(environment)


# --- the user ---------------------------------------------------------------------------------


class CheckUser(User):
    """Sends Check calls back to back (closed loop): `-u 16` keeps 16 in flight."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.position = id(self) % 997  # users start at different points of the mix

    @task
    def check(self) -> None:
        sequence = _STATE["sequence"]
        sample = sequence[self.position % len(sequence)]
        self.position += 1
        response, error = b"", None
        started_wall = time.time_ns()
        started = time.perf_counter_ns()
        try:
            response = _STATE["call"](sample.payload, timeout=10)
        except grpc.RpcError as exc:
            error = exc
        elapsed = time.perf_counter_ns() - started
        if error is None and _STATE["expect"]:
            allowed, reason = verdict_of(response)
            if allowed != sample.expect_allow or (reason and reason != sample.expect_reason):
                error = AssertionError(
                    f"expected {sample.expect_reason}, got {'allow' if allowed else 'deny'} ({reason})"
                )
                RECORDER.unexpected += 1
        if error is None:
            RECORDER.record(started_wall, elapsed)
        else:
            RECORDER.failures += 1
        events.request.fire(
            request_type="grpc",
            name=sample.name,
            response_time=elapsed / 1e6,
            response_length=len(response),
            exception=error,
            context={},
        )
