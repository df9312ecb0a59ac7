"""How many serving processes `--workers auto` starts: the CPUs this container may use.

A pod's CPU limit is a CFS quota, not a smaller machine: `os.cpu_count()` still says how many
cores the node has, so a pod limited to 2 CPUs on a 64-core node would start 64 workers and
spend the quota switching between them. The quota is read from the container's own cgroup
(v2 `cpu.max`, else v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded down with a floor of
one, as Go's automaxprocs does; without a quota, the CPUs the process may be scheduled on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs the quota allows (at least 1), or the scheduler's CPUs when there is none."""
    quota = cgroup_quota(root)
    affinity = len(os.sched_getaffinity(0))
    if quota is None:
        return affinity
    return max(1, min(affinity, math.floor(quota)))


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The container's CPU limit in CPUs, or None when it has none (or no cgroup says)."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period or "100000")
    for directory in V1_CPU_DIRS:
        quota_text = _read(root / directory / "cpu.cfs_quota_us")
        if quota_text is not None:
            return _ratio(quota_text, _read(root / directory / "cpu.cfs_period_us") or "100000")
    return None


def _ratio(quota: str, period: str) -> float | None:
    """`max` (v2) or a negative quota (v1) is no limit; so is anything unreadable."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
