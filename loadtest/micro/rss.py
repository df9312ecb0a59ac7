"""Resident memory of a compiled policy set, measured twice: in the benchmark's own process
(what compiling it added) and in a fresh interpreter that only imports `authz` and compiles the
same directory, the figures to hold against SPEC's "< 300 MB with 10,000 profiles" and "100,000
profiles: load and compile < 30 s, RSS < 1 GB" (its time too), because the benchmark's process
also holds the generator's objects and every earlier size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rss_mb() -> float:
    """This process's resident set (VmRSS), in MB."""
    return _status_kb("VmRSS") / 1024


def _status_kb(field_name: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# VmHWM is the peak: it includes the YAML and pydantic transients of loading.
_FRESH_RSS = """
import gc, json, sys, time
from pathlib import Path
def kb(name):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0
from authz.policy.compiler import compile_directory
import authz.check.pipeline, authz.check.response
gc.collect()
after_import = kb("VmRSS")
started = time.perf_counter()
policy = compile_directory(sys.argv[1])
seconds = time.perf_counter() - started
gc.collect()
print(json.dumps({"after_import": after_import, "after_compile": kb("VmRSS"), "peak": kb("VmHWM"),
                  "seconds": seconds, "profiles": len(policy.profiles)}))
"""


def fresh_process_rss(directory: Path) -> dict[str, float]:
    """Compile `directory` in a new interpreter that imports only `authz`; its memory, in MB."""
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_RSS, str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
        cwd=ROOT,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "after_import": round(data["after_import"] / 1024, 1),
        "after_compile": round(data["after_compile"] / 1024, 1),
        "peak": round(data["peak"] / 1024, 1),
        "seconds": round(data["seconds"], 2),
    }
