"""What filtering an MCP list answer costs Mandate (SPEC §9, issue #18), per list size.

A benchmark, never a timed test. Every figure is taken in process: one ext_proc stream of
`ListService` answering the messages Envoy 1.40 sends for a `tools/list` (request headers with
the caller's attributes and ext_authz's metadata, the request body, the answer's headers, its
body in chunks), each message's reply built as it would go back over gRPC. The caller is
support-agent of the example policies, the answer holds N tools (each with a description and an
input schema, ~150 bytes, names drawn so that a third are the caller's), and the rows are:

  json            the answer as JSON in one chunk (Envoy's STREAMED mode hands over what it has)
  json_16k        the same in 16 KiB chunks
  sse             one SSE event, in 16 KiB chunks
  sse_per_byte    the SSE answer one byte per chunk: one message per byte, the worst split
  gzip            the JSON answer gzip-encoded, in 16 KiB chunks
  floor           orjson.loads + orjson.dumps of the JSON answer: the least any filter must spend

Per row and size: the median and min over the repetitions (rows alternate within a round, so a
machine growing busier slows all alike), µs per tool, and, for each shape, the size exponent e
(time ∝ tools^e, from the two largest sizes, by medians and by minima; 1: linear). The
collector is set as `mandate serve` sets it (`freeze_heap`). `sse_per_byte` runs up to 1,000 tools
(~150 KB: 150,000 messages). A gzip bomb (64 MiB of spaces in ~64 KiB) is timed to its refusal.

    python -m loadtest.lists                 # the table
    python -m loadtest.lists --out BENCHMARKS.md   # write or replace its section
    python -m loadtest.lists --smoke         # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Response path: filtering list answers (loadtest/lists.py)"
SIZES = (10, 100, 1_000, 10_000)
PER_BYTE_UP_TO = 1_000
CHUNK = 16 << 10
SHAPES = ("json", "json_16k", "sse", "sse_per_byte", "gzip", "floor")


def answer(tools: int) -> bytes:
    """A tools/list answer of `tools` tools, a third of them names support-agent may call."""
    allowed = ("get_me", "list_issues", "get_issue")
    entries = [
        {
            "name": allowed[i % 3] if i % 3 == 0 else f"tool_{i}",
            "description": f"Tool number {i}: does one thing and does it well.",
            "inputSchema": {"type": "object", "properties": {"repo": {"type": "string"}}},
        }
        for i in range(tools)
    ]
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": entries, "nextCursor": "next"}})


def messages(shape: str, body: bytes) -> Callable[[], Iterator[Any]]:
    """The ProcessingRequests Envoy sends for one list request answered in `shape`, built one at a
    time as they are asked for (150,000 held at once would measure the memory they take)."""
    from tests.harness.ext_proc import jsonrpc, request_body, request_headers, response_body, response_headers

    headers = {"content-type": "application/json"}
    if shape.startswith("sse"):
        headers = {"content-type": "text/event-stream"}
        body = b"event: message\r\ndata: " + body + b"\r\n\r\n"
    if shape == "gzip":
        headers["content-encoding"] = "gzip"
        body = gzip.compress(body)
    size = {"json": len(body), "sse_per_byte": 1}.get(shape, CHUNK)
    asked = orjson.dumps(jsonrpc("tools/list"))

    def each() -> Iterator[Any]:
        yield from (request_headers(), request_body(asked), response_headers(200, headers))
        for start in range(0, len(body), size):
            yield response_body(body[start : start + size], start + size >= len(body))

    return each


def one_run(service: Any, shape: str, prepared: Any) -> tuple[int, Any]:
    """ns Mandate spent on one answer (each message built outside the timing), and its last reply
    (checked once, outside the timing)."""
    if shape == "floor":
        started = time.perf_counter_ns()
        out = orjson.dumps(orjson.loads(prepared))
        return time.perf_counter_ns() - started, out
    stream = service.open()
    elapsed = 0
    for message in prepared():
        started = time.perf_counter_ns()
        reply = stream.answer(message)
        elapsed += time.perf_counter_ns() - started
    service.close(stream)
    return elapsed, reply


def measure(sizes: tuple[int, ...], seconds: float) -> dict[str, dict[int, dict[str, float]]]:
    """Each (shape, size) timed in rounds that alternate the shapes, for about `seconds` per size."""
    from authz.check.pipeline import Authorizer
    from authz.listing.service import ListService
    from authz.policy.compiler import compile_directory
    from authz.serve.heap import freeze_heap

    service = ListService(Authorizer(compile_directory(ROOT / "policies")), limit=64 << 20)
    freeze_heap()  # as `mandate serve` sets the collector
    results: dict[str, dict[int, dict[str, float]]] = {shape: {} for shape in SHAPES}
    for tools in sizes:
        body = answer(tools)
        rows = {s: (body if s == "floor" else messages(s, body)) for s in SHAPES}
        rows = {s: p for s, p in rows.items() if s != "sse_per_byte" or tools <= PER_BYTE_UP_TO}
        for shape, prepared in rows.items():
            _check(shape, one_run(service, shape, prepared)[1])
        samples: dict[str, list[int]] = {shape: [] for shape in rows}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or min(map(len, samples.values())) < 3:
            for shape, prepared in rows.items():
                samples[shape].append(one_run(service, shape, prepared)[0])
        for shape, values in samples.items():
            results[shape][tools] = {"median": statistics.median(values) / 1000, "min": min(values) / 1000}
            results[shape][tools]["runs"] = len(values)
    return results


def _check(shape: str, delivered: Any) -> None:
    """Each shape really filters: the caller's tools only (a benchmark of a broken filter is none)."""
    if shape == "floor":
        return
    body = delivered.response_body.response.body_mutation.body
    text = body.split(b"data: ", 1)[1] if body.startswith(b"event:") else body
    names = {tool["name"] for tool in orjson.loads(text)["result"]["tools"]}
    assert names <= {"get_me"}, names


def bomb_ms() -> float:
    """ms from the first byte of a 64 MiB gzip bomb to its refusal (8 MiB limit)."""
    from authz.check.pipeline import Authorizer
    from authz.listing.service import ListService
    from authz.policy.compiler import compile_directory
    from tests.harness.ext_proc import (
        chunks_of,
        jsonrpc,
        request_body,
        request_headers,
        response_body,
        response_headers,
    )

    service = ListService(Authorizer(compile_directory(ROOT / "policies")))
    chunks = chunks_of(gzip.compress(b"data: " + b" " * (64 << 20)), CHUNK)
    prepared = [request_headers(), request_body(orjson.dumps(jsonrpc("tools/list")))]
    prepared.append(response_headers(200, {"content-type": "text/event-stream", "content-encoding": "gzip"}))
    prepared += [response_body(chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks)]
    stream = service.open()
    started = time.perf_counter_ns()
    replies = [stream.answer(message) for message in prepared]
    elapsed = time.perf_counter_ns() - started
    assert any(b"list_too_large" in reply.response_body.response.body_mutation.body for reply in replies)
    return elapsed / 1e6


def exponent(row: dict[int, dict[str, float]]) -> str:
    """e in time ∝ tools^e between the two largest sizes, from the medians (and from the minima)."""
    sizes = sorted(row)
    if len(sizes) < 2:
        return "–"
    small, large = sizes[-2], sizes[-1]
    found = [math.log(row[large][key] / row[small][key]) / math.log(large / small) for key in ("median", "min")]
    return f"{found[0]:.2f} ({found[1]:.2f})"


def table(results: dict[str, dict[int, dict[str, float]]], sizes: tuple[int, ...]) -> list[str]:
    header = "| shape | " + " | ".join(f"{n:,} tools: µs (min), µs/tool" for n in sizes) + " | exponent (min) |"
    lines = [header, "|---" * (len(sizes) + 2) + "|"]
    for shape, row in results.items():
        cells = []
        for n in sizes:
            cell = row.get(n)
            cells.append(f"{cell['median']:,.0f} ({cell['min']:,.0f}), {cell['median'] / n:.2f}" if cell else "–")
        lines.append(f"| `{shape}` | " + " | ".join(cells) + f" | {exponent(row)} |")
    return lines


def section(results: dict[str, dict[int, dict[str, float]]], sizes: tuple[int, ...], bomb: float, command: str) -> str:
    from authz.serve.service import request_path

    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip() or "?"
    lines = [
        SECTION,
        "",
        (
            f"`{command}` at {commit}, {datetime.now(UTC):%Y-%m-%d}, Python {platform.python_version()}, "
            f"request path {request_path().split(' (')[0]}; the shared 2-core machine, so figures are noisy: "
            "medians of alternating rounds. Mandate's own time for one `tools/list` answer through one ext_proc "
            "stream (every message Envoy sends answered, each reply built; the messages are built between the "
            "timed calls), in process; µs per tool is the median over "
            "the tools in the answer (~150 bytes each, a third kept)."
        ),
        "",
        *table(results, sizes),
        "",
        (
            f"A 64 MiB gzip bomb (~64 KiB sent) is refused (`list_too_large`) after {bomb:,.0f} ms: decoding "
            "stops one byte past the 8 MiB limit. `sse_per_byte` is one ext_proc message per byte (the worst "
            "split Envoy can make), each byte scanned once."
        ),
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Write or replace the section, keeping the rest of the file; a new one goes before "## Not covered"."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if SECTION in old:
        start = old.index(SECTION)
        end = old.find("\n## ", start + len(SECTION))
        old = old[:start] + (old[end + 1 :] if end >= 0 else "")
    else:
        start = old.find("## Not covered")
        start = len(old) if start < 0 else start
    head, tail = old[:start], old[start:]
    path.write_text(head.rstrip("\n") + "\n\n" + text + ("\n" + tail if tail.strip() else ""), encoding="utf-8")


def main(argv: list[str] | None = None, out: Callable[[str], object] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.lists", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help=f"write or replace the {SECTION!r} section of this file")
    parser.add_argument("--seconds", type=float, default=4.0, help="per size, all shapes together (default 4)")
    parser.add_argument("--smoke", action="store_true", help="sizes 10 and 100, a fraction of a second each")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sizes = (10, 100) if args.smoke else SIZES
    results = measure(sizes, 0.1 if args.smoke else args.seconds)
    bomb = bomb_ms()
    command = "python -m loadtest.lists" + (" --smoke" if args.smoke else "")
    text = section(results, sizes, bomb, command)
    if args.out:
        write_section(args.out, text)
    out(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
