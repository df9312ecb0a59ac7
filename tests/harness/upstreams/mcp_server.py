"""A real MCP server (mcp 2.3.0, SDK v2) standing in for a GitHub MCP server.

Tools `get_me`, `list_issues(repo)`, `create_issue(repo, title)`; resource
`repo://acme/readme`; prompt `triage`. Streamable HTTP at `/mcp`, stateful, serving both the
2026-07-28 (per-request) and the legacy (initialize + session) eras on one path.

`record`, when given, is told what the server ran: `("method", <JSON-RPC method>, {})` for
every message its handler layer is handed (before lookup, so unknown methods too), and
`("tool" | "resource" | "prompt", <name or URI>, <arguments>)` each time a tool, resource or
prompt function runs. The unit differential test (tests/unit/test_mcp_dispatch.py) uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.transport_security import TransportSecuritySettings

README_TEXT = "# acme\nThe acme monorepo."

Recorder = Callable[[str, str, dict[str, Any]], None]


def _ignore(_kind: str, _name: str, _arguments: dict[str, Any]) -> None:
    return None


class _MethodRecorder:
    """Server middleware: logs each message's method as the SDK hands it to its handler layer."""

    def __init__(self, record: Recorder) -> None:
        self.record = record

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        self.record("method", ctx.method, {})
        return await call_next(ctx)


def build_server(record: Recorder | None = None) -> MCPServer:
    ran = record or _ignore
    server = MCPServer(
        name="acme-github",
        version="0.1.0",
        log_level="WARNING",
        instructions="GitHub-like MCP server for Mandate's e2e tests",
        middleware=[_MethodRecorder(record)] if record else None,
    )

    @server.tool()
    def get_me() -> dict[str, Any]:
        """Return the authenticated user."""
        ran("tool", "get_me", {})
        return {"login": "alice", "id": 1}

    @server.tool()
    def list_issues(repo: str) -> list[dict[str, Any]]:
        """List the open issues of a repository."""
        ran("tool", "list_issues", {"repo": repo})
        return [{"repo": repo, "number": 1, "title": "first issue"}]

    @server.tool()
    def create_issue(repo: str, title: str) -> dict[str, Any]:
        """Open an issue."""
        ran("tool", "create_issue", {"repo": repo, "title": title})
        return {"repo": repo, "number": 2, "title": title, "created": True}

    @server.resource("repo://acme/readme", mime_type="text/markdown")
    def readme() -> str:
        """README of the acme repository."""
        ran("resource", "repo://acme/readme", {})
        return README_TEXT

    @server.prompt()
    def triage(issue: str = "unspecified") -> list[UserMessage]:
        """Triage an issue."""
        ran("prompt", "triage", {"issue": issue})
        return [UserMessage(f"Please triage issue: {issue}")]

    return server


def build_app(server: MCPServer | None = None, stateless: bool = False) -> Any:
    """The Starlette app for `/mcp` (of `server`, by default a fresh `build_server()`).

    DNS-rebinding protection is off: the SDK would otherwise only accept Host
    `127.0.0.1:*`/`localhost:*`, and requests arrive through Envoy with the service's Host.
    """
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return (server or build_server()).streamable_http_app(
        streamable_http_path="/mcp", transport_security=security, stateless_http=stateless
    )
