"""`mandate export istio`: the output parsed back, checked against the profiles it came from,
against Istio's AuthorizationPolicy shape, and for stability (same input, same bytes)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import main
from authz.export_istio import ExportOptions, export_istio
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import EXAMPLES, REPO
from tests.harness.istio import validate_authorization_policy

TRIAGE_NS = "cluster.local/ns/triage/sa/*"  # triage-bot: dry-run, so it may reach every exported target
SUPPORT = "cluster.local/ns/support/sa/support-agent"
BILLING = "cluster.local/ns/billing/sa/billing-agent"
ORCHESTRATOR = "cluster.local/ns/agents/sa/orchestrator"

# The call graph of policies/, written out by hand from the profiles:
#   support-agent: mcp github, agents billing-agent, egress api.github.com, http status-page
#   billing-agent: mcp billing-db (acceptFrom: support-agent, orchestrator)
#   orchestrator:  agents support-agent, billing-agent
#   triage-bot:    mcp github, dry-run (so: everything)
EXPECTED_CALLERS = {
    ("tools", "github"): {SUPPORT, TRIAGE_NS},
    ("billing", "billing-db"): {BILLING, TRIAGE_NS},
    ("billing", "billing-agent"): {SUPPORT, ORCHESTRATOR, TRIAGE_NS},
    ("support", "support-agent"): {ORCHESTRATOR, TRIAGE_NS},
    ("ops", "status-page"): {SUPPORT, TRIAGE_NS},
    ("istio-system", "github-api"): {SUPPORT, TRIAGE_NS},
}
# The workloads, from the Targets' and profiles' principals (default selector: app=<service account>).
EXPECTED_SELECTORS = {
    ("tools", "github"): {"app": "github-mcp"},
    ("billing", "billing-db"): {"app": "billing-db-mcp"},
    ("billing", "billing-agent"): {"app": "billing-agent"},
    ("support", "support-agent"): {"app": "support-agent"},
    ("ops", "status-page"): {"app": "status-page"},
    ("istio-system", "github-api"): {"istio": "egressgateway"},
}


def parse(text: str) -> list[dict[str, Any]]:
    """The AuthorizationPolicies (the response path's EnvoyFilters: test_export_istio_lists.py)."""
    documents = [document for document in yaml.safe_load_all(text) if document and document["kind"] != "EnvoyFilter"]
    for document in documents:
        validate_authorization_policy(document)
    return documents


def index(
    documents: list[dict[str, Any]], action: str, attached: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, target) -> the one policy with `action` (attached by `selector` or `targetRefs`)."""
    found = {}
    for document in documents:
        if document["spec"]["action"] == action and (attached is None or attached in document["spec"]):
            key = (document["metadata"]["namespace"], document["metadata"]["annotations"]["mandate.dev/governs"])
            assert key not in found, key
            found[key] = document
    return found


def allowed_principals(policy: dict[str, Any]) -> set[str]:
    return {
        p
        for rule in policy["spec"].get("rules", [])
        for source in rule.get("from", [])
        for p in source["source"]["principals"]
    }


def test_sidecar_export_matches_the_profiles() -> None:
    documents = parse(export_istio(EXAMPLES))
    custom, allow = index(documents, "CUSTOM"), index(documents, "ALLOW")
    assert set(custom) == set(allow) == set(EXPECTED_CALLERS)
    for key, callers in EXPECTED_CALLERS.items():
        assert allowed_principals(allow[key]) == callers, key
        for policy in (custom[key], allow[key]):
            assert policy["spec"]["selector"]["matchLabels"] == EXPECTED_SELECTORS[key], key
        assert custom[key]["spec"]["provider"] == {"name": "mandate"}
    # The egress gateway: Mandate is asked, and callers admitted, only for the egress Target's hosts.
    for policy in (custom[("istio-system", "github-api")], allow[("istio-system", "github-api")]):
        (rule,) = policy["spec"]["rules"]
        assert rule["to"] == [{"operation": {"hosts": ["api.github.com", "api.github.com:*"]}}]


def test_every_edge_is_a_rule_of_the_callers_profile() -> None:
    """Read back: each admitted principal is a profile that names the target (or is dry-run);
    each profile rule naming an exported target shows up as an admitted principal."""
    policy = compile_directory(EXAMPLES)
    raw = {
        d["metadata"]["name"]: d for path in EXAMPLES.glob("*.yaml") for d in yaml.safe_load_all(path.read_text()) if d
    }
    egress_target = {
        h: name
        for name, d in raw.items()
        if d["kind"] == "Target" and d["spec"]["kind"] == "egress"
        for h in d["spec"]["hosts"]
    }

    def names(profile: dict[str, Any]) -> set[str]:
        spec = profile["spec"]
        return (
            {r["server"] for r in spec.get("mcp", [])}
            | {r["agent"] for r in spec.get("agents", [])}
            | {r["target"] for r in spec.get("http", [])}
            | {egress_target[r["host"]] for r in spec.get("egress", [])}
        )

    allow = index(parse(export_istio(EXAMPLES)), "ALLOW")
    exported = {target for _, target in allow}
    for (_, target), document in allow.items():
        for principal in allowed_principals(document):
            profile = policy.callers.get("spiffe://" + principal.replace("*", "x"))
            assert profile is not None, principal
            assert profile.dry_run or target in names(raw[profile.name]), (principal, target)
            if policy.targets[target].workload is not None and policy.targets[target].workload.accept_from is not None:
                assert profile.dry_run or profile.name in policy.targets[target].workload.accept_from
    for name, document in raw.items():
        if document["kind"] != "MissionProfile":
            continue
        for target in names(document) & exported:
            principals = {p.removeprefix("spiffe://") for p in document["spec"]["principals"]}
            admitted = set().union(*(allowed_principals(d) for (_, t), d in allow.items() if t == target))
            assert principals <= admitted, (name, target)


def test_ambient_export_attaches_to_services_and_admits_only_the_waypoint_at_ztunnel() -> None:
    documents = parse(export_istio(EXAMPLES, ExportOptions(dataplane="ambient")))
    custom = index(documents, "CUSTOM")
    at_waypoint, at_ztunnel = index(documents, "ALLOW", "targetRefs"), index(documents, "ALLOW", "selector")
    assert len(documents) == len(custom) + len(at_waypoint) + len(at_ztunnel)
    assert set(custom) == set(at_waypoint) == set(EXPECTED_CALLERS)
    services = {
        ("tools", "github"): "github-mcp",
        ("billing", "billing-db"): "billing-db-mcp",
        ("billing", "billing-agent"): "billing-agent",
        ("support", "support-agent"): "support-agent",
        ("ops", "status-page"): "status-page",
    }
    for key, callers in EXPECTED_CALLERS.items():
        refs = custom[key]["spec"]["targetRefs"]
        assert refs == at_waypoint[key]["spec"]["targetRefs"]
        if key in services:
            assert refs == [{"kind": "Service", "group": "", "name": services[key]}]
        else:  # egress: the ServiceEntry named after the Target, as in helm/examples/egress-gateway.yaml
            assert refs == [{"kind": "ServiceEntry", "group": "networking.istio.io", "name": "github-api"}]
        assert allowed_principals(at_waypoint[key]) == callers
    assert set(at_ztunnel) == set(services)
    for (namespace, target), document in at_ztunnel.items():
        assert allowed_principals(document) == {f"cluster.local/ns/{namespace}/sa/waypoint"}
        assert document["spec"]["selector"]["matchLabels"] == EXPECTED_SELECTORS[(namespace, target)]
    egress_entries = [
        d
        for d in yaml.safe_load_all((REPO / "helm/examples/egress-gateway.yaml").read_text())
        if d and d["kind"] == "ServiceEntry" and d["metadata"]["namespace"] == "istio-egress"
    ]
    assert [e["metadata"]["name"] for e in egress_entries] == ["github-api"]
    # The default --egress-namespace is istio-system; the ambient example puts it in istio-egress.
    assert not [d for d in documents if d["metadata"]["namespace"] == "istio-egress"]
    moved = parse(export_istio(EXAMPLES, ExportOptions(dataplane="ambient", egress_namespace="istio-egress")))
    assert {
        d["metadata"]["namespace"] for d in moved if d["metadata"]["annotations"]["mandate.dev/governs"] == "github-api"
    } == {"istio-egress"}


def test_same_input_same_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for _ in range(2):
        assert main(["export", "istio", "--policies", str(EXAMPLES)]) == 0
        outputs.append(capsys.readouterr().out.encode())
    assert outputs[0] == outputs[1] == export_istio(EXAMPLES).encode()
    # The same documents in other files and another order: the same policies (only the
    # header's policy version, a hash of the files, differs).
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    documents = [d for path in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    for position, document in enumerate(reversed(documents)):
        (shuffled / f"{position:02d}-{document['metadata']['name']}.yaml").write_text(yaml.safe_dump(document))

    def body(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("# Generated"))

    assert body(export_istio(shuffled)) == body(export_istio(EXAMPLES))
    assert main(["export", "istio", "--policies", str(EXAMPLES), "-o", str(tmp_path / "out.yaml")]) == 0
    assert (tmp_path / "out.yaml").read_bytes() == outputs[0]


def test_namespace_and_provider_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "export",
                "istio",
                "--policies",
                str(EXAMPLES),
                "--namespace",
                "tools",
                "--namespace",
                "ops",
                "--provider",
                "mandate-prod",
            ]
        )
        == 0
    )
    documents = parse(capsys.readouterr().out)
    assert {d["metadata"]["namespace"] for d in documents} == {"tools", "ops"}
    assert {d["spec"]["provider"]["name"] for d in documents if d["spec"]["action"] == "CUSTOM"} == {"mandate-prod"}


def test_an_invalid_set_exports_nothing(write_policies, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_policies(
        bad="""
        apiVersion: mandate.dev/v1alpha1
        kind: MissionProfile
        metadata: {name: a}
        spec:
          principals: [spiffe://cluster.local/ns/a/sa/a]
          mission: m
          mcp: [{server: nowhere, tools: [x]}]
        """
    )
    assert main(["export", "istio", "--policies", str(directory)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "bad.yaml:" in captured.err and "'nowhere' is not a Target" in captured.err


def test_selectors_wildcards_accept_from_and_unreachable_targets(write_policies) -> None:
    directory = write_policies(
        set="""
        apiVersion: mandate.dev/v1alpha1
        kind: Target
        metadata:
          name: Search_MCP
          annotations: {mandate.dev/istio-selector: "app.kubernetes.io/name=search, tier=tools"}
        spec:
          kind: mcp
          principals: [spiffe://cluster.local/ns/tools/sa/search]
          hosts: [search.tools.svc.cluster.local]
        ---
        apiVersion: mandate.dev/v1alpha1
        kind: Target
        metadata: {name: unused}
        spec: {kind: http, principals: [spiffe://cluster.local/ns/tools/sa/unused]}
        ---
        apiVersion: mandate.dev/v1alpha1
        kind: MissionProfile
        metadata: {name: crawlers}
        spec:
          principals: ["spiffe://cluster.local/ns/crawl/sa/*"]
          hosts: [crawlers.crawl.svc.cluster.local]
          mission: m
          mcp: [{server: Search_MCP, tools: [search]}]
          delegation: {acceptFrom: [boss]}
        ---
        apiVersion: mandate.dev/v1alpha1
        kind: MissionProfile
        metadata: {name: boss}
        spec:
          principals: [spiffe://cluster.local/ns/hq/sa/boss]
          mission: m
          agents: [{agent: crawlers}]
        ---
        apiVersion: mandate.dev/v1alpha1
        kind: MissionProfile
        metadata: {name: intern}
        spec:
          principals: [spiffe://cluster.local/ns/hq/sa/intern]
          mission: m
          agents: [{agent: crawlers}]
        """
    )
    text = export_istio(directory)
    documents = parse(text)
    allow, custom = index(documents, "ALLOW"), index(documents, "CUSTOM")
    search = allow[("tools", "Search_MCP")]
    # The annotation picks the pods; the name is made a valid Kubernetes name, stably.
    assert search["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "search", "tier": "tools"}
    assert search["metadata"]["name"].startswith("mandate-callers-search-mcp-")
    assert allowed_principals(search) == {"cluster.local/ns/crawl/sa/*"}
    # A .../sa/* profile governs the whole namespace: no selector. acceptFrom keeps the intern out.
    crawlers = allow[("crawl", "crawlers")]
    assert "selector" not in crawlers["spec"] and "selector" not in custom[("crawl", "crawlers")]["spec"]
    assert allowed_principals(crawlers) == {"cluster.local/ns/hq/sa/boss"}
    # Nobody may call `unused`: its ALLOW policy has no rules, which in Istio allows nothing.
    unused = allow[("tools", "unused")]
    assert "rules" not in unused["spec"] and "allows nothing" in unused["metadata"]["annotations"]["mandate.dev/note"]
    # Profiles nobody calls are said in the header, not silently skipped.
    assert "# note: profile 'boss' is not named in any `agents` rule" in text
    ambient = export_istio(directory, ExportOptions(dataplane="ambient"))
    assert "# note: unused: no <service>.<namespace>.svc host" in ambient


def test_an_explicit_target_wins_over_a_profile_on_the_same_workload(write_policies) -> None:
    """An MCP server with a profile of its own: one CUSTOM and one ALLOW for its pods, named
    after the Target, admitting the callers of both."""
    directory = write_policies(
        set="""
        apiVersion: mandate.dev/v1alpha1
        kind: Target
        metadata: {name: db}
        spec: {kind: mcp, principals: [spiffe://cluster.local/ns/data/sa/db]}
        ---
        apiVersion: mandate.dev/v1alpha1
        kind: MissionProfile
        metadata: {name: db-agent}
        spec:
          principals: [spiffe://cluster.local/ns/data/sa/db]
          mission: m
        ---
        apiVersion: mandate.dev/v1alpha1
        kind: MissionProfile
        metadata: {name: app}
        spec:
          principals: [spiffe://cluster.local/ns/web/sa/app]
          mission: m
          mcp: [{server: db, tools: [q]}]
          agents: [{agent: db-agent}]
        """
    )
    documents = parse(export_istio(directory))
    on_db = [d for d in documents if d["metadata"]["namespace"] == "data"]
    assert sorted(d["metadata"]["name"] for d in on_db) == ["mandate-callers-db", "mandate-db"]
    assert all(d["metadata"]["annotations"]["mandate.dev/governs"] == "db,db-agent" for d in on_db)


def test_the_readme_example_command_works(tmp_path: Path) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(EXAMPLES, copy)
    assert (
        main(["export", "istio", "--policies", str(copy), "--dataplane", "ambient", "-o", str(tmp_path / "x.yaml")])
        == 0
    )
    assert parse((tmp_path / "x.yaml").read_text())
