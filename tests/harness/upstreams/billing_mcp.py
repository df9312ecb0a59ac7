"""A real MCP server (mcp 2.3.0) standing in for a billing database: one tool, `refund`, which
records each refund it makes so a test can see what reached it."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from tests.harness.upstreams import mcp_server


def build_app(refunds: list[dict[str, Any]]) -> Any:
    server = MCPServer(name="billing-db", version="0.1.0", log_level="WARNING")

    @server.tool()
    def refund(customer: str, amount: int) -> dict[str, Any]:
        """Refund `amount` to `customer`."""
        refunds.append({"customer": customer, "amount": amount})
        return {"customer": customer, "amount": amount, "refunded": True}

    return mcp_server.build_app(server)
