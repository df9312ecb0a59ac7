"""`mandate export istio` includes the response path: an EnvoyFilter puts Mandate's list filter
after Istio's ext_authz on every MCP workload's sidecar and, for MCP servers outside the mesh,
at the egress gateway; ambient waypoints take none, and the export says so (SPEC §9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from authz.export_envoy import response_path
from authz.export_istio import ExportOptions, export_istio
from tests.harness.envoy import validate_filters
from tests.harness.example_policies import EXAMPLES, REPO

ISTIO_CLUSTER = "outbound|9191||mandate.mandate-system.svc.cluster.local"


def envoy_filters(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, what it governs) -> the EnvoyFilter."""
    return {
        (d["metadata"]["namespace"], d["metadata"]["annotations"]["mandate.dev/governs"]): d
        for d in yaml.safe_load_all(text)
        if d and d["kind"] == "EnvoyFilter"
    }


def test_every_mcp_workload_gets_the_list_filter_before_its_sidecars_router_and_no_other_does():
    found = envoy_filters(export_istio(EXAMPLES))
    assert set(found) == {("tools", "github"), ("billing", "billing-db")}  # not the agents, not status-page
    github = found[("tools", "github")]["spec"]
    assert github["workloadSelector"] == {"labels": {"app": "github-mcp"}}
    (patch,) = github["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["match"]["context"] == "SIDECAR_INBOUND"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"] == {"name": "envoy.filters.http.router"}
    assert patch["patch"] == {"operation": "INSERT_BEFORE", "value": response_path(ISTIO_CLUSTER)}


def test_the_filter_calls_the_extension_providers_service_and_envoy_accepts_it(tmp_path: Path):
    options = ExportOptions(service="authz.sec.svc.cluster.local", port=7000)
    (found,) = [d for key, d in envoy_filters(export_istio(EXAMPLES, options)).items() if key[1] == "github"]
    value = found["spec"]["configPatches"][0]["patch"]["value"]
    assert value == response_path("outbound|7000||authz.sec.svc.cluster.local")
    cluster = "outbound|7000||authz.sec.svc.cluster.local"
    assert (
        validate_filters([value], [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}], cluster, tmp_path)
        == ""
    )


EXTERNAL_MCP = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: copilot}
spec: {kind: mcp, hosts: [api.githubcopilot.com]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: coder}
spec:
  principals: [spiffe://cluster.local/ns/dev/sa/coder]
  mission: Writes code with Copilot's tools.
  mcp: [{server: copilot, tools: [search_code]}]
"""


def test_an_mcp_server_outside_the_mesh_is_filtered_at_the_egress_gateway(write_policies):
    text = export_istio(write_policies(policies=EXTERNAL_MCP))
    (gateway,) = envoy_filters(text).values()
    assert gateway["metadata"]["namespace"] == "istio-system"
    assert gateway["spec"]["workloadSelector"] == {"labels": {"istio": "egressgateway"}}
    assert gateway["spec"]["configPatches"][0]["match"]["context"] == "GATEWAY"
    custom = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "AuthorizationPolicy"]
    hosts = [d["spec"]["rules"][0]["to"][0]["operation"]["hosts"] for d in custom if d["spec"]["action"] == "CUSTOM"]
    assert hosts == [["api.githubcopilot.com", "api.githubcopilot.com:*"]]  # Mandate is asked there too


def test_ambient_exports_no_envoy_filter_and_says_lists_are_not_filtered_behind_a_waypoint():
    text = export_istio(EXAMPLES, ExportOptions(dataplane="ambient"))
    assert envoy_filters(text) == {}
    assert "# note: ambient: waypoints take no EnvoyFilter, so MCP list answers are not filtered" in text


def test_the_helm_sidecar_example_carries_the_filter_the_export_writes():
    """helm/examples stays what `mandate export istio` writes for the example github server."""
    example = REPO / "helm" / "examples" / "sidecar-authorizationpolicy.yaml"
    (shown,) = [d for d in yaml.safe_load_all(example.read_text()) if d and d["kind"] == "EnvoyFilter"]
    exported = envoy_filters(export_istio(EXAMPLES))[("tools", "github")]
    assert shown["spec"] == exported["spec"] and shown["metadata"]["name"] == exported["metadata"]["name"]
