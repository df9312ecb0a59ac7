"""`python -m loadtest.users --quick` runs and prints its table (the figures are BENCHMARKS work)."""

from __future__ import annotations

import subprocess
import sys


def test_the_users_price_list_runs():
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.users", "--quick"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "µs" not in line]
    assert len(rows) == 7 and all(len(row.split("|")) == 5 for row in rows)
