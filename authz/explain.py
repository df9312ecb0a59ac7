"""`mandate explain`: run one described request through the same pipeline `serve` uses.

A described request may name a delegation chain (`chain: [root, ..., caller]`, profile
names); explain writes that chain to a private in-process store and sends its token, so the
chained decision takes exactly the path a real one does, and then shows what each hop's
scope says on its own. A described `user` (claims) is that chain's user, or, without a chain,
claims Envoy's jwt_authn verified (SPEC §10).

An allowed MCP list request (`tools/list`, ...) also shows what the caller's list would
contain: the names each scope gives, and, with the server's answer under `answer`, the
entries the response path keeps and removes (authz/listing/preview.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from google.protobuf.struct_pb2 import Struct

from authz.chains.memory import MemoryChainStore
from authz.chains.store import Hop
from authz.chains.tokens import ChainKeys
from authz.check.decision import Decision
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer, HopTrace
from authz.check.request import AuthzInput
from authz.check.response import request_facts
from authz.listing.preview import preview
from authz.policy.compiled import PolicySet
from authz.users.user import chain_user

REQUEST_FIELDS = {
    "source",
    "destination",
    "method",
    "host",
    "path",
    "headers",
    "body",
    "istioAuthnPrincipal",
    "chain",
    "answer",
    "user",
}


class RequestFileError(ValueError):
    pass


@dataclass(frozen=True)
class DescribedRequest:
    input: AuthzInput
    chain: tuple[str, ...]  # profile names the request was delegated through, root first; () for none
    answer: Any = None  # a list request's answer from the server (parsed JSON-RPC), to show it filtered
    user: dict[str, Any] | None = None  # the claims of the user it acts for (SPEC §10): iss, sub, groups, ...


def read_request_file(path: str) -> DescribedRequest:
    """A described request (YAML or JSON): source, destination, method, host, path, headers, body, chain."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestFileError(f"{path}: cannot read request: {exc}") from None
    return parse_request(text, path)


def parse_request(text: str, path: str) -> DescribedRequest:
    """A described request from its text (the admin API's Explain gets the file's content)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RequestFileError(f"{path}: cannot read request: {exc}") from None
    return describe(data, path)


def describe(data: object, path: str) -> DescribedRequest:
    """A described request from its parsed fields (`mandate test` cases hold them under `request`)."""
    if not isinstance(data, dict):
        raise RequestFileError(f"{path}: a request file must be a mapping")
    unknown = sorted(set(data) - REQUEST_FIELDS)
    if unknown:
        raise RequestFileError(
            f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(REQUEST_FIELDS))}"
        )
    headers = {str(k).lower(): str(v) for k, v in (data.get("headers") or {}).items()}
    body = data.get("body", b"")
    if isinstance(body, (dict, list)):
        body = orjson.dumps(body)
        headers.setdefault("content-type", "application/json")
    elif isinstance(body, str):
        body = body.encode("utf-8")
    chain = data.get("chain") or []
    if not isinstance(chain, list) or not all(isinstance(hop, str) and hop for hop in chain):
        raise RequestFileError(f"{path}: chain must be a list of profile names, root first, the caller last")
    user = data.get("user")
    if user is not None and not (isinstance(user, dict) and isinstance(user.get("iss"), str) and user.get("sub")):
        raise RequestFileError(f"{path}: user must be a mapping of claims with iss and sub (and groups, ...)")
    request = AuthzInput(
        method=str(data.get("method", "POST")).upper(),
        path=str(data.get("path", "/")),
        host=str(data.get("host", "")),
        headers=headers,
        body=body,
        source_principal=str(data.get("source", "")),
        istio_authn_principal=str(data.get("istioAuthnPrincipal", "")),
        destination_principal=str(data.get("destination", "")),
    )
    return DescribedRequest(request, tuple(chain), data.get("answer"), user)


def explain(policy: PolicySet, described: DescribedRequest) -> dict[str, Any]:
    store = MemoryChainStore()
    chains = ChainStep(store, ChainKeys.ephemeral())
    request = described.input
    user = _verified_user(policy, described.user)
    if described.chain:
        now = time.time()
        hops = tuple(Hop(name, "") for name in described.chain)
        root = chain_user(user["iss"], str(user["sub"]), orjson.dumps(user).decode()) if user else None
        request.headers[policy.settings.chain_header] = chains.issue(
            hops, (), now, now + policy.settings.chain_ttl_seconds, root
        ).token
    elif user:
        claims = Struct()
        claims.update({user["iss"]: user})
        request.jwt_authn = claims.SerializeToString()  # as if Envoy's jwt_authn had verified them
    trace: list[HopTrace] = []
    decision = Authorizer(policy, chains=chains).decide(request, trace=trace)
    report = _report(decision, policy)
    report["hops"] = [_hop_report(step, policy) for step in trace]
    minted = store.get(decision.minted_chain_id) if decision.minted_chain_id else None
    report["minted_chain"] = list(minted.profiles) if minted else []
    report["lists"] = []
    if decision.filter_lists and decision.enforced_allow:
        report["lists"] = preview(policy, decision.hops, decision.target, request.body, described.answer)
    return report


def _verified_user(policy: PolicySet, user: dict[str, Any] | None) -> dict[str, Any] | None:
    """A described user's claims as a verified token would carry them: with its issuer's first
    audience when they name none."""
    if user is None:
        return None
    issuer = policy.settings.users.issuers.get(user["iss"]) if policy.settings.users else None
    if issuer is not None and "aud" not in user:
        return {**user, "aud": issuer.audiences[0]}
    return user


def _hop_report(step: HopTrace, policy: PolicySet) -> dict[str, Any]:
    if step.delegate is None:
        scope = "its own mission (the caller)"
    elif policy.profiles[step.given_by].delegates.get(step.delegate) is policy.profiles[step.given_by].scope:
        scope = f"its own mission, passed to {step.delegate!r} (no grant)"
    else:
        scope = f"its grant to {step.delegate!r}"
    verdict = step.verdict
    return {
        "hop": step.given_by,
        "scope": scope,
        "allows": verdict.allowed,
        "rule": verdict.rule,
        "reason": verdict.reason,
    }


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
        "user": {"sub": decision.user.sub, "iss": decision.user.iss} if decision.user else None,
        "action": decision.details,
        "request_headers": _request_headers(decision),
        "policy_version": policy.version,
    }


def _request_headers(decision: Decision) -> dict[str, Any]:
    """What letting the request through does to its headers, each secret shown as `{secret:PATH}`."""
    shaping = decision.request_headers
    if shaping is None or not decision.enforced_allow:
        return {"set": {}, "remove": []}
    return shaping.shown(request_facts(decision))


def render_text(report: dict[str, Any]) -> str:
    lines = [f"decision: {report['decision'].upper()} ({report['status']}, {report['reason']})"]
    if report["message"]:
        lines.append(f"why:      {report['message']}")
    for key in ("caller", "profile", "mission", "target", "protocol", "rule", "refused_by_hop"):
        if report[key]:
            lines.append(f"{key + ':':9} {report[key]}")
    if report["chain"]:
        lines.append("chain:    " + " -> ".join(report["chain"]))
    if report.get("user"):
        lines.append(f"user:     {report['user']['sub']} ({report['user']['iss']})")
    if len(report["hops"]) > 1:
        lines.append("scopes along the chain (all must allow):")
        for hop in report["hops"]:
            verdict = f"allows ({hop['rule']})" if hop["allows"] else f"REFUSES ({hop['reason']})"
            lines.append(f"  {hop['hop']}: {hop['scope']}: {verdict}")
    if report["minted_chain"]:
        lines.append("mints:    " + " -> ".join(report["minted_chain"]) + " (the callee receives this chain)")
    for key, value in report["action"].items():
        lines.append(f"  {key} = {value}")
    shaping = report.get("request_headers") or {}
    for name, value in (shaping.get("set") or {}).items():
        lines.append(f"sets:     {name}: {value}")
    if shaping.get("remove"):
        lines.append("removes:  " + ", ".join(shaping["remove"]))
    for listed in report.get("lists", []):
        lines.extend(_render_list(listed))
    return "\n".join(lines)


def _render_list(listed: dict[str, Any]) -> list[str]:
    """What a list request's answer would contain, in the words of its entries."""
    lines = [f"{listed['method']} keeps the {listed['entries']} whose {listed['by']} every scope names:"]
    for scope in listed["scopes"]:
        lines.append(f"  {scope['hop']} ({scope['scope']}): {', '.join(scope['names']) or '(none)'}")
    if listed["dry_run"]:
        lines.append("  (dry-run: nothing is removed; what would be is counted in the audit line)")
    if "answer" in listed:
        lines.append(f"  of the server's answer: {listed['answer']}")
    elif "kept" in listed:
        lines.append(f"  of the server's answer, kept:    {', '.join(listed['kept']) or '(none)'}")
        lines.append(f"  of the server's answer, removed: {', '.join(listed['removed']) or '(none)'}")
    return lines
