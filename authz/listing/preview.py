"""What a caller's list would contain, for `mandate explain`: per scope along its chain, the
names that scope's rules give for the server (an entry stays only if every scope names it),
and, given the server's answer, what the response path keeps and removes from it (the same
`EntryRules.filter` `mandate serve` runs)."""

from __future__ import annotations

from typing import Any

from authz.check.delegation import Chain, scopes_along
from authz.listing.answers import ListRequests, id_key
from authz.listing.entries import LISTS, EntryRules, Unreadable
from authz.policy.compiled import PolicySet

_RULE_FIELD = {"tool": "tools", "prompt": "prompts", "resource": "resources"}


def preview(policy: PolicySet, hops: tuple[str, ...], server: str, body: bytes, answer: Any) -> list[dict[str, Any]]:
    """One report per list request in `body`; `answer`, the server's parsed JSON-RPC answer (or
    None), shows what would be kept and removed."""
    chain = Chain("", hops, scopes_along(policy, hops, "explain"))
    rules = EntryRules(policy, chain, server)
    asked = ListRequests(body).lists if body.strip() else {}  # a resumed stream's GET asks for nothing
    reports = {key: _patterns(chain, server, method, rules.dry_run) for key, method in asked.items()}
    for message in answer if isinstance(answer, list) else [] if answer is None else [answer]:
        key = id_key(message.get("id")) if isinstance(message, dict) else None
        report = reports.get(key) if key is not None else None
        if report is None or "result" not in message:
            continue
        kind = LISTS[report["method"]]
        try:
            kept, _ = rules.filter(report["method"], message["result"])
        except Unreadable as exc:
            report["answer"] = f"refused: {exc}"
            continue
        stays = {id(entry) for entry in kept[kind.key]}
        report["kept"] = [entry[kind.field] for entry in kept[kind.key]]
        report["removed"] = [e[kind.field] for e in message["result"][kind.key] if id(e) not in stays]
    return list(reports.values())


def _patterns(chain: Chain, server: str, method: str, dry_run: bool) -> dict[str, Any]:
    """The names each scope's rules for `server` give the entries of `method`'s list."""
    kind = LISTS[method]
    scopes = []
    for position, hop in enumerate(chain.scopes):
        names = [p for rule in hop.scope.mcp.get(server, ()) for p in getattr(rule, _RULE_FIELD[kind.kind]).patterns]
        given = "its own mission" if position == 0 else f"what it gave {chain.hops[len(chain.hops) - position]!r}"
        scopes.append({"hop": hop.given_by, "scope": given, "names": names})
    return {"method": method, "entries": kind.key, "by": kind.field, "scopes": scopes, "dry_run": dry_run}
