"""`mandate export envoy`: the HTTP filters a plain Envoy listener needs in front of its router
to put Mandate on both hooks of a request (SPEC §9):

1. `ext_authz` asks Mandate about every request (with its body), fails closed, and on an
   allowed MCP list request sets `x-mandate-filter: mcp-list` (removing it from every other);
2. a `composite` filter whose matcher runs `ext_proc` only when that header says so: the list's
   answer goes through Mandate, which removes the entries the caller may not call. Any other
   request opens no ext_proc stream, and an ext_authz deny reaches no filter after it.

The list holds no route-specific config and no router: it goes in an HttpConnectionManager's
`http_filters` before the router, under any route table. Every gRPC service is
`envoy_grpc: {cluster_name: CLUSTER}`, an HTTP/2 cluster the operator defines to
`mandate serve --listen`. Envoy 1.40 facts this encodes are in `_ext_proc`'s docstring.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from authz.check.request import JWT_AUTHN
from authz.check.response import FILTER_HEADER, FILTER_LISTS
from authz.listing.exchange import ATTRIBUTES, AUTHZ_NAMESPACE, ISTIO_NAMESPACE

EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
MATCHER = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
COMPOSITE = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite"
EXECUTE = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction"
HEADER_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
MAX_REQUEST_BYTES = 1 << 20  # the body Mandate reads; a longer one arrives cut and is refused (partial_body)


def envoy_filters(cluster: str = "mandate") -> list[dict[str, Any]]:
    """The HttpFilter entries, in order, without the router."""
    return [{"name": "envoy.filters.http.ext_authz", "typed_config": _ext_authz(cluster)}, response_path(cluster)]


def response_path(cluster: str) -> dict[str, Any]:
    """The second hook alone, to follow an ext_authz filter that asks Mandate (Istio's, for one)."""
    return {
        "name": "mandate.response_path",
        "typed_config": {
            "@type": MATCHER,
            "extension_config": {"name": "composite", "typed_config": {"@type": COMPOSITE}},
            "xds_matcher": {"matcher_tree": _only_lists(_ext_proc(cluster))},
        },
    }


def _ext_authz(cluster: str) -> dict[str, Any]:
    return {
        "@type": EXT_AUTHZ,
        "transport_api_version": "V3",
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": "1s"},
        "failure_mode_allow": False,  # Mandate unreachable or slow: the request is refused
        "with_request_body": {
            "max_request_bytes": MAX_REQUEST_BYTES,
            "allow_partial_message": True,  # Mandate refuses a cut body with a reason the agent reads
            "pack_as_bytes": True,  # raw bytes: otherwise Envoy alters bytes that are not UTF-8
        },
        # the claims a jwt_authn filter before it verified (SPEC §10): the request's user, verified once
        "metadata_context_namespaces": [JWT_AUTHN],
    }


def _only_lists(action_filter: dict[str, Any]) -> dict[str, Any]:
    """A matcher tree on the request header ext_authz sets: a composite filter with
    ExecuteFilterAction runs nothing on ext_authz's own deny replies (an ExtensionWithMatcher
    with SkipFilter would), and nothing when the header is absent."""
    return {
        "input": {"name": FILTER_HEADER, "typed_config": {"@type": HEADER_INPUT, "header_name": FILTER_HEADER}},
        "exact_match_map": {
            "map": {
                FILTER_LISTS: {
                    "action": {
                        "name": "mandate-list-filter",
                        "typed_config": {
                            "@type": EXECUTE,
                            "typed_config": {"name": "envoy.filters.http.ext_proc", "typed_config": action_filter},
                        },
                    }
                }
            }
        },
    }


def _ext_proc(cluster: str) -> dict[str, Any]:
    """ext_proc as Envoy 1.40 needs it: the caller's SPIFFE ID comes as the attribute
    `connection.uri_san_peer_certificate` (`source.principal` arrives empty), and attributes
    only with header messages; ext_authz's metadata reaches ext_proc only through
    `forwarding_namespaces.untyped`. The request body (a few bytes: which ids are lists) is
    buffered, the answer streamed: Mandate holds what it must and drops Content-Length, without
    which Envoy answers a changed body with a 500."""
    return {
        "@type": EXT_PROC,
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
        "failure_mode_allow": False,  # Mandate unreachable, or gone mid-answer: an error, never the list
        "processing_mode": {
            "request_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "request_trailer_mode": "SKIP",
            "response_header_mode": "SEND",
            "response_body_mode": "STREAMED",
            "response_trailer_mode": "SKIP",
        },
        "request_attributes": list(ATTRIBUTES),
        "metadata_options": {"forwarding_namespaces": {"untyped": [AUTHZ_NAMESPACE, ISTIO_NAMESPACE]}},
        "message_timeout": "2s",
    }


def render(filters: list[dict[str, Any]], as_json: bool = False) -> str:
    if as_json:
        return json.dumps(filters, indent=2) + "\n"
    return yaml.safe_dump(filters, sort_keys=False, default_flow_style=False, width=1000)


def add_envoy_parser(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    envoy = kinds.add_parser(
        "envoy", help="the HTTP filters (ext_authz, then ext_proc for MCP list answers) for a plain Envoy listener"
    )
    envoy.add_argument(
        "--cluster",
        default="mandate",
        help="the HTTP/2 cluster that reaches `mandate serve --listen` (default: mandate)",
    )
    envoy.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def run_export_envoy(args: argparse.Namespace) -> int:
    sys.stdout.write(render(envoy_filters(args.cluster), args.json))
    return 0
