"""`python -m loadtest.micro`: the command line, and the text table it prints."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from loadtest.micro.bench import DEFAULT_ROUNDS, run
from loadtest.micro.policyset import write_policy_set
from loadtest.micro.redis_server import local_redis

DEFAULT_SIZES = (10, 1_000, 10_000)
DEFAULT_SECONDS = 3.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="loadtest.micro", description="In-process micro-benchmark of the decision path."
    )
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="profile counts, comma-separated")
    parser.add_argument(
        "--seconds-per-case",
        type=float,
        default=None,
        help=f"timed seconds per scenario and size (default {DEFAULT_SECONDS})",
    )
    redis_group = parser.add_mutually_exclusive_group()
    redis_group.add_argument("--redis-url", help="a Redis for the chain store cases (redis://127.0.0.1:6379/0)")
    redis_group.add_argument("--start-redis", action="store_true", help="start a throwaway redis-server on a free port")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--callers",
        help="draw every request from the first N profiles (default: as many as the smallest "
        "size has, so every size meets the same agents and only the number of profiles loaded differs), "
        "or `all`: from every profile, so larger sizes also meet more agents",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"time each size's share of a scenario in this many rounds, the sizes "
        f"alternating (default {DEFAULT_ROUNDS}; 1 with --smoke)",
    )
    parser.add_argument("--no-fresh-rss", action="store_true", help="skip measuring RSS in a fresh process")
    parser.add_argument(
        "--keep-policies", type=Path, help="also write each generated policy set to DIR/<size>/ and exit"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run (sizes 10,100, 0.05 s per case) for CI")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run and print the table. Unless told `--callers`, requests come from as many profiles as the
    smallest size has, so every size meets the same agents and only the profiles loaded differ."""
    args = parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if args.keep_policies:
        for size in sizes:
            write_policy_set(args.keep_policies / str(size), size, args.seed)
            print(args.keep_policies / str(size))
        return 0
    seconds = args.seconds_per_case
    if args.smoke:
        sizes = sizes if args.sizes != ",".join(map(str, DEFAULT_SIZES)) else [10, 100]
        seconds = 0.05 if seconds is None else seconds
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    fresh = False if args.no_fresh_rss else None
    callers = min(sizes) if args.callers is None else None if args.callers == "all" else int(args.callers)
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(local_redis()) if args.start_redis else args.redis_url
        report = run(
            sizes,
            seconds,
            redis_url,
            seed=args.seed,
            smoke=args.smoke,
            fresh_rss=fresh,
            callers=callers,
            rounds=args.rounds,
            progress=progress,
        )
    if args.start_redis:
        report["redis"] = "started (throwaway redis-server on loopback)"
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def format_table(report: dict[str, Any]) -> str:
    """The report as text: what the command prints, and what BENCHMARKS.md quotes beneath its own table."""
    lines = [
        f"Mandate decision path, in process ({report['what_is_timed']})",
        (
            f"python {report['python']}, {report['cpu_count']} CPUs, {report['seconds_per_case']} s per case in "
            f"{report['rounds']} "
            f"alternating rounds, redis: {report['redis'] or 'none'}; requests from {_callers_text(report['callers'])}"
        ),
        "",
        (
            f"{'profiles':>8}  {'files':>5}  {'compile s':>9}  {'fresh s':>7}  {'RSS MB':>7}  {'growth':>7}  "
            f"{'fresh RSS':>9}  {'fresh peak':>10}"
        ),
    ]
    for entry in report["sizes"]:
        rss = entry["rss_mb"]
        fresh = rss["fresh_process_after_compile"]
        peak = rss["fresh_process_peak"]
        lines.append(
            f"{entry['profiles']:>8}  {entry['policy_files']:>5}  {entry['compile_seconds']:>9.2f}  "
            f"{_or_dash(entry.get('fresh_process_compile_seconds')):>7}  "
            f"{rss['in_process_after_compile']:>7.1f}  {rss['in_process_growth']:>7.1f}  "
            f"{fresh if fresh is not None else '-':>9}  {peak if peak is not None else '-':>10}"
        )
    return "\n".join(lines + _latency_lines(report) + _spec_lines(report["summary"]["spec"]))


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _callers_text(callers: int | None) -> str:
    return "every profile" if callers is None else f"the first {callers} profiles (and the agents they call)"


def _latency_lines(report: dict[str, Any]) -> list[str]:
    """One line per scenario and size, the sizes of a scenario together; then what was skipped and why."""
    header = (
        f"{'scenario':<28} {'profiles':>8} {'n':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>8} {'max':>9} "
        f"{'calls/s':>9}  outcome"
    )
    lines = ["", "latency in µs", header, "-" * len(header)]
    names: list[str] = []
    for entry in report["sizes"]:
        names += [n for n in entry["scenarios"] if n not in names]
    for name in names:
        for entry in report["sizes"]:
            s = entry["scenarios"].get(name)
            if s is None:
                continue
            top = next(iter(s["outcomes"]), "")
            outcome = top if len(s["outcomes"]) == 1 else f"{top} (+{len(s['outcomes']) - 1} more)"
            if "redis_gets_per_call" in s:
                outcome += f", {s['redis_gets_per_call']} GET/call"
            lines.append(
                f"{name:<28} {entry['profiles']:>8} {s['iterations']:>8} {s['p50_us']:>7.1f} {s['p90_us']:>7.1f} "
                f"{s['p99_us']:>7.1f} {s['p999_us']:>8.1f} {s['max_us']:>9.1f} {s['calls_per_s']:>9.0f}  {outcome}"
            )
    skipped = {name: why for entry in report["sizes"] for name, why in entry["skipped"].items()}
    for name, why in skipped.items():
        lines.append(f"{name:<28} skipped: {why}")
    for entry in report["sizes"]:
        for warning in entry.get("warnings", []):
            lines.append(f"warning at {entry['profiles']} profiles: {warning}")
    return lines


def _spec_lines(spec: dict[str, Any]) -> list[str]:
    lines = [
        "",
        (
            f"SPEC §8: decision p99 <= {spec['p99_target_us']:.0f} µs and flat (±{spec['flat_tolerance']:.0%}) "
            "from the smallest to the largest size (scenarios marked spec)"
        ),
    ]
    for size, worst in spec["worst_p99_us"].items():
        lines.append(f"  worst p99 at {size:>6} profiles: {worst['p99_us']:.1f} µs ({worst['scenario']})")
    lines.append(f"  p99 target met: {spec['p99_target_met']}")
    if spec["flat_detail"]:
        ratios = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in spec["flat_detail"].items())
        lines.append(f"  p99 largest/smallest: {ratios}")
        lines.append(f"  flat: {spec['flat']}")
    for name, why in spec.get("excluded", {}).items():
        lines.append(f"  left out: {name} ({why})")
    return lines
