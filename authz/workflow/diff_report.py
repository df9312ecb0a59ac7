"""`mandate diff`'s output: Markdown for a pull-request comment, plain text, or JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from authz.workflow.diff import Fact, PolicyDiff

MODE_MEANING = {"enforce": "its refusals are now enforced", "dry-run": "its refusals are now only logged (would_deny)"}


def as_json(diff: PolicyDiff, old: str, new: str) -> dict[str, Any]:
    return {
        "old": old,
        "new": new,
        "granted": [asdict(fact) for fact in diff.granted],
        "revoked": [asdict(fact) for fact in diff.revoked],
        "changed": [{"change": change, **asdict(fact)} for change, fact in diff.changed],
        "modes": [{"profile": p, "old": a, "new": b} for p, a, b in diff.modes],
        "decisions": diff.decisions,
    }


def _fact(fact: Fact, markdown: bool) -> str:
    subject = (f"**{fact.profile}**" if markdown else fact.profile) if fact.profile else ""
    detail = f"`{fact.detail}`" if markdown else fact.detail
    return f"{subject}: {fact.what} {detail}" if subject else f"{fact.what} {detail}"


def render(diff: PolicyDiff, old: str, new: str, markdown: bool, requests: int | None) -> str:
    heading = "### " if markdown else ""
    bullet = "- "
    lines = [f"{'## ' if markdown else ''}Mandate policy diff: {old} -> {new}", ""]
    if diff.empty:
        return "\n".join([*lines, "No change in what any profile may do."]) + "\n"
    sections = (
        ("Granted (newly allowed)", [_fact(fact, markdown) for fact in diff.granted]),
        ("Revoked (no longer allowed)", [_fact(fact, markdown) for fact in diff.revoked]),
        ("Modes switched", [_mode(profile, a, b, markdown) for profile, a, b in diff.modes]),
        (
            "Other changes (conditions, delegation limits, addresses, settings)",
            [f"{change}: {_fact(fact, markdown)}" for change, fact in diff.changed],
        ),
    )
    for title, items in sections:
        if items:
            lines += [f"{heading}{title} ({len(items)})", "", *(bullet + item for item in items), ""]
    if requests is not None:
        lines += _decisions(diff.decisions, requests, markdown)
    return "\n".join(lines).rstrip() + "\n"


def _mode(profile: str, old: str, new: str, markdown: bool) -> str:
    name = f"**{profile}**" if markdown else profile
    return f"{name}: {old} -> {new} ({MODE_MEANING[new]})"


def _decisions(decisions: list[dict[str, Any]], requests: int, markdown: bool) -> list[str]:
    title = f"Decisions that change: {len(decisions)} of {requests} recorded requests"
    if not markdown:
        lines = [title, ""]
        for change in decisions:
            old, new = change["old"], change["new"]
            lines.append(
                f"- {change['request']}: {old['decision']} ({old['reason']}) -> {new['decision']} ({new['reason']})"
            )
        return [*lines, ""]
    lines = [f"### {title}", ""]
    if decisions:
        lines += ["| request | old | new |", "|---|---|---|"]
        for change in decisions:
            old, new = change["old"], change["new"]
            request = change["request"].replace("|", "\\|")
            lines.append(
                f"| {request} | {old['decision']} (`{old['reason']}`) | **{new['decision']}** (`{new['reason']}`) |"
            )
    return [*lines, ""]
