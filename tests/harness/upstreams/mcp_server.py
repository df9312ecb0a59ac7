"""A real MCP server (mcp 2.3.0, SDK v2) standing in for a GitHub MCP server.

Tools `get_me`, `list_issues(repo)`, `create_issue(repo, title)`; resource
`repo://acme/readme`; prompt `triage`. Streamable HTTP at `/mcp`, stateful, serving both the
2026-07-28 (per-request) and the legacy (initialize + session) eras on one path.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.transport_security import TransportSecuritySettings

README_TEXT = "# acme\nThe acme monorepo."


def build_server() -> MCPServer:
    server = MCPServer(name="acme-github", version="0.1.0", log_level="WARNING", instructions="GitHub-like MCP server for Mandate's e2e tests")

    @server.tool()
    def get_me() -> dict[str, Any]:
        """Return the authenticated user."""
        return {"login": "alice", "id": 1}

    @server.tool()
    def list_issues(repo: str) -> list[dict[str, Any]]:
        """List the open issues of a repository."""
        return [{"repo": repo, "number": 1, "title": "first issue"}]

    @server.tool()
    def create_issue(repo: str, title: str) -> dict[str, Any]:
        """Open an issue."""
        return {"repo": repo, "number": 2, "title": title, "created": True}

    @server.resource("repo://acme/readme", mime_type="text/markdown")
    def readme() -> str:
        """README of the acme repository."""
        return README_TEXT

    @server.prompt()
    def triage(issue: str = "unspecified") -> list[UserMessage]:
        """Triage an issue."""
        return [UserMessage(f"Please triage issue: {issue}")]

    return server


def build_app() -> Any:
    """The Starlette app for `/mcp`.

    DNS-rebinding protection is off: the SDK would otherwise only accept Host
    `127.0.0.1:*`/`localhost:*`, and requests arrive through Envoy with the service's Host.
    """
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return build_server().streamable_http_app(streamable_http_path="/mcp", transport_security=security)
