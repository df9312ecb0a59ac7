"""h2grpc: the C load generator (h2grpc.c, on libnghttp2) that sends the distinct stream.

h2load resends one body and counts any HTTP 200 as a success; h2grpc cycles through a file of
gRPC frames (loadtest/stream.py) and counts as an error every answer whose gRPC status is not
OK, whose HTTP status is not 200, that has no `grpc-status`, or whose stream was reset.

`build()` compiles it with `gcc -O2 … -lnghttp2` (Debian `libnghttp2-dev`) into a cache
directory, once per version of the source and compiler command; `run()` runs it and returns its
summary and every measured latency.

    python -m loadtest.h2grpc --address 127.0.0.1:9191 --stream /tmp/stream.grpc --streams 16
"""

from __future__ import annotations

import argparse
import array
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.h2load import latency_summary

SOURCE = Path(__file__).with_name("h2grpc.c")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Wno-deprecated-declarations")
LIBS = ("-lnghttp2",)


def cache_dir() -> Path:
    """MANDATE_H2GRPC_CACHE, else $XDG_CACHE_HOME/mandate (~/.cache/mandate)."""
    if os.environ.get("MANDATE_H2GRPC_CACHE"):
        return Path(os.environ["MANDATE_H2GRPC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mandate"


def build() -> Path:
    """The compiled driver, built now if this source and command have not been built before.
    Built under a temporary name and renamed into place, so two runs building at once both work."""
    compiler = os.environ.get("CC", "gcc")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + shlex.join([compiler, *CFLAGS, *LIBS]).encode()).hexdigest()[:16]
    directory = cache_dir()
    binary = directory / f"h2grpc-{key}"
    if binary.exists():
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        built = Path(tmp) / "h2grpc"
        command = [compiler, *CFLAGS, "-o", str(built), str(SOURCE), *LIBS]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise RuntimeError(
                f"cannot build loadtest/h2grpc: no C compiler `{compiler}` (apt-get install gcc)"
            ) from None
        if done.returncode != 0:
            hint = " (apt-get install libnghttp2-dev)" if "nghttp2" in done.stderr else ""
            raise RuntimeError(f"cannot build loadtest/h2grpc{hint}: {shlex.join(command)}\n{done.stderr[-2000:]}")
        os.replace(built, binary)
    return binary


def version() -> str:
    """The libnghttp2 the driver runs on, as h2load names its own: "nghttp2/1.52.0"."""
    done = subprocess.run([str(build()), "--version"], capture_output=True, text=True, check=True)
    return done.stdout.strip().removeprefix("h2grpc on ")


@dataclass
class Result:
    """h2grpc's JSON summary and the latencies (ns) of the answers that ended inside the measured
    window with gRPC status OK."""

    summary: dict[str, Any]
    latencies_ns: array.array[int] = field(repr=False)

    @property
    def errors(self) -> int:
        return int(self.summary["errors"])

    def latencies_us(self) -> list[float]:
        return [value / 1000 for value in self.latencies_ns]

    def figures(self) -> dict[str, Any]:
        """One run's row: req/s, requests, errors by kind, the driver's CPU, the latency percentiles."""
        return {
            "rps": self.summary["rps"],
            "requests": self.summary["requests"],
            "errors": self.errors,
            "errors_by_kind": {kind: n for kind, n in self.summary["errors_by_kind"].items() if n},
            "first_error": self.summary["first_error"],
            "driver_cpu_us_per_request": self.summary["cpu_us_per_request"],
            **latency_summary(self.latencies_us()),
        }


def run(
    address: str,
    stream: Path,
    *,
    seconds: float,
    warmup: float = 0.5,
    connections: int = 1,
    streams: int = 1,
    workdir: Path | None = None,
    drain: float = 5.0,
) -> Result:
    """One timed run: `connections` × `streams` in flight, cycling through the frames in `stream`,
    for `seconds` after `warmup`."""
    with tempfile.TemporaryDirectory(prefix="h2grpc-", dir=workdir) as tmp:
        latencies = Path(tmp) / "latencies.bin"
        command = [
            str(build()),
            f"--address={address}",
            f"--stream={stream}",
            f"--connections={connections}",
            f"--streams={streams}",
            f"--duration={seconds}",
            f"--warmup={warmup}",
            f"--drain={drain}",
            f"--latencies={latencies}",
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + warmup + drain + 30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"h2grpc exited {done.returncode}: {done.stderr.strip()[-1000:]}")
        values = array.array("Q")
        values.frombytes(latencies.read_bytes())
    return Result(json.loads(done.stdout), values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.h2grpc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default="127.0.0.1:9191")
    parser.add_argument("--stream", type=Path, required=True, help="gRPC frames (python -m loadtest.stream)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--streams", type=int, default=1, help="streams in flight per connection")
    args = parser.parse_args(argv)
    result = run(
        args.address,
        args.stream,
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        streams=args.streams,
    )
    json.dump(result.figures(), sys.stdout, indent=1)
    print()
    return 1 if result.errors else 0
