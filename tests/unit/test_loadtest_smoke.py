"""The load-test tooling still runs end to end: `python -m loadtest.run --smoke` starts a Redis,
the floor in every flavour and Mandate at its defaults, writes a small distinct stream, drives
them with h2grpc (the distinct stream), h2load (the repeated request) and locust, tries 2
workers, runs the micro-benchmark in smoke mode and writes BENCHMARKS.md, the CDF plot and the
raw JSON.

Structure only — numbers present and positive, files written, sample requests decided as
expected — never a timing: SPEC §8 is measured by benchmarks, not by timed unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest import h2load
from loadtest.requests import build_mix, decide_in_process, representative, schedule
from loadtest.run import parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_every_sample_request_is_decided_as_expected_in_process() -> None:
    """The mix's expectations hold against the example policies (chained calls with a real token)."""
    assert decide_in_process() == []


def test_the_mix_covers_every_kind_allowed_and_denied() -> None:
    samples = build_mix("token")
    kinds = {sample.kind for sample in samples}
    assert {"mcp", "mcp-plumbing", "a2a", "chained", "egress"} <= kinds
    assert any(sample.expect_allow for sample in samples) and any(not sample.expect_allow for sample in samples)
    sequence = schedule(samples)
    assert {sample.name for sample in sequence} == {sample.name for sample in samples}
    frame = representative().frame
    assert frame[0] == 0 and int.from_bytes(frame[1:5], "big") == len(frame) - 5


def test_h2load_output_is_read() -> None:
    summary = """finished in 3.00s, 7570.00 req/s, 487.94KB/s
requests: 15140 total, 15140 started, 15140 done, 15138 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 15138 2xx, 0 3xx, 0 4xx, 2 5xx"""
    assert h2load.parse_summary(summary) == (7570.0, 15138, 2, 2)
    assert h2load.duration(0.4) == "400ms"
    values = list(range(1, 1001))
    stats = h2load.latency_summary(values)
    assert (stats["p50_us"], stats["p99_us"], stats["p999_us"]) == (500.0, 990.0, 999.0)


def test_smoke_writes_nothing_unless_asked() -> None:
    assert parse_args(["--smoke"]).out is None
    args = parse_args(["--smoke", "--out", "/x/B.md"])
    assert (args.plot, args.json) == (Path("/x/benchmarks/latency-cdf.png"), Path("/x/benchmarks/results.json"))
    assert parse_args([]).out == ROOT / "BENCHMARKS.md"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """One `--smoke` run for the tests below: its raw results, its BENCHMARKS.md and where it wrote."""
    out = tmp_path_factory.mktemp("smoke") / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out.parent / "benchmarks" / "results.json").read_text())
    return results, out.read_text(), out.parent


@pytest.mark.timeout(150)
def test_every_server_answers_and_every_mandate_decides_as_expected(smoke: tuple[dict[str, Any], str, Path]) -> None:
    results = smoke[0]
    verification = results["verification"]
    assert all(verification["grpc_status_ok"].values()) and len(verification["grpc_status_ok"]) == 5
    assert verification["verdict_problems"] == {"mandate": []}
    assert verification["stream_problems"] == verification["stream_after_timing"] == {"mandate": []}
    assert results["stream"]["requests"] == results["stream"]["distinct"] == 2000 and results["stream"]["chained"]
    assert results["settings"]["mandate_command"].startswith("mandate serve --policies policies --listen")
    assert "--grpc-server" not in results["settings"]["mandate_command"]  # Mandate at its defaults


@pytest.mark.timeout(150)
def test_every_floor_and_mandate_are_measured_without_errors(smoke: tuple[dict[str, Any], str, Path]) -> None:
    results = smoke[0]
    floors = ["floor/threads", "floor/asyncio", "floor/uvloop"]
    for section in ("distinct", "repeated"):
        for mode in ("1 in flight", "16 in flight"):
            data = results[section][mode]
            assert list(data["floors"]) == floors and data["fastest_floor"] in floors
            for who in ("floor", "mandate"):
                for key, spread in data[who]["aggregate"].items():
                    assert spread["min"] <= spread["median"] <= spread["max"], (section, mode, who, key)
                assert data[who]["aggregate"]["p50_us"]["median"] > 0 and data[who]["rounds"][0]["requests"] > 0
                assert data[who]["aggregate"]["errors"]["max"] == 0, data[who]["rounds"]
            assert data["ratio"]["p50_us"]["median"] > 0
    for mode in ("1 in flight", "16 in flight"):  # h2grpc's figures beside the latencies
        aggregate = results["distinct"][mode]["mandate"]["aggregate"]
        assert (
            aggregate["server_cpu_us_per_request"]["median"] > 0
            and aggregate["driver_cpu_us_per_request"]["median"] > 0
        )
        assert aggregate["in_server_p99_us"]["median"] >= aggregate["in_server_p50_us"]["median"] > 0
    assert results["distinct_flavours"] == {}  # the flavour table is not in a smoke run
    for mode in ("1 in flight", "16 in flight"):  # the no-op on Mandate's loop: reported, never the floor
        own = results["own_loop"][mode]
        assert own["fastest_floor"] == "floor/core" and own["floor"]["aggregate"]["errors"]["max"] == 0
        assert own["ratio"]["p50_us"]["median"] > 0


@pytest.mark.timeout(150)
def test_locust_workers_memory_and_the_micro_benchmark_run(smoke: tuple[dict[str, Any], str, Path]) -> None:
    results = smoke[0]
    for who in ("floor", "mandate"):
        (run,) = results["locust"][who]
        assert run["requests"] > 0 and run["rps"] > 0 and run["p99_us"] >= run["p50_us"] > 0
        assert run["failures"] == 0
    assert results["locust"]["mandate"][0]["unexpected_verdicts"] == 0
    workers = results["workers"]
    assert workers["supported"], workers
    assert workers["verdict_problems"] == [] and workers["2"]["aggregate"]["rps"]["median"] > 0
    assert workers["memory"]["2"]["processes"] >= 3  # the supervisor and two workers
    assert results["memory"]["end"]["mandate"]["VmRSS"] > 0
    micro, spread = results["micro"], results["micro_spread"]
    for each in (micro, spread):
        assert "error" not in each, each.get("error")
        assert each["report"]["sizes"] and each["table"]
    assert micro["report"]["callers"] == 10 and spread["report"]["callers"] is None  # the same agents, then all


@pytest.mark.timeout(150)
def test_the_report_holds_every_target_and_links_its_files(smoke: tuple[dict[str, Any], str, Path]) -> None:
    _, report, where = smoke
    assert (where / "benchmarks" / "latency-cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## SPEC §8 targets" in report and "](benchmarks/latency-cdf.png)" in report
    assert "## Distinct traffic" in report and "## Repeated request" in report
    assert "Mandate ÷ no-op on its loop" in report and "never the floor" in report
    table = report.split("## SPEC §8 targets", 1)[1].split("\n\n")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 7  # p50, p99, 16 in flight over one connection and over eight, then in process
    assert "over one connection" in rows[2] and "over 8 connections" in rows[3]
    assert "Requests from every profile" in rows[4]  # the decision-path row reports both passes
    assert all(("**MET" in row) or ("**NOT MET" in row) for row in rows), rows
