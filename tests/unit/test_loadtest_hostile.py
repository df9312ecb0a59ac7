"""The hostile-input price list still runs: `python -m loadtest.hostile --smoke` sends every class
from every caller at a tiny size, and writes its table into a BENCHMARKS.md without touching the
rest of the file.

Structure only — every row present, numbers present and positive, memory figures read, the
section written once and replaced in place — never a timing: SPEC §8 prices hostile input with a
benchmark, not a timed unit test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from loadtest import hostile

ROOT = Path(__file__).resolve().parents[2]
OTHER = "# Benchmarks\n\n## Memory\n\nkept as it was\n\n## Not covered\n\n- kept too\n"


def test_every_class_makes_each_request_unique_and_its_first_id_vary_in_length() -> None:
    sizes = hostile.Sizes(body=2048, headers=4, header=512, depth=8)
    for name, each in hostile.CLASSES.items():
        for caller in hostile.CALLERS:
            numbered = hostile.Numbered(each, sizes, caller)
            first, second = numbered.payload(1), numbered.payload(2)
            assert len(first) < len(second) < numbered.size + 64, (name, caller)  # the first id grows by a digit
            assert hostile.MARK not in first and CheckRequest.FromString(second).attributes.request.http.raw_body


def test_nesting_is_as_deep_as_asked() -> None:
    nested = hostile.nest(5).decode()
    assert json.loads(nested) == [{"a": [{"a": [hostile.MARK.decode()]}]}]
    assert hostile.parse_args(["--smoke"]).requests == 30 and hostile.parse_args([]).requests == 100_000


def _smoke(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.hostile", "--smoke", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def _rows(markdown: str) -> list[str]:
    return [
        line
        for line in markdown.splitlines()
        if line.startswith("| ") and "---" not in line and "| class |" not in line
    ]


@pytest.mark.timeout(120)
def test_smoke_prices_every_class_and_writes_its_section(tmp_path: Path) -> None:
    before, report = tmp_path / "before.json", tmp_path / "BENCHMARKS.md"
    done = _smoke(tmp_path, "--json", str(before))
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(before.read_text())
    rows = result["rows"]
    assert [(row["class"], row["caller"]) for row in rows] == [
        (name, caller) for name in hostile.CLASSES for caller in hostile.CALLERS
    ]
    for row in rows:
        assert "error" not in row, row
        assert row["request_bytes"] > 0 and row["response_bytes"] > 0 and row["requests"] >= hostile.MIN_REQUESTS
        assert row["max_ms"] * 1e3 >= row["p50_us"] > 0 and row["floor_max_ms"] * 1e3 >= row["floor_p50_us"] > 0
        assert row["rss_peak_mib"] >= row["rss_before_mib"] > 0 and row["rss_after_mib"] > 0 and "rss_growth_mib" in row
        assert (row["class"].startswith("unique")) == ("size_exponent" not in row), row
        if row["class"].startswith("unique"):
            assert row["requests"] == 30  # every one of N, whatever the time
        if row["caller"] != "allowed":
            assert not row["allowed"], row
    assert next(row for row in rows if (row["class"], row["caller"]) == ("unique", "allowed"))["allowed"]
    assert result["meta"]["sizes"]["depth"] > 1 and result["meta"]["command"].endswith(f"--smoke --json {before}")

    report.write_text(OTHER)
    for _ in range(2):  # the second run replaces the section, keeping the notes written by hand
        done = _smoke(
            tmp_path,
            "--classes",
            "unique,deep_over",
            "--callers",
            "allowed",
            "--before",
            str(before),
            "--out",
            str(report),
        )
        assert done.returncode == 0, done.stderr[-4000:]
        text = report.read_text()
        if hostile.BY_HAND not in text:
            report.write_text(text.replace("\n## Not covered", f"{hostile.BY_HAND}\n\nnotes\n\n## Not covered"))
    assert text.count(hostile.SECTION) == 1 and text.count(f"{hostile.BY_HAND}\n\nnotes") == 1
    assert text.startswith("# Benchmarks\n\n## Memory\n\nkept as it was\n") and text.endswith(
        "## Not covered\n\n- kept too\n"
    )
    section = text.split(hostile.SECTION, 1)[1].split("\n## ", 1)[0]
    assert "### Before" in section and "### After" in section and "### Bounds that hold" in section
    assert len(_rows(section)) == len(rows) + 2  # the whole before table, then the two rows run now
