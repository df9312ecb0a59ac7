"""loadtest/reload_stall.py's smoke mode: a real `mandate serve` on a small generated set,
reloaded by SIGHUP and by a rewritten file under Checks sent one at a time, every verdict as it
must be, and a report with the documented shape. Never asserts a timing (SPEC §8: benchmarks,
not timed unit tests, measure speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import reload_stall

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("reload-stall") / "result.json"
    assert reload_stall.main(["--smoke", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_every_check_got_its_verdict_through_every_reload(report: dict) -> None:
    assert report["benchmark"] == "mandate-reload-stall" and report["smoke"] and report["profiles"] == 200
    assert report["checks"] > 0 and report["wrong_verdicts"] == 0 and report["grpc_errors"] == 0


def test_both_triggers_reloaded_and_checks_ran_during_them(report: dict) -> None:
    assert [r["how"] for r in report["reloads"]] == ["SIGHUP", "file rewrite"]
    for reload in report["reloads"]:
        assert reload["seconds"] > 0 and reload["server_compile_seconds"] is not None
    assert report["during_reloads"]["n"] > 0 and report["outside_reloads"]["n"] > 0
    for key in ("during_reloads", "outside_reloads"):
        figures = report[key]
        assert figures["p50_us"] <= figures["p99_us"] <= figures["p999_us"] <= figures["max_us"]


def test_the_report_prints_both_tables(report: dict) -> None:
    text = reload_stall.format_report(report)
    assert "during reloads" in text and "outside reloads" in text and "file rewrite" in text
    assert report["memory_mb"]["after_reloads"]["VmHWM"] >= report["memory_mb"]["after_reloads"]["VmRSS"] > 0


def test_a_given_directory_is_reloaded_in_place(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    args = reload_stall.parse_args(["--smoke", "--policies", str(policies)])
    assert args.policies == policies and args.profiles == 200 and args.reloads == 2
