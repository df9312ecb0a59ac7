"""The response path's benchmark still runs: `python -m loadtest.lists --smoke` times every shape
(each checked to really filter), writes its own section, and a report rewrite keeps it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loadtest import report
from loadtest.lists import SECTION
from tests.harness.example_policies import REPO


def test_smoke_times_every_shape_and_writes_its_section_which_a_report_rewrite_keeps(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Machine and versions\n\nold\n\n## Not covered\n\nx\n")
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.lists", "--smoke", "--out", str(out)],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.index(SECTION) < text.index("## Not covered")
    for shape in ("json", "json_16k", "sse", "sse_per_byte", "gzip", "floor"):
        assert f"| `{shape}` |" in text
    rewritten = report.keep_other_sections("# Benchmarks\n\n## Machine and versions\n\nnew\n", text)
    assert SECTION in rewritten
