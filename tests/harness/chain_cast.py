"""The cast of the in-process delegation tests (SPEC §5), as policy files.

A small world of agents on `<name>.agents.local`, each with the SPIFFE ID
`spiffe://cluster.local/ns/<name>/sa/<name>`, and one MCP server (`tools`, on TOOLS_HOST).
`cast()` is the default cast; `documents()` writes any cast as policy files for the
`write_policies` fixture. (The e2e suite's delegation policies are in `chain_policies.py`.)

The default cast:
  alice  tools read, write;          agents: bob (no grant), carol (grant: read, delete)
  bob    tools read, delete;         agents: carol
  carol  tools read, write, delete, admin
"""

from __future__ import annotations

from typing import Any

import yaml

CHAIN_HEADER = "x-delegation-chain"  # the Settings default
TOOLS_HOST = "tools.local"


def principal(name: str) -> str:
    return f"spiffe://cluster.local/ns/{name}/sa/{name}"


def host(name: str) -> str:
    return f"{name}.agents.local"


def cast() -> dict[str, dict[str, Any]]:
    """A fresh copy each call, so a test may change its own."""
    return {
        "alice": {
            "tools": ["read", "write"],
            "agents": [
                {"agent": "bob"},
                {"agent": "carol", "grant": {"mcp": [{"server": "tools", "tools": ["read", "delete"]}]}},
            ],
        },
        "bob": {"tools": ["read", "delete"], "agents": [{"agent": "carol"}]},
        "carol": {"tools": ["read", "write", "delete", "admin"]},
    }


def documents(
    profiles: dict[str, dict[str, Any]], settings: dict[str, Any] | None = None, tools_principal: str = ""
) -> dict[str, str]:
    """Policy files for `profiles`: name -> {tools, agents, delegation, mode, principals, when}."""
    tools: dict[str, Any] = {"kind": "mcp", "hosts": [TOOLS_HOST]}
    if tools_principal:
        tools["principals"] = [tools_principal]
    docs: list[dict[str, Any]] = [
        {"apiVersion": "mandate.dev/v1alpha1", "kind": "Target", "metadata": {"name": "tools"}, "spec": tools}
    ]
    for name, spec in profiles.items():
        body: dict[str, Any] = {
            "principals": spec.get("principals", [principal(name)]),
            "hosts": [host(name)],
            "mission": f"{name} in a delegation test",
        }
        if spec.get("tools"):
            body["mcp"] = [{"server": "tools", "tools": spec["tools"]}]
        if spec.get("when"):
            body["mcp"][0]["when"] = spec["when"]
        if spec.get("agents"):
            body["agents"] = spec["agents"]
        for key in ("delegation", "mode"):
            if key in spec:
                body[key] = spec[key]
        docs.append(
            {"apiVersion": "mandate.dev/v1alpha1", "kind": "MissionProfile", "metadata": {"name": name}, "spec": body}
        )
    files = {"policy": yaml.safe_dump_all(docs, sort_keys=False)}
    if settings:
        files["settings"] = yaml.safe_dump(
            {
                "apiVersion": "mandate.dev/v1alpha1",
                "kind": "Settings",
                "metadata": {"name": "default"},
                "spec": settings,
            }
        )
    return files
