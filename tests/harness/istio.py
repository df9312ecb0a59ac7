"""A structural JSON Schema for Istio's AuthorizationPolicy (security.istio.io/v1), written
from Istio's API reference, for the objects the chart's examples and `mandate export istio`
produce. kubernetes-validate knows only Kubernetes' own kinds, and no cluster (with Istio's
CRDs and istiod's validating webhook) is available to the tests; this is the closest check
that can run here. It is strict: an unknown field anywhere is an error.
"""

from __future__ import annotations

from typing import Any

import jsonschema

_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

AUTHORIZATION_POLICY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"enum": ["security.istio.io/v1", "security.istio.io/v1beta1"]},
        "kind": {"const": "AuthorizationPolicy"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "maxLength": 63, "pattern": _DNS1123},
                "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS1123},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "targetRefs": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["kind", "group", "name"],
                        "properties": {
                            "kind": {"enum": ["Gateway", "Service", "ServiceEntry", "GatewayClass"]},
                            "group": {"enum": ["", "gateway.networking.k8s.io", "networking.istio.io"]},
                            "name": {"type": "string", "minLength": 1},
                            "namespace": {"type": "string"},
                        },
                    },
                },
                "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
                "provider": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "minLength": 1}},
                },
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "from": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["source"],
                                    "properties": {
                                        "source": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "minProperties": 1,
                                            "properties": {
                                                key: _STRINGS
                                                for key in (
                                                    "principals",
                                                    "notPrincipals",
                                                    "requestPrincipals",
                                                    "notRequestPrincipals",
                                                    "namespaces",
                                                    "notNamespaces",
                                                    "ipBlocks",
                                                    "notIpBlocks",
                                                    "remoteIpBlocks",
                                                    "notRemoteIpBlocks",
                                                    "serviceAccounts",
                                                    "notServiceAccounts",
                                                )
                                            },
                                        }
                                    },
                                },
                            },
                            "to": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["operation"],
                                    "properties": {
                                        "operation": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "minProperties": 1,
                                            "properties": {
                                                key: _STRINGS
                                                for key in (
                                                    "hosts",
                                                    "notHosts",
                                                    "ports",
                                                    "notPorts",
                                                    "methods",
                                                    "notMethods",
                                                    "paths",
                                                    "notPaths",
                                                )
                                            },
                                        }
                                    },
                                },
                            },
                            "when": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["key"],
                                    "properties": {
                                        "key": {"type": "string"},
                                        "values": _STRINGS,
                                        "notValues": _STRINGS,
                                    },
                                },
                            },
                        },
                    },
                },
            },
            # Istio: a policy applies either by workload selector or by targetRefs; CUSTOM
            # needs a provider, and only CUSTOM takes one.
            "not": {"required": ["selector", "targetRefs"]},
            "if": {"properties": {"action": {"const": "CUSTOM"}}, "required": ["action"]},
            "then": {"required": ["provider"]},
            "else": {"not": {"required": ["provider"]}},
        },
    },
}


def validate_authorization_policy(document: dict[str, Any]) -> None:
    jsonschema.validate(document, AUTHORIZATION_POLICY)
    for rule in document["spec"].get("rules", []):
        for source in rule.get("from", []):
            for principal in source["source"].get("principals", []):
                # Istio principals are the SPIFFE ID without its scheme; a '*' only at either end.
                assert not principal.startswith("spiffe://"), principal
                assert "*" not in principal.strip("*"), principal
