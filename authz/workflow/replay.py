"""Recorded requests for `mandate diff --requests FILE`: which decisions a policy change changes.

Two kinds of record are read. Test cases (`mandate test`'s YAML files, or a folder of them) are
described requests, decided exactly. Audit lines (`mandate serve`'s JSON lines on stdout) never
hold bodies or tool arguments, so each is rebuilt as the request it names: the caller, a host of
the target in the old set, the MCP method and tool, resource or prompt, the A2A method, the path
and the chain's hops; egress and http lines as a GET (the audit line has no HTTP method). A `when`
that reads arguments or headers then sees none, as the line does not say them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from authz.explain import DescribedRequest, describe, explain
from authz.policy.compiled import PolicySet
from authz.workflow.cases import CaseFileError, case_files, described, read_cases


def recorded_requests(path: Path, old: PolicySet) -> list[tuple[str, DescribedRequest]]:
    """(label, request) for every record in `path`: test cases, or audit lines."""
    if path.is_dir() or path.suffix in (".yaml", ".yml"):
        files = case_files(path) if path.is_dir() else [path]
        return [(f"{case.where}: {case.name}", described(case)) for file in files for case in read_cases(file)]
    hosts = _hosts(old)
    found = []
    for number, line in enumerate(_lines(path), start=1):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # serve's stdout holds only audit lines, but a log may be mixed in
        if isinstance(event, dict) and event.get("event") == "decision" and event.get("caller"):
            request = _from_audit(event, hosts)
            if request is not None:
                found.append((f"{path}:{number}: {_summary(event)}", describe(request, f"{path}:{number}")))
    return found


def _lines(path: Path) -> Iterator[str]:
    try:
        yield from path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFileError(f"{path}:0: cannot read recorded requests: {exc}") from None


def _hosts(policy: PolicySet) -> dict[str, str]:
    """A host (or, failing one, a principal) for each target, to address a rebuilt request."""
    hosts: dict[str, str] = {}
    for host, target in policy.targets_by_host.items():
        hosts.setdefault(target.name, host)
    for host, target in policy.egress_hosts.items():
        hosts.setdefault(target.name, host)
    return hosts


def _from_audit(event: dict[str, Any], hosts: dict[str, str]) -> dict[str, Any] | None:
    target, protocol = event.get("target"), event.get("protocol")
    if not target or target not in hosts:
        return None
    request: dict[str, Any] = {"source": event["caller"], "host": hosts[target], "path": event.get("url.path") or "/"}
    hops = event.get("hops") or []
    if len(hops) > 1:
        request["chain"] = hops
    if protocol == "mcp" and event.get("mcp.method.name"):
        params = {}
        for key, param in (("gen_ai.tool.name", "name"), ("gen_ai.prompt.name", "name"), ("mcp.resource.uri", "uri")):
            if event.get(key):
                params[param] = event[key]
        if "name" in params and event["mcp.method.name"] == "tools/call":
            params["arguments"] = {}
        request["body"] = {"jsonrpc": "2.0", "id": 1, "method": event["mcp.method.name"], "params": params}
    elif protocol == "a2a" and event.get("a2a.method"):
        request["headers"] = {"a2a-version": "1.0"}
        request["body"] = {"jsonrpc": "2.0", "id": 1, "method": event["a2a.method"], "params": {}}
    else:
        request["method"] = "GET"
    return request


def _summary(event: dict[str, Any]) -> str:
    action = event.get("gen_ai.tool.name") or event.get("a2a.method") or event.get("url.path") or ""
    return f"{event.get('profile') or event['caller']} -> {event['target']} {action}".strip()


def changed_decisions(
    requests: list[tuple[str, DescribedRequest]], old: PolicySet, new: PolicySet
) -> list[dict[str, Any]]:
    """The requests whose decision or reason differs between the two sets, each decided by explain."""
    changed = []
    for label, request in requests:
        before = explain(old, _copy(request))
        after = explain(new, _copy(request))
        if (before["decision"], before["reason"]) != (after["decision"], after["reason"]):
            changed.append(
                {
                    "request": label,
                    "old": {"decision": before["decision"], "reason": before["reason"], "rule": before["rule"]},
                    "new": {"decision": after["decision"], "reason": after["reason"], "rule": after["rule"]},
                }
            )
    return changed


def _copy(request: DescribedRequest) -> DescribedRequest:
    """explain sets the chain header on the request it is given: each set decides a fresh copy."""
    return DescribedRequest(replace(request.input, headers=dict(request.input.headers)), request.chain)
