"""`mandate export envoy [--cluster NAME]`: exit 0 and, on stdout only, the list of Envoy
HttpFilters that puts Mandate on both hooks of a request, which Envoy 1.40 accepts as it is
under any route table (SPEC §9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.envoy import validate_filters


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", "export", "envoy", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def grpc_services(value: Any) -> list[dict[str, Any]]:
    """Every `grpc_service` anywhere in the config."""
    if isinstance(value, dict):
        found = [value["grpc_service"]] if "grpc_service" in value else []
        return found + [s for item in value.values() for s in grpc_services(item)]
    if isinstance(value, list):
        return [s for item in value for s in grpc_services(item)]
    return []


@pytest.mark.parametrize(("args", "cluster"), [((), "mandate"), (("--cluster", "authz-h2"), "authz-h2")])
def test_stdout_is_only_the_filter_list_and_every_grpc_service_is_the_named_cluster(args, cluster):
    done = export(*args)
    assert done.returncode == 0, done.stderr
    filters = yaml.safe_load(done.stdout)
    assert [f["name"] for f in filters] == ["envoy.filters.http.ext_authz", "mandate.response_path"]
    assert all(set(f) == {"name", "typed_config"} and f["typed_config"]["@type"] for f in filters)
    assert not any("router" in f["name"] for f in filters)
    services = grpc_services(filters)
    assert len(services) == 2 and all(s["envoy_grpc"] == {"cluster_name": cluster} for s in services)
    assert json.loads(export(*args, "--json").stdout) == filters


def test_only_what_ext_authz_marks_goes_through_ext_proc_and_neither_hook_fails_open():
    ext_authz, composite = yaml.safe_load(export().stdout)
    assert ext_authz["typed_config"]["failure_mode_allow"] is False
    tree = composite["typed_config"]["xds_matcher"]["matcher_tree"]
    assert tree["input"]["typed_config"]["header_name"] == "x-mandate-filter"
    (match,) = tree["exact_match_map"]["map"].items()
    assert match[0] == "mcp-list" and "on_no_match" not in composite["typed_config"]["xds_matcher"]
    ext_proc = match[1]["action"]["typed_config"]["typed_config"]["typed_config"]
    assert ext_proc["failure_mode_allow"] is False
    assert ext_proc["metadata_options"]["forwarding_namespaces"]["untyped"][0] == "envoy.filters.http.ext_authz"
    assert "connection.uri_san_peer_certificate" in ext_proc["request_attributes"]


ROUTE_TABLES = {
    "one route": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
    "several, with per-route timeouts and a direct response": [
        {"match": {"prefix": "/mcp"}, "route": {"cluster": "upstream", "timeout": "0s"}},
        {"match": {"path": "/healthz"}, "direct_response": {"status": 200}},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "prefix_rewrite": "/v1/"}},
    ],
}


@pytest.mark.parametrize("routes", ROUTE_TABLES, ids=list(ROUTE_TABLES))
def test_envoy_validates_the_exported_filters_under_any_route_table(tmp_path: Path, routes: str):
    filters = yaml.safe_load(export("--cluster", "mandate").stdout)
    assert validate_filters(filters, ROUTE_TABLES[routes], "mandate", tmp_path) == ""


def test_ext_authz_forwards_the_claims_a_jwt_authn_filter_verified():
    """SPEC §10: a user Envoy's jwt_authn verified reaches Mandate in the metadata, not verified twice."""
    exported = yaml.safe_load(export().stdout)
    assert exported[0]["typed_config"]["metadata_context_namespaces"] == ["envoy.filters.http.jwt_authn"]
