"""h2load (nghttp2's C HTTP/2 client) as a gRPC load generator: the latency floor's client.

h2load knows nothing of gRPC, but a unary gRPC call is an HTTP/2 POST to
`/envoy.service.auth.v3.Authorization/Check` with `content-type: application/grpc`,
`te: trailers` and a body of one length-prefixed message (a 0 byte for "not compressed",
the length as 4 bytes big-endian, then the serialized CheckRequest), sent over h2c. Each
run sends one pre-encoded request (h2load takes one body per run), `-c 1 -m 1` for one in
flight, `-c 1 -m 16` for sixteen.

Per-request latencies come from h2load's `--log-file` (tab-separated: start time in µs
since the epoch, HTTP status, µs until the end of the response; the file is appended to,
so it is deleted before every run) and req/s from its summary. h2load only sees HTTP 200:
a gRPC error would be a 200 with a non-zero `grpc-status` trailer, so the runner checks the
same request's gRPC status with grpcio separately (`loadtest.requests.grpc_sender`).

    python -m loadtest.h2load --address 127.0.0.1:9191 --seconds 5 --streams 16
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.requests import CHECK_METHOD, grpc_frame, representative

H2LOAD = os.environ.get("H2LOAD", "h2load")


@dataclass
class H2Result:
    rps: float  # from h2load's summary ("finished in …, N req/s"), over the measured duration
    succeeded: int
    failed: int  # h2load's failed + errored + timeout
    non_2xx: int
    latencies_us: list[int] = field(repr=False)  # every measured request, from the log file

    def summary(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "requests": self.succeeded,
            "failed": self.failed,
            "non_2xx": self.non_2xx,
            **latency_summary(self.latencies_us),
        }


def h2load_binary() -> str:
    found = shutil.which(H2LOAD)
    if not found:
        raise RuntimeError("h2load not found: `apt-get install nghttp2-client` (or set H2LOAD)")
    return found


def h2load_version() -> str:
    out = subprocess.run([h2load_binary(), "--version"], capture_output=True, text=True, check=False).stdout
    first = out.strip().splitlines()[0] if out.strip() else "unknown"
    return first.removeprefix("h2load ").strip()  # "nghttp2/1.52.0"


def percentile(sorted_values: list[int] | list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-int(len(sorted_values) * fraction * 1_000_000) // 1_000_000))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary(latencies_us: list[int]) -> dict[str, float]:
    values = sorted(latencies_us)
    return {
        "p50_us": percentile(values, 0.50),
        "p90_us": percentile(values, 0.90),
        "p99_us": percentile(values, 0.99),
        "p999_us": percentile(values, 0.999),
        "mean_us": round(sum(values) / len(values), 1) if values else 0.0,
        "max_us": float(values[-1]) if values else 0.0,
    }


_FINISHED = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def parse_summary(text: str) -> tuple[float, int, int, int]:
    """(req/s, succeeded, failed, non-2xx) from h2load's standard output."""
    finished, requests, status = _FINISHED.search(text), _REQUESTS.search(text), _STATUS.search(text)
    if not (finished and requests and status):
        raise RuntimeError(f"cannot read h2load's summary:\n{text[-2000:]}")
    succeeded = int(requests.group(4))
    failed = sum(int(requests.group(i)) for i in (5, 6, 7))
    non_2xx = sum(int(status.group(i)) for i in (2, 3, 4))
    return float(finished.group(1)), succeeded, failed, non_2xx


def read_log(path: Path) -> list[int]:
    """µs per request from `--log-file` lines `start_us<TAB>status<TAB>duration_us`; only 200s."""
    latencies = []
    with path.open() as log:
        for line in log:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                latencies.append(int(parts[2]))
    return latencies


def duration(seconds: float) -> str:
    """h2load's <DURATION>: whole milliseconds with a unit (it refuses "0.5")."""
    return f"{max(1, round(seconds * 1000))}ms"


def run(
    address: str,
    frame: bytes,
    *,
    seconds: float,
    clients: int = 1,
    streams: int = 1,
    warmup: float = 0.5,
    workdir: Path | None = None,
    timeout: float | None = None,
) -> H2Result:
    """One timed h2load run of `clients` connections × `streams` concurrent streams each,
    sending `frame` (a gRPC length-prefixed CheckRequest) for `seconds` after `warmup`."""
    own_dir = None
    if workdir is None:
        own_dir = tempfile.TemporaryDirectory(prefix="h2load-")
        workdir = Path(own_dir.name)
    try:
        body, log = workdir / "check.grpc", workdir / "h2load.log"
        body.write_bytes(frame)
        log.unlink(missing_ok=True)  # h2load appends to its log file
        command = [
            h2load_binary(),
            f"--duration={duration(seconds)}",
            f"--warm-up-time={duration(warmup)}",
            f"--clients={clients}",
            f"--max-concurrent-streams={streams}",
            "--threads=1",
            f"--data={body}",
            "--header=content-type: application/grpc",
            "--header=te: trailers",
            f"--log-file={log}",
            f"http://{address}{CHECK_METHOD}",
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout or seconds + warmup + 30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"h2load exited {done.returncode}: {done.stderr[-1000:] or done.stdout[-1000:]}")
        rps, succeeded, failed, non_2xx = parse_summary(done.stdout)
        latencies = read_log(log) if log.exists() else []
        if not latencies:
            raise RuntimeError(f"h2load logged no successful request to {address}:\n{done.stdout[-1500:]}")
        return H2Result(rps, succeeded, failed, non_2xx, latencies)
    finally:
        if own_dir is not None:
            own_dir.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loadtest.h2load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default="127.0.0.1:9191")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--streams", type=int, default=1, help="concurrent streams per connection")
    args = parser.parse_args(argv)
    result = run(
        args.address,
        grpc_frame(representative().payload),
        seconds=args.seconds,
        clients=args.clients,
        streams=args.streams,
        warmup=args.warmup,
    )
    print({key: value for key, value in result.summary().items()})
    return 0 if not result.failed and not result.non_2xx else 1


if __name__ == "__main__":
    raise SystemExit(main())
