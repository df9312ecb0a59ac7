"""What the sizes say together: each scenario's p50 and p99 by size, and SPEC §8's two verdicts
on the decision path, p99 ≤ 50 µs and flat (±20 %) from the smallest size to the largest."""

from __future__ import annotations

from typing import Any

P99_TARGET_US = 50.0
FLAT_TOLERANCE = 0.2


def summarize(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's "summary". Only scenarios marked `spec` count for the verdicts, and only where
    every size marks them so: the others are figures beside the decision path, not the path."""
    by_scenario: dict[str, Any] = {}
    names: list[str] = []
    for entry in sizes:
        for name in entry["scenarios"]:
            if name not in names:
                names.append(name)
    for name in names:
        p50 = {str(e["profiles"]): e["scenarios"][name]["p50_us"] for e in sizes if name in e["scenarios"]}
        p99 = {str(e["profiles"]): e["scenarios"][name]["p99_us"] for e in sizes if name in e["scenarios"]}
        values = list(p99.values())
        ratio = round(values[-1] / values[0], 3) if len(values) > 1 and values[0] else None
        by_scenario[name] = {"p50_us": p50, "p99_us": p99, "p99_ratio_largest_vs_smallest": ratio}
    # A case with calls denied because the chain store looked down measured those denials too.
    excluded = {
        n: "some calls were denied chain_store_unavailable (see warnings)"
        for n in names
        if any("store_unavailable_calls" in e["scenarios"].get(n, {}) for e in sizes)
    }
    worst: dict[str, Any] = {}
    for entry in sizes:
        spec = [(s["p99_us"], n) for n, s in entry["scenarios"].items() if s["spec"] and n not in excluded]
        if spec:
            value, name = max(spec)
            worst[str(entry["profiles"])] = {"scenario": name, "p99_us": value}
    spec_names = [
        n for n in names if n not in excluded and all(e["scenarios"][n]["spec"] for e in sizes if n in e["scenarios"])
    ]
    flat_detail = {
        n: by_scenario[n]["p99_ratio_largest_vs_smallest"]
        for n in spec_names
        if by_scenario[n]["p99_ratio_largest_vs_smallest"] is not None
    }
    flat = all(abs(r - 1) <= FLAT_TOLERANCE for r in flat_detail.values()) if flat_detail else None
    return {
        "by_scenario": by_scenario,
        "spec": {
            "p99_target_us": P99_TARGET_US,
            "flat_tolerance": FLAT_TOLERANCE,
            "worst_p99_us": worst,
            "p99_target_met": bool(worst) and all(w["p99_us"] <= P99_TARGET_US for w in worst.values()),
            "flat": flat,
            "flat_detail": flat_detail,
            "excluded": excluded,
        },
    }
