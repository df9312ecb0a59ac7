"""Hostile input has a price list (SPEC §8, security issue #16): the worst requests an attacker
can send Mandate, what each one costs, and whether memory stays put after many of them.

A benchmark, never a timed test. Every figure is taken in process through
`Authorizer(...).check_bytes(payload)`, the gRPC entry point (serialized CheckRequest in,
serialized CheckResponse out), on the example policies plus one generated profile with a `when`
over a list. Classes of input (`CLASSES`), each sent by an allowed caller, by an unknown one (a
SPIFFE ID no profile governs) and with no identity at all:

  batch_1mib        a ~1 MiB JSON-RPC batch (MCP 2025-03-26) of allowed tools/call
  single_1mib       one tools/call whose arguments hold ~1 MiB of small objects
  deep_max          arguments nested (arrays and objects alternating) as deep as the pipeline's
                    JSON reader accepts, the depth found by bisection against check_bytes
  deep_over         ~1 MiB of nesting, far deeper than the reader accepts
  id_string_1mib    a 1 MiB string JSON-RPC id
  id_int_1mib       a 1 MiB integer JSON-RPC id (a million digits)
  headers_1000      1,000 extra headers
  xfcc_60k          one 60 KiB x-forwarded-client-cert (a chain of XFCC elements)
  mcp_name_60k      a tools/call whose tool name, and so its Mcp-Name header, is 60 KiB
  unique            a small tools/call with a new id, new arguments and new header values every
                    request: the RSS row, always sent --requests times
  unique_chain      billing-agent's call carrying a new (forged) x-delegation-chain token every
                    request, always sent --requests times
  denied_batch_1mib a ~1 MiB batch of tools/call the caller may not make (each id echoed back)
  when_list_1mib    a call whose rule's `when` is `size(mcp.tool.arguments.xs) < 10`, xs a
                    ~1 MiB list of integers

Every request of a row is unique: a 10-digit marker (`MARK`) in its ids, arguments and headers
becomes the request's number, and the first id's length changes from one request to the next
(`Numbered`), so answers that echo it differ in length too. Requests are built and serialized
between the timed calls, never inside them.

Each row runs in a forked child of a parent that has only imported `authz` and compiled the
policies, so what one row allocates or keeps never shows in another row's RSS. A row sends
`--requests` requests, or (the sized classes) as many as fit in `--seconds`, at least three.

Per row: the answer (reason and response size), p50 and max of check_bytes, the same for the
floor — `CheckRequest.FromString(payload)` alone on the same payload, the least any authorizer
must spend — timed just before each check; the peak RSS while they were answered (VmHWM, reset
after one untimed warm-up request: a request's transient memory, freed or not), RSS (VmRSS) after
them and its growth over them (after `gc.collect()`; memory glibc keeps after a large request
counts, as it does for a server); and the size exponent e, time ∝ bytes^e between the class at
a quarter of its size and at full size (1: linear, 2: quadratic), from requests of both sizes
alternating, so that a machine growing busier meanwhile slows both alike (`exponent`).

    python -m loadtest.hostile                  # every row, --requests 100000, prints the table
    python -m loadtest.hostile --smoke          # every row at a tiny size, in seconds
    python -m loadtest.hostile --json run.json  # the raw rows
    python -m loadtest.hostile --before before.json --out BENCHMARKS.md   # before/after section
    python -m loadtest.hostile --before before.json --after after.json --out BENCHMARKS.md   # from two runs
    python -m loadtest.hostile --one unique:allowed   # one row in this process, as JSON
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
SECTION = "## Hostile input (loadtest/hostile.py)"
BY_HAND = "### By hand"  # kept when --out rewrites the section: what people wrote about the figures
MARK = b"8642097531"  # replaced by each request's number: digits, so it fits an integer id too
MARK_TEXT = MARK.decode()
KIB, MIB = 1024, 1 << 20
MIN_REQUESTS = 3
FIRST = {"warm": 0, "main": 1_000, "quarter": 5_000_000_000}  # request numbers: every request unique

SUPPORT = "spiffe://cluster.local/ns/support/sa/support-agent"
BILLING = "spiffe://cluster.local/ns/billing/sa/billing-agent"
CRUNCHER = "spiffe://cluster.local/ns/hostile/sa/number-cruncher"
STRANGER = "spiffe://cluster.local/ns/elsewhere/sa/stranger"
GITHUB_MCP = "github-mcp.tools.svc.cluster.local"
BILLING_DB_MCP = "billing-db-mcp.billing.svc.cluster.local"
MCP_VERSION, BATCH_VERSION = "2026-07-28", "2025-03-26"
CALLERS = ("allowed", "unknown", "none")

# Added to a copy of the example policies: a `when` that has to look at a whole list.
CRUNCHER_PROFILE = f"""apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: number-cruncher}}
spec:
  principals: [{CRUNCHER}]
  mission: Sums short lists of numbers; its `when` bounds how many (loadtest/hostile.py).
  mcp:
    - server: github
      tools: [sum_numbers]
      when: 'size(mcp.tool.arguments.xs) < 10'
"""


@dataclass(frozen=True)
class Sizes:
    """How big the hostile parts are; `depth` is measured (the deepest the reader accepts)."""

    body: int = MIB
    headers: int = 1000
    header: int = 60 * KIB
    depth: int = 0

    def scaled(self, factor: float) -> Sizes:
        return Sizes(
            int(self.body * factor),
            max(1, int(self.headers * factor)),
            int(self.header * factor),
            max(1, int(self.depth * factor)),
        )


SMOKE_SIZES = Sizes(body=4 * KIB, headers=16, header=KIB)


def _authz(step: str) -> Any:
    """authz's module for one step of a Check: `authz.check.<step>` since 3a0c74f moved them,
    `authz.<step>` before (8cb4f11, the commit the before/after comparison runs this file on).
    Chosen by the imported package's own folders: an editable install's finder would otherwise
    fill a subpackage missing under PYTHONPATH's authz from the working tree's."""
    import authz

    moved = (Path(authz.__file__).parent / "check").is_dir()
    return importlib.import_module(f"authz.check.{step}" if moved else f"authz.{step}")


# --- the requests -----------------------------------------------------------------------------


def _post(principal: str, body: bytes, headers: dict[str, str], host: str = GITHUB_MCP) -> Any:
    """An MCP Streamable HTTP POST as Envoy describes it; the request and session ids are unique."""
    everything = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "content-length": str(len(body)),
        "user-agent": "hostile",
        "x-request-id": MARK_TEXT + "0" * 22,
        "mcp-session-id": MARK_TEXT + "5f1c0e",
        **headers,
    }
    return _authz("request").AuthzInput(
        method="POST", path="/mcp", host=host, headers=everything, body=body, source_principal=principal
    )


def _call(
    principal: str,
    tool: str,
    arguments: bytes,
    id_json: bytes = b'"' + MARK + b'"',
    host: str = GITHUB_MCP,
    **headers: str,
) -> Any:
    """One tools/call (2026-07-28: Mcp-Method / Mcp-Name agree with the body), from raw JSON parts,
    so ids and nesting no JSON library would write can be sent. The id is a string: its length
    changes from request to request (`Numbered`), which a 64-bit integer's could not for long."""
    body = (
        b'{"jsonrpc":"2.0","id":'
        + id_json
        + b',"method":"tools/call","params":{"name":'
        + orjson.dumps(tool)
        + b',"arguments":'
        + arguments
        + b"}}"
    )
    named = {"mcp-protocol-version": MCP_VERSION, "mcp-method": "tools/call", "mcp-name": tool}
    return _post(principal, body, {**named, **{key.replace("_", "-"): value for key, value in headers.items()}}, host)


def _fill(size: int, item: Callable[[int], bytes], sep: bytes = b",") -> bytes:
    """Items joined by `sep` until they reach `size` bytes (at least one)."""
    parts, total, index = [], 0, 0
    while total < size or not parts:
        parts.append(item(index))
        total += len(parts[-1]) + len(sep)
        index += 1
    return sep.join(parts)


def _batch(principal: str, size: int, tool: str) -> Any:
    """A JSON-RPC batch of tools/call filling `size` bytes; every id different within the batch."""
    arguments = b'{"repo":"acme/web","state":"open"}'
    body = (
        b"["
        + _fill(
            size,
            lambda k: (
                b'{"jsonrpc":"2.0","id":"%d-' % k + MARK + b'","method":"tools/call",'
                b'"params":{"name":"' + tool.encode() + b'","arguments":' + arguments + b"}}"
            ),
        )
        + b"]"
    )
    return _post(principal, body, {"mcp-protocol-version": BATCH_VERSION})


def nest(depth: int) -> bytes:
    """`depth` levels of arrays and objects alternating around one unique string."""
    opening = b"".join(b"[" if level % 2 == 0 else b'{"a":' for level in range(depth))
    closing = b"".join(b"]" if level % 2 == 0 else b"}" for level in reversed(range(depth)))
    return opening + b'"' + MARK + b'"' + closing


def _small(principal: str, **headers: str) -> Any:
    return _call(principal, "list_issues", b'{"repo":"acme/web","state":"open","q":"' + MARK + b'"}', **headers)


def _xfcc(size: int) -> str:
    element = (
        b"By=spiffe://cluster.local/ns/tools/sa/github-mcp;Hash="
        + MARK
        + b"0" * 54
        + b';Subject="";URI=spiffe://cluster.local/ns/support/sa/support-agent'
    )
    return _fill(size, lambda k: element).decode()


def _many_headers(count: int) -> dict[str, str]:
    return {f"x-hostile-{k:04d}": MARK_TEXT + "-" + "v" * 24 for k in range(count)}


def _numbers(size: int) -> bytes:
    return b'{"xs":[1' + MARK + b"," + _fill(size, lambda k: b"%d" % (k * 7919 % 100_000)) + b"]}"


def _notes(size: int) -> bytes:
    note = b'{"n":1,"text":"' + MARK + b"x" * 64 + b'","tags":["a","b"]}'
    return b'{"repo":"acme/web","state":"open","notes":[' + _fill(size, lambda k: note) + b"]}"


Builder = Callable[[Sizes, str], Any]  # (sizes, principal) -> AuthzInput carrying MARK


@dataclass(frozen=True)
class Hostile:
    """One class of hostile input: how to build it, whom its allowed caller is, and whether its
    size can be scaled (a quarter-size copy gives the size exponent) or it is the RSS kind, sent
    --requests times whatever the time."""

    name: str
    build: Builder
    allowed: str = SUPPORT
    every: bool = False

    def principal(self, caller: str) -> str:
        return {"allowed": self.allowed, "unknown": STRANGER, "none": ""}[caller]


_LIST = b'{"repo":"acme/web","state":"open"}'
CLASSES: dict[str, Hostile] = {
    each.name: each
    for each in (
        Hostile("batch_1mib", lambda s, p: _batch(p, s.body, "list_issues")),
        Hostile("single_1mib", lambda s, p: _call(p, "list_issues", _notes(s.body))),
        Hostile("deep_max", lambda s, p: _call(p, "list_issues", b'{"repo":"acme/web","deep":' + nest(s.depth) + b"}")),
        Hostile(
            "deep_over",
            lambda s, p: _call(
                p, "list_issues", b'{"repo":"acme/web","deep":' + nest(max(s.depth + 1, s.body // 4)) + b"}"
            ),
        ),
        Hostile("id_string_1mib", lambda s, p: _call(p, "list_issues", _LIST, b'"' + MARK + b"x" * s.body + b'"')),
        Hostile("id_int_1mib", lambda s, p: _call(p, "list_issues", _LIST, b"1" + MARK + b"0" * s.body)),
        Hostile("headers_1000", lambda s, p: _small(p, **_many_headers(s.headers))),
        Hostile("xfcc_60k", lambda s, p: _small(p, x_forwarded_client_cert=_xfcc(s.header))),
        Hostile("mcp_name_60k", lambda s, p: _call(p, "t" + MARK_TEXT + "n" * s.header, _LIST)),
        Hostile("unique", lambda s, p: _small(p), every=True),
        Hostile(
            "unique_chain",
            lambda s, p: _call(
                p,
                "lookup_invoice",
                b'{"invoice":7,"q":"' + MARK + b'"}',
                host=BILLING_DB_MCP,
                x_delegation_chain=MARK_TEXT + "0" * 26 + "." + "0" * 43,
            ),
            allowed=BILLING,
            every=True,
        ),
        Hostile("denied_batch_1mib", lambda s, p: _batch(p, s.body, "create_issue")),
        Hostile("when_list_1mib", lambda s, p: _call(p, "sum_numbers", _numbers(s.body)), allowed=CRUNCHER),
    )
}


class Numbered:
    """The serialized requests of one class, each with values no other request has: MARK becomes
    the request's number, ten digits wide, except its first place in the body (an id, always),
    where the number is written `1`, then `number % spread` zeros, then the number. So that
    value's length cycles through `spread` widths (at most 1/64 of the request, at most 4,096):
    answers echoing it differ in length too, as an attacker would make them, and nothing keyed
    by a length (a response template) is built once and reused."""

    def __init__(self, hostile: Hostile, sizes: Sizes, caller: str) -> None:
        self.request = hostile.build(sizes, hostile.principal(caller))
        if MARK not in self.request.body:
            raise AssertionError(f"{hostile.name}: no unique value in the body")
        self.spread = 1  # the size without any padding
        self.size = len(self.payload(0))
        self.spread = min(4096, max(16, self.size // 64))

    def payload(self, number: int) -> bytes:
        """The serialized CheckRequest numbered `number` (Content-Length follows the body)."""
        made = _authz("request")
        fixed, varying = b"%010d" % number, b"1" + b"0" * (number % self.spread) + b"%d" % number
        request = self.request
        body = request.body.replace(MARK, varying, 1).replace(MARK, fixed)
        text = fixed.decode()
        headers = {key: value.replace(MARK_TEXT, text) for key, value in request.headers.items()}
        headers["content-length"] = str(len(body))
        return made.to_check_request(
            made.AuthzInput(
                method=request.method,
                path=request.path,
                host=request.host,
                headers=headers,
                body=body,
                source_principal=request.source_principal,
            )
        ).SerializeToString()


# --- measuring ---------------------------------------------------------------------------------


def write_policies(directory: Path) -> Path:
    """The example policies plus the number-cruncher profile (a `when` over a list)."""
    for source in POLICIES.glob("*.yaml"):
        shutil.copy(source, directory / source.name)
    (directory / "hostile.yaml").write_text(CRUNCHER_PROFILE, encoding="utf-8")
    return directory


def rss_mib(field: str = "VmRSS") -> float:
    """VmRSS (or VmHWM, the peak) of this process; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux 4.0+), so the peak read after the requests
    is theirs: what one hostile request costs while it is answered, freed or not."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the peak then includes the process's past; it is still an upper bound


def answer_of(response: bytes) -> dict[str, Any]:
    """What Mandate said: allow or deny, the reason in its metadata, the response's size."""
    from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

    message = CheckResponse.FromString(response)
    fields = message.dynamic_metadata.fields
    reason = fields["reason"].string_value if "reason" in fields else message.status.message
    return {"allowed": message.HasField("ok_response"), "reason": reason, "response_bytes": len(response)}


def timed(
    check: Callable[[bytes], bytes], numbered: Numbered, first: int, count: int, seconds: float | None
) -> dict[str, Any]:
    """Send up to `count` unique requests (stopping after `seconds`, when given, and at least
    MIN_REQUESTS); each is parsed alone first (the floor), then checked, both timed."""
    from time import perf_counter_ns

    from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

    parse = CheckRequest.FromString
    floor: list[int] = []
    spent: list[int] = []
    response = b""
    deadline = None if seconds is None else time.monotonic() + seconds
    for number in range(first, first + count):
        request = numbered.payload(number)
        started = perf_counter_ns()
        parse(request)
        parsed = perf_counter_ns()
        response = check(request)
        spent.append(perf_counter_ns() - parsed)
        floor.append(parsed - started)
        if deadline is not None and len(spent) >= MIN_REQUESTS and time.monotonic() > deadline:
            break
    return {"requests": len(spent), **_stats("", spent), **_stats("floor_", floor), "last": response}


def _stats(prefix: str, values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"{prefix}p50_us": ordered[len(ordered) // 2] / 1e3, f"{prefix}max_ms": ordered[-1] / 1e6}


def measure(policy: Any, name: str, caller: str, sizes: Sizes, requests: int, seconds: float) -> dict[str, Any]:
    """One row: a fresh Authorizer, one warm-up request, then the timed requests with RSS
    around them, then full and quarter-size requests alternating for the size exponent (sized
    classes only)."""
    hostile = CLASSES[name]
    authorizer = _authz("pipeline").Authorizer(policy)
    numbered = Numbered(hostile, sizes, caller)
    authorizer.check_bytes(numbered.payload(FIRST["warm"]))
    gc.collect()
    reset_peak()
    before = rss_mib()
    main = timed(authorizer.check_bytes, numbered, FIRST["main"], requests, None if hostile.every else seconds)
    gc.collect()
    after, peak = rss_mib(), rss_mib("VmHWM")
    row = {
        "class": name,
        "caller": caller,
        "request_bytes": numbered.size,
        "lengths": numbered.spread,
        **answer_of(main.pop("last")),
        **main,
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_after_mib": round(after, 1),
        "rss_growth_mib": round(after - before, 1),
    }
    if not hostile.every:
        small = Numbered(hostile, sizes.scaled(0.25), caller)
        row["quarter_bytes"] = small.size
        row["size_exponent"], row["floor_exponent"] = exponent(authorizer.check_bytes, numbered, small, seconds / 2)
    return row


def exponent(check: Callable[[bytes], bytes], full: Numbered, quarter: Numbered, seconds: float) -> tuple[float, float]:
    """How check time grows with size, and the floor's: log of (full time / quarter time) to the
    base of their size ratio — 1 linear, 2 quadratic. Requests alternate, full then quarter, for
    `seconds` (at least MIN_REQUESTS pairs), and the median of the pairs' ratios is taken, so a
    machine getting busier meanwhile moves both sides of each ratio alike. The floor's exponent
    (parsing the same payloads) shows what memory alone adds past a few MiB."""
    from time import perf_counter_ns

    from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

    ratios: list[float] = []
    floors: list[float] = []
    deadline = time.monotonic() + seconds
    number = FIRST["quarter"]
    while len(ratios) < MIN_REQUESTS or time.monotonic() < deadline:
        spent, parsed = [], []
        for numbered in (full, quarter):
            request = numbered.payload(number)
            started = perf_counter_ns()
            CheckRequest.FromString(request)
            middle = perf_counter_ns()
            check(request)
            spent.append(perf_counter_ns() - middle)
            parsed.append(middle - started)
            number += 1
        ratios.append(spent[0] / max(spent[1], 1))
        floors.append(parsed[0] / max(parsed[1], 1))
    base = full.size / quarter.size
    return _log_median(ratios, base), _log_median(floors, base)


def _log_median(ratios: list[float], base: float) -> float:
    ratios.sort()
    return round(math.log(max(ratios[len(ratios) // 2], 1e-9), base), 2)


def accepted_depth(policy: Any, limit: int = 1 << 17) -> int:
    """The deepest `nest()` the pipeline's JSON reader accepts inside a tools/call's arguments
    (bisected through check_bytes, from this call stack: the reader's limit is Python's
    recursion limit, less the frames above it)."""
    authorizer = _authz("pipeline").Authorizer(policy, decision_cache=0)
    hostile = CLASSES["deep_max"]

    def accepted(depth: int) -> bool:
        payload = Numbered(hostile, Sizes(depth=depth), "allowed").payload(1)
        return answer_of(authorizer.check_bytes(payload))["reason"] != "invalid_json"

    low, high = 1, limit  # accepted(low), not accepted(high)
    if not accepted(low) or accepted(high):
        raise AssertionError(f"the JSON reader's depth limit is not between 1 and {limit}")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if accepted(middle) else (low, middle)
    return low


# --- one row per child --------------------------------------------------------------------------


def _child(send: Any, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        send.send(function(*args))
    except BaseException:  # noqa: BLE001 - the parent reports it in the row
        send.send({"error": traceback.format_exc(limit=6)})
    finally:
        send.close()


def in_child(function: Callable[..., Any], *args: Any, timeout: float = 900.0) -> Any:
    """`function(*args)` in a forked child: it starts from the parent's heap (authz imported,
    policies compiled, nothing sent) and whatever it allocates or keeps dies with it, so RSS
    figures of two rows never mix. A child that neither answers nor ends in `timeout` is killed."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, function, args), daemon=True)
    process.start()
    send.close()
    try:
        result = receive.recv() if receive.poll(timeout) else {"error": f"no answer in {timeout:.0f} s"}
    except EOFError:
        result = {"error": f"the child died (exit code {process.join(5) or process.exitcode})"}
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join()
    return result


def meta(argv: list[str], sizes: Sizes, requests: int, seconds: float) -> dict[str, Any]:
    """Which code was measured (the commit holding the imported `authz`), how, and on what."""
    import authz

    where = Path(authz.__file__).resolve().parent.parent
    git = ["git", "-C", str(where)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "authz"], capture_output=True, text=True, check=False
    ).stdout
    env = " ".join(f"{key}={os.environ[key]}" for key in ("PYTHONPATH", "MANDATE_COMPILE") if key in os.environ)
    compiled = Path(_authz("pipeline").__file__).suffix != ".py"
    return {
        "commit": commit or "unknown",
        "authz_edited": sorted(line[3:] for line in dirty.splitlines()),
        "authz": str(where),
        "compiled": compiled,
        "command": f"{env + ' ' if env else ''}python -m loadtest.hostile {shlex.join(argv)}".strip(),
        "python": platform.python_version(),
        "cpu": _cpu(),
        "sizes": vars(sizes),
        "requests": requests,
        "seconds": seconds,
    }


def _load() -> str:
    """The 1-minute load average against the cores: other work on the machine shows in every max."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def run(
    names: list[str],
    callers: list[str],
    sizes: Sizes,
    requests: int,
    seconds: float,
    argv: list[str],
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Every row, each in its own forked child of this process (policies compiled once, the heap
    frozen as `mandate serve` freezes it)."""
    from authz.policy.compiler import compile_directory

    started, load = datetime.now(UTC).isoformat(timespec="seconds"), _load()

    with tempfile.TemporaryDirectory(prefix="mandate-hostile-") as directory:
        policy = compile_directory(str(write_policies(Path(directory))))
    _freeze_heap()
    depth = in_child(accepted_depth, policy)
    failed = depth.get("error") if isinstance(depth, dict) else None
    if failed:
        raise RuntimeError(f"finding the accepted depth failed: {failed}")
    sizes = Sizes(sizes.body, sizes.headers, sizes.header, depth)
    progress(f"deepest nesting the reader accepts: {depth}")
    rows = []
    for name in names:
        for caller in callers:
            row = in_child(measure, policy, name, caller, sizes, requests, seconds)
            rows.append(row if "error" not in row else {"class": name, "caller": caller, **row})
            progress(format_row(rows[-1]))
    result = {"meta": meta(argv, sizes, requests, seconds), "rows": rows}
    result["meta"].update(started=started, load=load, load_at_end=_load())
    return result


def _freeze_heap() -> None:
    """As `mandate serve` does after loading: the compiled policy out of the collector's sight."""
    import authz

    moved = (Path(authz.__file__).parent / "serve").is_dir()  # as in _authz: never the working tree's by mistake
    for name in ("authz.serve.heap", "authz.serve.reload") if moved else ("authz.reload",):
        try:
            freeze = getattr(importlib.import_module(name), "freeze_heap", None)
        except ModuleNotFoundError:
            continue
        if freeze is not None:
            freeze()
            return
    gc.collect()
    gc.freeze()


# --- the report -----------------------------------------------------------------------------------

HEADER = (
    "| class | caller | request bytes | answer | requests | p50 µs | max ms | floor p50 µs | floor max ms "
    "| size exponent (floor's) | peak RSS MiB | RSS after N MiB | RSS growth MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.2g}"


def _bytes(count: int) -> str:
    return f"{count / MIB:.2f} MiB" if count >= MIB else f"{count / KIB:.1f} KiB" if count >= KIB else f"{count} B"


def format_row(row: dict[str, Any]) -> str:
    """One Markdown table row (an error row says what went wrong)."""
    if "error" in row:
        last = row["error"].strip().splitlines()[-1][:160].replace("|", "/")
        return f"| {row['class']} | {row['caller']} | — | **error**: {last} |" + " — |" * 9
    answer = "allow" if row["allowed"] else f"deny `{row['reason']}`"
    exponent = row.get("size_exponent")
    cells = [
        row["class"],
        row["caller"],
        f"{row['request_bytes']:,}",
        f"{answer}, {_bytes(row['response_bytes'])}",
        f"{row['requests']:,}",
        _number(row["p50_us"]),
        _number(row["max_ms"]),
        _number(row["floor_p50_us"]),
        _number(row["floor_max_ms"]),
        "—" if exponent is None else f"{exponent:.2f} ({row['floor_exponent']:.2f})",
        f"{row['rss_peak_mib']:.1f}",
        f"{row['rss_after_mib']:.1f}",
        f"{row['rss_growth_mib']:+.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def table(result: dict[str, Any]) -> str:
    return "\n".join([HEADER, *(format_row(row) for row in result["rows"])])


def bounds(result: dict[str, Any]) -> list[str]:
    """One line per class: the worst caller's max time per KiB against the floor's, how time grows
    with size, and memory after the requests."""
    lines = []
    for name in dict.fromkeys(row["class"] for row in result["rows"]):
        rows = [row for row in result["rows"] if row["class"] == name and "error" not in row]
        if not rows:
            lines.append(f"- `{name}`: every row failed")
            continue
        worst = max(rows, key=lambda row: row["max_ms"])
        kib = worst["request_bytes"] / KIB
        exponents = [row["size_exponent"] for row in rows if row.get("size_exponent") is not None]
        floors = [row["floor_exponent"] for row in rows if row.get("floor_exponent") is not None]
        growth = max(row["rss_growth_mib"] for row in rows)
        memory = f"RSS growth at most {growth:+.1f} MiB after {min(row['requests'] for row in rows):,}+ unique requests"
        if not exponents:  # a small request sent N times: what matters is that the answer and memory stay put
            slowest = max(rows, key=lambda row: row["p50_us"])
            lines.append(
                f"- `{name}`: p50 at most {_number(slowest['p50_us'])} µs (floor {_number(slowest['floor_p50_us'])}), "
                f"max {_number(worst['max_ms'])} ms ({worst['caller']}); {memory}"
            )
            continue
        lines.append(
            f"- `{name}`: max {_number(worst['max_ms'])} ms ({worst['caller']}) for {_bytes(worst['request_bytes'])}"
            f" = {worst['max_ms'] * 1e3 / kib:,.1f} µs per KiB (floor {worst['floor_max_ms'] * 1e3 / kib:,.2f}); "
            f"size exponent {min(exponents):.2f}–{max(exponents):.2f} (1 = linear; the floor's "
            f"{min(floors):.2f}–{max(floors):.2f}); {memory}"
        )
    return lines


def _heading(label: str, result: dict[str, Any]) -> str:
    meta = result["meta"]
    load = (
        f", load average {meta['load']} at the start, {meta['load_at_end']} at the end" if "load_at_end" in meta else ""
    )
    count = len(meta["authz_edited"])
    edited = (
        f" plus uncommitted edits to {count} file{'s' if count > 1 else ''} under authz/ (listed in --json)"
        if count
        else ""
    )
    return (
        f"### {label}: commit {meta['commit']}{edited}\n\n`{meta['command']}` — {meta['started']}, "
        f"{'compiled (mypyc)' if meta['compiled'] else 'uncompiled'} authz, deepest accepted nesting "
        f"{meta['sizes']['depth']}, {meta['requests']:,} requests per RSS row, {meta['seconds']} s per sized row{load}"
    )


INTRO = (
    (
        "- Every request goes through `Authorizer(...).check_bytes(payload)` in process (serialized CheckRequest in, "
        "CheckResponse out) on the example policies plus a `number-cruncher` profile whose `when` is "
        "`size(mcp.tool.arguments.xs) < 10`; each class is sent by an allowed caller, an unknown one (a SPIFFE ID no "
        "profile governs) and no identity."
    ),
    (
        "- Every request carries values no other request had (ids, arguments, headers, tokens), and its first JSON-RPC "
        "id changes length from one request to the next (up to 4,096 widths), as an attacker would vary it: nothing "
        "keyed by a length is built once and reused."
    ),
    (
        "- Each row runs in a forked child of a process that has only compiled the policies, so RSS figures never mix. "
        "Sized rows send as many requests as fit in their seconds (at least 3); `unique*` rows send all N."
    ),
    (
        "- **floor**: `CheckRequest.FromString(payload)` alone on the same payloads, timed just before each check: the "
        "least any authorizer must spend. **max** includes whatever else the machine did meanwhile (the floor's max "
        "shows how much). **peak RSS**: VmHWM over the timed requests (reset after one untimed warm-up): what "
        "answering them took at once, freed or not. **RSS growth**: VmRSS after them minus before (after "
        "`gc.collect()`)."
    ),
    (
        "- **size exponent** e: time ∝ bytes^e from a quarter of the size to full size, requests of both sizes "
        "alternating, the median of the pairs' ratios (1 = linear, 2 = quadratic); in brackets the floor's, from the "
        "same pairs, which shows what the memory system alone adds."
    ),
)


def section(after: dict[str, Any], before: dict[str, Any] | None = None, by_hand: str = "") -> str:
    """The BENCHMARKS.md section: what is measured, the before table (if given), the after
    table, one bound per class from the after run, and the kept hand-written notes."""
    meta = after["meta"]
    parts = [
        SECTION,
        "",
        (
            f"Written by `python -m loadtest.hostile` (SPEC §8: hostile input has a stated price; security "
            f"issue #16). Machine: {meta['cpu']}, Python {meta['python']}. The classes are listed in "
            "loadtest/hostile.py."
        ),
        "",
        *INTRO,
    ]
    if before is not None:
        parts += ["", _heading("Before", before), "", table(before)]
    parts += [
        "",
        _heading("After" if before is not None else "This run", after),
        "",
        table(after),
        "",
        "### Bounds that hold (from the run above)",
        "",
        *bounds(after),
    ]
    if by_hand:
        parts += ["", by_hand.strip()]
    return "\n".join(parts) + "\n"


def write_section(path: Path, after: dict[str, Any], before: dict[str, Any] | None) -> None:
    """Write or replace the section in `path`, keeping the rest of the file and the section's
    own `### By hand` notes; a new section goes before "## Not covered" (or at the end)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    by_hand = ""
    if SECTION in text:
        start = text.index(SECTION)
        end = text.find("\n## ", start + len(SECTION))
        end = len(text) if end < 0 else end + 1
        old = text[start:end]
        by_hand = old[old.index(BY_HAND) :] if BY_HAND in old else ""
        text = text[:start] + text[end:]
    else:
        start = text.find("## Not covered")
        start = len(text) if start < 0 else start
    new = section(after, before, by_hand)
    head, tail = text[:start], text[start:]
    path.write_text(head.rstrip("\n") + "\n\n" + new + ("\n" + tail if tail.strip() else ""), encoding="utf-8")


# --- the command line -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.hostile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, help="requests per row (default 100000; --smoke 30)")
    parser.add_argument("--seconds", type=float, help="time for a sized row's requests (default 5; --smoke 0.05)")
    parser.add_argument("--smoke", action="store_true", help="every row at a tiny size, in seconds")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="every size times this (a class's name keeps its 1x size)"
    )
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated classes (default: all)")
    parser.add_argument("--callers", default=",".join(CALLERS), help="comma-separated: allowed, unknown, none")
    parser.add_argument("--json", type=Path, help="write the raw rows here")
    parser.add_argument("--before", type=Path, help="an earlier run's --json, shown as the before table with --out")
    parser.add_argument("--after", type=Path, help="an earlier run's --json to report, instead of running")
    parser.add_argument("--out", type=Path, help=f"write or replace the {SECTION!r} section of this file")
    parser.add_argument("--one", metavar="CLASS:CALLER", help="one row in this process, printed as JSON")
    args = parser.parse_args(argv)
    args.requests = args.requests or (30 if args.smoke else 100_000)
    args.seconds = args.seconds if args.seconds is not None else (0.05 if args.smoke else 5.0)
    args.sizes = (SMOKE_SIZES if args.smoke else Sizes()).scaled(args.scale)
    for value, known in ((args.classes, CLASSES), (args.callers, CALLERS)):
        unknown = [each for each in value.split(",") if each not in known]
        if unknown:
            parser.error(f"unknown: {', '.join(unknown)} (known: {', '.join(known)})")
    return args


def _one(args: argparse.Namespace) -> dict[str, Any]:
    from authz.policy.compiler import compile_directory

    name, _, caller = args.one.partition(":")
    with tempfile.TemporaryDirectory(prefix="mandate-hostile-") as directory:
        policy = compile_directory(str(write_policies(Path(directory))))
    depth = accepted_depth(policy) if name == "deep_max" or name == "deep_over" else 0
    sizes = Sizes(args.sizes.body, args.sizes.headers, args.sizes.header, depth)
    return measure(policy, name, caller or "allowed", sizes, args.requests, args.seconds)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.one:
        print(orjson.dumps(_one(args), option=orjson.OPT_INDENT_2).decode())
        return 0
    if args.after:  # a run made before (on another commit, say): only the report is written
        result = orjson.loads(args.after.read_bytes())
    else:
        result = run(
            args.classes.split(","),
            args.callers.split(","),
            args.sizes,
            args.requests,
            args.seconds,
            argv,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    print(f"`{result['meta']['command']}` at commit {result['meta']['commit']}\n\n{table(result)}\n")
    print("\n".join(bounds(result)))
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.out:
        before = orjson.loads(args.before.read_bytes()) if args.before else None
        write_section(args.out, result, before)
    return 1 if any("error" in row for row in result["rows"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
