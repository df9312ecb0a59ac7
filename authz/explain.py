"""`mandate explain`: run one described request through the same pipeline `serve` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from .pipeline import Authorizer
from .policy.compiler import PolicySet
from .request import AuthzInput
from .verdict import Decision

REQUEST_FIELDS = {"source", "destination", "method", "host", "path", "headers", "body", "istioAuthnPrincipal"}


class RequestFileError(ValueError):
    pass


def read_request_file(path: str) -> AuthzInput:
    """A described request (YAML or JSON): source, destination, method, host, path, headers, body."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RequestFileError(f"{path}: cannot read request: {exc}") from None
    if not isinstance(data, dict):
        raise RequestFileError(f"{path}: a request file must be a mapping")
    unknown = sorted(set(data) - REQUEST_FIELDS)
    if unknown:
        raise RequestFileError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(REQUEST_FIELDS))}")
    headers = {str(k).lower(): str(v) for k, v in (data.get("headers") or {}).items()}
    body = data.get("body", b"")
    if isinstance(body, (dict, list)):
        body = orjson.dumps(body)
        headers.setdefault("content-type", "application/json")
    elif isinstance(body, str):
        body = body.encode("utf-8")
    return AuthzInput(
        method=str(data.get("method", "POST")).upper(),
        path=str(data.get("path", "/")),
        host=str(data.get("host", "")),
        headers=headers,
        body=body,
        source_principal=str(data.get("source", "")),
        istio_authn_principal=str(data.get("istioAuthnPrincipal", "")),
        destination_principal=str(data.get("destination", "")),
    )


def explain(policy: PolicySet, request: AuthzInput) -> dict[str, Any]:
    decision = Authorizer(policy).decide(request)
    return _report(decision, policy)


def _report(decision: Decision, policy: PolicySet) -> dict[str, Any]:
    verdict = decision.verdict
    profile = policy.profiles.get(decision.profile)
    return {
        "decision": decision.result,
        "status": verdict.status,
        "reason": verdict.reason,
        "message": verdict.message,
        "caller": decision.caller,
        "profile": decision.profile,
        "mission": profile.mission if profile else "",
        "target": decision.target,
        "protocol": decision.protocol,
        "rule": verdict.rule,
        "refused_by_hop": verdict.hop,
        "chain": list(decision.hops),
        "action": decision.details,
        "policy_version": policy.version,
    }


def render_text(report: dict[str, Any]) -> str:
    lines = [f"decision: {report['decision'].upper()} ({report['status']}, {report['reason']})"]
    if report["message"]:
        lines.append(f"why:      {report['message']}")
    for key in ("caller", "profile", "mission", "target", "protocol", "rule", "refused_by_hop"):
        if report[key]:
            lines.append(f"{key + ':':9} {report[key]}")
    if report["chain"]:
        lines.append("chain:    " + " -> ".join(report["chain"]))
    for key, value in report["action"].items():
        lines.append(f"  {key} = {value}")
    return "\n".join(lines)
