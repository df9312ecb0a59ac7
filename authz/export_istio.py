"""`mandate export istio`: the Istio AuthorizationPolicies a policy set implies, as plain YAML.

Two layers, both derived from the mission profiles:

- **CUSTOM** policies send every request to a governed workload through Mandate (the
  extension provider): by workload `selector` for sidecars, by `targetRefs` to the Service
  for ambient waypoints, and at the egress gateway (or the ServiceEntry) for egress targets.
- **ALLOW** policies by SPIFFE principal draw the same call graph at L4: a workload may be
  reached only by the profiles whose rules name it (`mcp`, `agents` respecting the callee's
  `acceptFrom`, `http`, `egress`), so a caller that bypasses the L7 hop, or that no profile
  lets near the target, is refused by the proxy or ztunnel before Mandate is even asked.
  Grants do not add edges: a delegate acts with its own connection, under its own rules.
  Dry-run profiles may reach every exported target (Mandate lets their calls through, so
  the graph must not refuse them either).

The response path (Mandate filtering MCP list answers, SPEC §9) has no Istio API: an
`EnvoyFilter` per MCP workload (context SIDECAR_INBOUND) and at the egress gateway (context
GATEWAY) inserts, before the router, the filter `mandate export envoy` prints after ext_authz,
pointed at Mandate's service cluster. Waypoints take no EnvoyFilter (Istio refuses them), so in
ambient mode lists are not filtered; a note says so.

In ambient mode the destination's ztunnel sees the waypoint's identity, not the caller's.
So the graph is enforced at the waypoint (ALLOW with targetRefs, next to the CUSTOM one)
and the workload's ztunnel admits only its waypoint: a caller that dials the pod directly,
skipping the waypoint and so Mandate, is refused at L4.

The output is stable (same input, same bytes): documents sorted by namespace, then name;
keys in a fixed order; lists sorted.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authz.check.protocols.paths import host_key
from authz.export_envoy import add_envoy_parser, response_path, run_export_envoy
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from authz.policy.loader import PolicyLoadError, load_directory
from authz.policy.model import MissionProfile, Target

SELECTOR_ANNOTATION = "mandate.dev/istio-selector"  # "app=github-mcp,version=v1": the workload's pod labels
MANAGED_BY = {"app.kubernetes.io/managed-by": "mandate-export"}
_SERVICE_HOST = re.compile(
    r"^(?P<service>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(\..+)?$"
)
_ISTIO_PRINCIPAL = re.compile(r"^spiffe://(?P<td>[^/]+)/ns/(?P<ns>[^/]+)/sa/(?P<sa>[^/]+)$")
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_HCM = "envoy.filters.network.http_connection_manager"


@dataclass(frozen=True)
class ExportOptions:
    provider: str = "mandate"
    namespaces: frozenset[str] = frozenset()  # empty: every namespace
    dataplane: str = "sidecar"  # sidecar | ambient
    selector_label: str = "app"  # default selector: {<label>: <service account>}
    waypoint: str = "waypoint"  # ambient: the waypoint's service account, in the workload's namespace
    egress_namespace: str = "istio-system"  # where the egress gateway (or egress ServiceEntries) live
    egress_selector: tuple[tuple[str, str], ...] = (("istio", "egressgateway"),)
    service: str = "mandate.mandate-system.svc.cluster.local"  # the extension provider's service and port,
    port: int = 9191  # whose Istio cluster the response path's ext_proc calls


@dataclass
class Workload:
    """Pods that run as one SPIFFE principal (or every service account of a namespace)."""

    trust_domain: str
    namespace: str
    selector: tuple[tuple[str, str], ...]  # empty: the whole namespace (a .../sa/* principal)


@dataclass
class Governed:
    """A destination Mandate decides for: an explicit Target, or a profile reached as an agent."""

    name: str
    kind: str  # mcp | http | egress | agent
    workloads: list[Workload] = field(default_factory=list)
    services: list[tuple[str, str]] = field(default_factory=list)  # (namespace, Service name)
    external_hosts: list[str] = field(default_factory=list)
    callers: set[str] = field(default_factory=set)  # profile names


def export_istio(directory: str | Path, options: ExportOptions | None = None) -> str:
    """The YAML text; raises PolicyLoadError for an invalid set (nothing half-exported)."""
    options = options or ExportOptions()
    if options.dataplane not in ("sidecar", "ambient"):
        raise ValueError(f"dataplane must be sidecar or ambient, not {options.dataplane!r}")
    policy = compile_directory(directory)
    documents = [sourced.document for sourced in load_directory(directory)]
    targets = {d.metadata.name: d for d in documents if isinstance(d, Target)}
    profiles = {d.metadata.name: d for d in documents if isinstance(d, MissionProfile)}
    notes: list[str] = []
    governed = _governed(policy, targets, profiles, notes)
    principals = {
        name: sorted(_istio_principal(p) for p in profile.spec.principals) for name, profile in profiles.items()
    }
    objects = (_sidecar if options.dataplane == "sidecar" else _ambient)(governed, principals, options, notes)
    if options.namespaces:
        objects = [item for item in objects if item["metadata"]["namespace"] in options.namespaces]
    objects.sort(key=lambda item: (item["metadata"]["namespace"], item["kind"], item["metadata"]["name"]))
    names = [(item["metadata"]["namespace"], item["kind"], item["metadata"]["name"]) for item in objects]
    assert len(names) == len(set(names)), "export produced two policies with one name"
    return _render(objects, sorted(set(notes)), policy.version, options)


# --- the call graph ---------------------------------------------------------------------------


def _governed(
    policy: PolicySet, targets: dict[str, Target], profiles: dict[str, MissionProfile], notes: list[str]
) -> dict[str, Governed]:
    governed: dict[str, Governed] = {}
    for name, target in targets.items():
        governed[name] = _destination(
            name, target.spec.kind, target.spec.principals, target.spec.hosts, target.metadata.annotations, notes
        )
    called_agents = {rule.agent for profile in profiles.values() for rule in profile.spec.agents}
    for name, profile in profiles.items():
        if name in called_agents:
            governed[name] = _destination(
                name, "agent", profile.spec.principals, profile.spec.hosts, profile.metadata.annotations, notes
            )
        else:
            notes.append(f"profile {name!r} is not named in any `agents` rule: its inbound traffic is not exported")
    egress_by_host = {
        host_key(host): name
        for name, target in targets.items()
        if target.spec.kind == "egress"
        for host in target.spec.hosts
    }
    for caller, profile in profiles.items():
        spec = profile.spec
        reached = {rule.server for rule in spec.mcp} | {rule.target for rule in spec.http}
        reached |= {egress_by_host[host_key(rule.host)] for rule in spec.egress}
        reached |= {rule.agent for rule in spec.agents}
        for name in reached:
            if _accepts(policy, name, caller):
                governed[name].callers.add(caller)
    for caller, compiled in policy.profiles.items():
        if compiled.dry_run:  # Mandate lets a dry-run profile's calls through: so must the graph
            for destination in governed.values():
                destination.callers.add(caller)
    return governed


def _accepts(policy: PolicySet, target: str, caller: str) -> bool:
    """The callee's `acceptFrom`, when the target's workload is a hop (SPEC §5)."""
    workload = policy.targets[target].workload
    return workload is None or workload.accept_from is None or caller in workload.accept_from


def _destination(
    name: str, kind: str, principals: Iterable[str], hosts: Iterable[str], annotations: dict[str, str], notes: list[str]
) -> Governed:
    destination = Governed(name, kind)
    selector = _annotated_selector(annotations, name, notes)
    for principal in principals:
        match = _ISTIO_PRINCIPAL.match(principal)
        if match is None:
            notes.append(
                f"{name}: principal {principal!r} is not Istio's spiffe://<td>/ns/<ns>/sa/<sa>: no workload policy "
                f"for it"
            )
            continue
        account = match["sa"]
        chosen: tuple[tuple[str, str], ...] = () if account == "*" else selector or (("", account),)
        destination.workloads.append(Workload(match["td"], match["ns"], chosen))
    for host in hosts:
        key = host_key(host)
        service = _SERVICE_HOST.match(key)
        if service is not None:
            destination.services.append((service["namespace"], service["service"]))
        else:
            destination.external_hosts.append(key)
    return destination


def _annotated_selector(annotations: dict[str, str], name: str, notes: list[str]) -> tuple[tuple[str, str], ...]:
    text = annotations.get(SELECTOR_ANNOTATION, "").strip()
    if not text:
        return ()
    pairs = []
    for part in text.split(","):
        key, equals, value = part.strip().partition("=")
        if not equals or not key.strip():
            notes.append(f"{name}: annotation {SELECTOR_ANNOTATION}={text!r} is not key=value[,key=value]: ignored")
            return ()
        pairs.append((key.strip(), value.strip()))
    return tuple(sorted(pairs))


def _istio_principal(spiffe_id: str) -> str:
    """Istio's `principals` are SPIFFE IDs without the scheme; `.../sa/*` is a prefix match."""
    return spiffe_id.removeprefix("spiffe://")


def _callers(destination: Governed, principals: dict[str, list[str]]) -> list[str]:
    return sorted({principal for caller in destination.callers for principal in principals.get(caller, [])})


# --- sidecars -----------------------------------------------------------------------------------


def _sidecar(
    governed: dict[str, Governed], principals: dict[str, list[str]], options: ExportOptions, notes: list[str]
) -> list[dict[str, Any]]:
    """Per workload: CUSTOM (its sidecar asks Mandate) and ALLOW (only the graph's callers)."""
    by_workload: dict[tuple[str, tuple[tuple[str, str], ...]], list[Governed]] = {}
    for destination in governed.values():
        if destination.kind == "egress":
            continue
        if not destination.workloads:
            notes.append(f"{destination.name}: no Istio principal, so no sidecar to attach to")
        for workload in destination.workloads:
            by_workload.setdefault((workload.namespace, workload.selector), []).append(destination)
    objects = []
    for (namespace, selector), destinations in by_workload.items():
        # An explicit Target wins over a profile claiming the same workload (SPEC §4).
        destinations = sorted(destinations, key=lambda d: (d.kind == "agent", d.name))
        primary = destinations[0].name
        names = ",".join(sorted(d.name for d in destinations))
        labels = _selector_labels(selector, options)
        attach = {"selector": {"matchLabels": labels}} if labels else {}
        callers = sorted({p for d in destinations for p in _callers(d, principals)})
        objects.append(
            _policy(
                f"mandate-{primary}",
                namespace,
                names,
                {**attach, "action": "CUSTOM", "provider": {"name": options.provider}, "rules": [{}]},
            )
        )
        objects.append(
            _policy(
                f"mandate-callers-{primary}", namespace, names, {**attach, "action": "ALLOW", **_from(callers)}, callers
            )
        )
        if any(d.kind == "mcp" for d in destinations):
            objects.append(
                _list_filter(f"mandate-lists-{primary}", namespace, names, labels, "SIDECAR_INBOUND", options)
            )
    gateway = _egress_gateway(governed, principals, options)
    if any(d.kind == "mcp" and d.external_hosts for d in governed.values()):
        selector = dict(options.egress_selector)
        objects.append(
            _list_filter("mandate-lists-gateway", options.egress_namespace, "egress", selector, "GATEWAY", options)
        )
    return objects + gateway


def _selector_labels(selector: tuple[tuple[str, str], ...], options: ExportOptions) -> dict[str, str]:
    return {(key or options.selector_label): value for key, value in selector}


def _egress_gateway(
    governed: dict[str, Governed], principals: dict[str, list[str]], options: ExportOptions
) -> list[dict[str, Any]]:
    objects = []
    attach = {"selector": {"matchLabels": dict(options.egress_selector)}}
    for destination in governed.values():
        if destination.kind not in ("egress", "mcp") or not destination.external_hosts:
            continue  # an MCP server outside the mesh is reached through the gateway too
        hosts = sorted({pattern for host in destination.external_hosts for pattern in (host, f"{host}:*")})
        to = [{"operation": {"hosts": hosts}}]
        callers = _callers(destination, principals)
        objects.append(
            _policy(
                f"mandate-{destination.name}",
                options.egress_namespace,
                destination.name,
                {**attach, "action": "CUSTOM", "provider": {"name": options.provider}, "rules": [{"to": to}]},
            )
        )
        rules = [{"from": [{"source": {"principals": callers}}], "to": to}] if callers else []
        objects.append(
            _policy(
                f"mandate-callers-{destination.name}",
                options.egress_namespace,
                destination.name,
                {**attach, "action": "ALLOW", **({"rules": rules} if rules else {})},
                callers,
            )
        )
    return objects


# --- ambient ------------------------------------------------------------------------------------


def _ambient(
    governed: dict[str, Governed], principals: dict[str, list[str]], options: ExportOptions, notes: list[str]
) -> list[dict[str, Any]]:
    """Per Service: CUSTOM and the graph's ALLOW at its waypoint (targetRefs). Per workload:
    ALLOW from the waypoint only, at ztunnel, so skipping the waypoint is refused."""
    objects = []
    if any(destination.kind == "mcp" for destination in governed.values()):
        notes.append(
            "ambient: waypoints take no EnvoyFilter, so MCP list answers are not filtered behind a waypoint "
            "(every call is still decided); see docs/istio.md"
        )
    ztunnel: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Workload, list[str]]] = {}
    for destination in governed.values():
        callers = _callers(destination, principals)
        if destination.kind == "egress":
            if destination.external_hosts:
                refs = [{"kind": "ServiceEntry", "group": "networking.istio.io", "name": destination.name}]
                objects.extend(_waypoint_pair(destination.name, options.egress_namespace, refs, callers, options))
            continue
        if not destination.services:
            notes.append(
                f"{destination.name}: no <service>.<namespace>.svc host; behind a waypoint Mandate classifies by "
                ":authority (SPEC §4), so add the Service's host to its hosts"
            )
        namespaces = sorted({namespace for namespace, _ in destination.services})
        for namespace in namespaces:
            refs = [
                {"kind": "Service", "group": "", "name": service}
                for ns, service in sorted(set(destination.services))
                if ns == namespace
            ]
            objects.extend(_waypoint_pair(destination.name, namespace, refs, callers, options))
        for workload in destination.workloads:
            key = (workload.namespace, workload.selector)
            ztunnel.setdefault(key, (workload, []))[1].append(destination.name)
    for (namespace, selector), (workload, names) in ztunnel.items():
        labels = _selector_labels(selector, options)
        attach = {"selector": {"matchLabels": labels}} if labels else {}
        waypoint = f"{workload.trust_domain}/ns/{namespace}/sa/{options.waypoint}"
        primary = min(names)
        objects.append(
            _policy(
                f"mandate-waypoint-only-{primary}",
                namespace,
                ",".join(sorted(names)),
                {**attach, "action": "ALLOW", **_from([waypoint])},
                [waypoint],
            )
        )
    return objects


def _waypoint_pair(
    name: str, namespace: str, refs: list[dict[str, str]], callers: list[str], options: ExportOptions
) -> list[dict[str, Any]]:
    return [
        _policy(
            f"mandate-{name}",
            namespace,
            name,
            {"targetRefs": refs, "action": "CUSTOM", "provider": {"name": options.provider}, "rules": [{}]},
        ),
        _policy(
            f"mandate-callers-{name}",
            namespace,
            name,
            {"targetRefs": refs, "action": "ALLOW", **_from(callers)},
            callers,
        ),
    ]


# --- documents ----------------------------------------------------------------------------------


def _list_filter(
    name: str, namespace: str, governs: str, labels: dict[str, str], context: str, options: ExportOptions
) -> dict[str, Any]:
    """The response path on a sidecar's inbound listener or a gateway: Mandate's list filter,
    before the router, calling Mandate through Istio's cluster for the extension provider."""
    cluster = f"outbound|{options.port}||{options.service}"
    listener = {"filterChain": {"filter": {"name": _HCM, "subFilter": {"name": "envoy.filters.http.router"}}}}
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": _dns_name(name),
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {"mandate.dev/governs": governs},
        },
        "spec": {
            **({"workloadSelector": {"labels": labels}} if labels else {}),
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {"context": context, "listener": listener},
                    "patch": {"operation": "INSERT_BEFORE", "value": response_path(cluster)},
                }
            ],
        },
    }


def _from(principals: list[str]) -> dict[str, Any]:
    """ALLOW rules admitting `principals`; none at all: the policy allows nothing (default deny)."""
    return {"rules": [{"from": [{"source": {"principals": principals}}]}]} if principals else {}


def _policy(
    name: str, namespace: str, governs: str, spec: dict[str, Any], callers: list[str] | None = None
) -> dict[str, Any]:
    annotations = {"mandate.dev/governs": governs}
    if callers is not None and not callers:
        annotations["mandate.dev/note"] = "no profile may call this: the policy allows nothing"
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": _dns_name(name),
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "annotations": annotations,
        },
        "spec": spec,
    }


def _dns_name(name: str) -> str:
    """A valid, stable Kubernetes name: lowercase, [a-z0-9-], at most 63; changed names get a hash."""
    cleaned = _DNS_LABEL.sub("-", name.lower()).strip("-")
    if cleaned == name and len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{cleaned[:54].rstrip('-')}-{digest}"


def _render(objects: list[dict[str, Any]], notes: list[str], version: str, options: ExportOptions) -> str:
    header = [
        "# Generated by `mandate export istio` from policy version " + version + ": do not edit, regenerate.",
        f"# dataplane: {options.dataplane}; provider: {options.provider}"
        + (f"; namespaces: {', '.join(sorted(options.namespaces))}" if options.namespaces else ""),
    ]
    header += [f"# note: {note}" for note in notes]
    body = "---\n".join(yaml.safe_dump(item, sort_keys=False, default_flow_style=False, width=1000) for item in objects)
    return "\n".join(header) + "\n" + ("---\n" + body if body else "")


# --- CLI ------------------------------------------------------------------------------------------


def add_export_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = commands.add_parser("export", help="generate mesh configuration from the policy set")
    kinds = export.add_subparsers(dest="export_kind", required=True)
    istio = kinds.add_parser(
        "istio", help="Istio AuthorizationPolicies: CUSTOM through Mandate, and the L4 ALLOW call graph"
    )
    istio.add_argument("--policies", default="policies", help="policy directory")
    istio.add_argument("--provider", default="mandate", help="meshConfig.extensionProviders[].name (default: mandate)")
    istio.add_argument(
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        metavar="NS",
        help="only policies in this namespace (repeatable; default: all)",
    )
    istio.add_argument(
        "--dataplane",
        choices=("sidecar", "ambient"),
        default="sidecar",
        help="sidecar: selector policies; ambient: targetRefs at waypoints, waypoint-only at ztunnel",
    )
    istio.add_argument(
        "--selector-label",
        default="app",
        help=f"pod label whose value is the service account, unless a Target or profile sets {SELECTOR_ANNOTATION}",
    )
    istio.add_argument(
        "--waypoint", default="waypoint", help="ambient: the waypoint's service account in each namespace"
    )
    istio.add_argument(
        "--egress-namespace", default="istio-system", help="namespace of the egress gateway / egress ServiceEntries"
    )
    istio.add_argument(
        "--mandate-service",
        default="mandate.mandate-system.svc.cluster.local",
        help="the extension provider's service: the response path's ext_proc calls its Istio cluster",
    )
    istio.add_argument("--mandate-port", type=int, default=9191, help="and its gRPC port (default: 9191)")
    istio.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    add_envoy_parser(kinds)


def run_export(args: argparse.Namespace) -> int:
    if args.export_kind == "envoy":
        return run_export_envoy(args)
    options = ExportOptions(
        provider=args.provider,
        namespaces=frozenset(args.namespaces),
        dataplane=args.dataplane,
        selector_label=args.selector_label,
        waypoint=args.waypoint,
        egress_namespace=args.egress_namespace,
        service=args.mandate_service,
        port=args.mandate_port,
    )
    try:
        text = export_istio(args.policies, options)
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error(s): nothing exported", file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0
