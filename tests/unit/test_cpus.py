"""`--workers auto`: one worker per CPU the container's cgroup allows, never more than the
scheduler gives the process, never fewer than one; and 1 while chains live in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authz.serve.cpus import available_cpus, cgroup_quota
from tests.harness.example_policies import EXAMPLES, REPO

SCHEDULED = len(os.sched_getaffinity(0))


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "200000 100000"}, 2.0),
        ({"cpu.max": "150000 100000"}, 1.5),
        ({"cpu.max": "50000 100000"}, 0.5),
        ({"cpu.max": "max 100000"}, None),
        ({"cpu.max": "max"}, None),
        ({"cpu.max": "garbage"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3.0),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "100000", "cpu,cpuacct/cpu.cfs_period_us": "50000"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "0"}, None),
        ({}, None),
    ],
)
def test_the_quota_is_read_from_cgroup_v2_then_v1(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    assert cgroup_quota(cgroup(tmp_path, files)) == quota


def test_v2_wins_over_v1_when_both_are_mounted(tmp_path: Path) -> None:
    root = cgroup(tmp_path, {"cpu.max": "100000 100000", "cpu/cpu.cfs_quota_us": "400000"})
    assert cgroup_quota(root) == 1.0


@pytest.mark.parametrize(
    ("cpu_max", "workers"),
    [
        ("50000 100000", 1),  # half a CPU still runs one worker
        ("100000 100000", 1),
        ("190000 100000", 1),  # rounded down: a second worker would be throttled
        ("200000 100000", min(2, SCHEDULED)),
        ("6400000 100000", SCHEDULED),  # a quota above the node's cores is not more cores
        ("max 100000", SCHEDULED),
    ],
)
def test_workers_are_whole_cpus_of_the_quota(tmp_path: Path, cpu_max: str, workers: int) -> None:
    assert available_cpus(cgroup(tmp_path, {"cpu.max": cpu_max})) == workers


def serve_log(*extra: str) -> str:
    """What `mandate serve --workers auto` logs before it fails on purpose (a port that cannot be bound)."""
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--policies", str(EXAMPLES), "--listen", "256.0.0.1:1", *extra],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANDATE_WORKERS": "auto"},
    )
    return result.stderr


def test_auto_is_one_worker_while_chains_are_in_process() -> None:
    said = f"--workers auto: 1 of {available_cpus()} CPUs, since the chain store is in-process" in serve_log()
    assert said == (available_cpus() > 1)  # with one CPU there is nothing to explain


def test_auto_is_every_cpu_once_chains_live_in_redis() -> None:
    logged = serve_log("--redis", "redis://127.0.0.1:1/0", "--metrics-listen", "127.0.0.1:0")
    assert f"--workers auto: {available_cpus()} (the CPUs this pod may use)" in logged


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", ""])
def test_workers_must_be_auto_or_a_whole_number(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--policies", str(EXAMPLES), "--workers", value],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "expected auto or a whole number of at least 1" in result.stderr
