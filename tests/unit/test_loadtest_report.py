"""BENCHMARKS.md is rewritten by `python -m loadtest.run` and, one section of it, by
`python -m loadtest.hostile`: a rewrite by the runner keeps every `## ` section it does not
write, where it was, and drops only its own. Rendered from the raw results of a `--quick` run
kept beside the tests (tests/harness/loadtest_results.json); no benchmark runs here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest import report

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = (
    "## Hostile input (loadtest/hostile.py)\n\n| class | caller | p50 µs |\n|---|---|---|\n| batch_allowed | allowed "
    "| 1 |\n"
    "\n### By hand\n\nnotes\n"
)
HAND = "## Notes by hand\n\nkept as written\n"


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    results = json.loads((ROOT / "tests" / "harness" / "loadtest_results.json").read_text(encoding="utf-8"))
    results["cdf"] = {}  # results.json leaves out the latencies behind the plot
    return results


def render(results: dict[str, Any], out: Path) -> str:
    return report.markdown(
        results, out.parent / "benchmarks" / "latency-cdf.png", out, out.parent / "benchmarks" / "results.json"
    )


def test_every_section_markdown_writes_is_one_it_knows_as_its_own(results: dict[str, Any], tmp_path: Path) -> None:
    text = render(results, tmp_path / "BENCHMARKS.md")
    keys = [report.section_key(line) for line in text.splitlines() if line.startswith("## ")]
    assert len(keys) == len(report.OWN_SECTIONS) - 2  # every one but the old ANALYSIS copy and h2load table
    assert set(keys) <= set(report.OWN_SECTIONS)


def test_rendering_twice_keeps_a_section_it_does_not_write_where_it_was(
    results: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "BENCHMARKS.md"
    text = render(results, out)
    report.write_report(out, text)
    assert out.read_text(encoding="utf-8") == text  # nothing else there: exactly what markdown() wrote
    # where loadtest/hostile.py puts its section (before "## Not covered"), and a note at the end
    out.write_text(text.replace("\n## Not covered", f"\n{HOSTILE}\n## Not covered") + f"\n{HAND}", encoding="utf-8")
    for _ in range(2):
        report.write_report(out, render(results, out))
        written = out.read_text(encoding="utf-8")
        assert written.count(HOSTILE) == 1 and written.endswith(f"\n{HAND}")
        assert written.index("## Decision path in process") < written.index(HOSTILE) < written.index("## Not covered")
        assert written.replace(f"{HOSTILE}\n", "").replace(f"\n{HAND}", "") == text


def test_a_kept_section_follows_the_nearest_section_still_written(results: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    text = render(results, out)
    out.write_text(text.replace("\n## locust", f"\n{HAND}\n## locust"), encoding="utf-8")  # after "## Repeated request"
    report.write_report(out, render(dict(results, distinct_flavours={}, repeated={}), out))
    written = out.read_text(encoding="utf-8")
    assert "## gRPC flavours" not in written and "## Repeated request" not in written
    assert written.index("## Distinct traffic") < written.index(HAND) < written.index("## locust")
    # one before every section of the runner's goes after them all
    out.write_text(text.replace("\n## Machine and versions", f"\n{HAND}\n## Machine and versions"), encoding="utf-8")
    report.write_report(out, text)
    assert out.read_text(encoding="utf-8") == f"{text}\n{HAND}"


def test_its_own_sections_are_replaced_even_when_their_figures_changed(results: dict[str, Any], tmp_path: Path) -> None:
    """Headings carrying figures ("locust: ... (16 users, 10 s per run)"), the ANALYSIS.md copy
    earlier runs appended and the h2load comparison the distinct stream replaced are the
    runner's: a rewrite drops them, it does not keep them."""
    out = tmp_path / "BENCHMARKS.md"
    text = render(results, out)
    heading = f"{results['locust']['users']} users, {results['locust']['seconds']} s per run"
    assert heading in text
    old = (
        text.replace(heading, "4 users, 2 s per run")
        + "\n## What is left, and why (by hand, at abc1234)\n\nold\n"
        + "\n## Through gRPC: floor vs Mandate (h2load, `threads`)\n\nthe table the distinct stream replaced\n"
    )
    out.write_text(old, encoding="utf-8")
    report.write_report(out, text)
    assert out.read_text(encoding="utf-8") == text


def test_a_heading_inside_a_code_block_is_text() -> None:
    new = "# Benchmarks\n\n## Memory\n\nnew\n"
    old = "# Benchmarks\n\n## Memory\n\nold\n\n## Mine\n\n```\n## not a heading\n```\n"
    assert (
        report.keep_other_sections(new, old)
        == "# Benchmarks\n\n## Memory\n\nnew\n\n## Mine\n\n```\n## not a heading\n```\n"
    )
