"""A real A2A agent (a2a-sdk 1.3.0) that delegates for real: on a message `call <tool> <json>`
it calls that MCP tool through Envoy with ITS OWN client certificate and copies the incoming
delegation-chain header onto the call, as an application propagates `traceparent`.

The a2a-sdk server puts the incoming HTTP headers in `ServerCallContext.state["headers"]`
(`DefaultServerCallContextBuilder`, lowercase names), which the executor reaches through
`RequestContext.call_context`. The reply is `result: <json>` or `denied: <reason> hop=<hop>`,
so a test can see end to end what the delegated call came to. Any other text is echoed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from a2a.helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from mcp import MCPError
from starlette.applications import Starlette

from tests.harness.clients import mcp_client
from tests.harness.envoy import EnvoyProcess
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.upstreams.a2a_agent import EchoAgent

CHAIN_HEADER = "x-delegation-chain"


@dataclass
class Outbound:
    """Where the agent's own MCP calls go; known only once Envoy runs."""

    envoy: EnvoyProcess | None = None
    pki: MeshPKI | None = None
    cert: CertPair | None = None  # the agent's own SVID
    mcp_host: str = ""
    propagated: list[str | None] = field(default_factory=list)  # chain header each outbound call carried


class DelegatingExecutor(AgentExecutor):
    def __init__(self, outbound: Outbound) -> None:
        self.outbound = outbound

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        reply = f"echo: {text}"
        if text.startswith("call "):
            _, tool, arguments = (text.split(" ", 2) + ["{}"])[:3]
            headers = context.call_context.state.get("headers", {})
            reply = await self._call_tool(tool, json.loads(arguments), headers.get(CHAIN_HEADER))
        await event_queue.enqueue_event(new_text_message(reply, context_id=context.context_id))

    async def _call_tool(self, tool: str, arguments: dict[str, Any], chain: str | None) -> str:
        out = self.outbound
        assert out.envoy is not None and out.pki is not None and out.cert is not None, "Outbound not configured"
        out.propagated.append(chain)
        headers = {CHAIN_HEADER: chain} if chain else {}
        async with mcp_client(out.envoy, out.pki, out.cert, out.mcp_host, mode="2026-07-28", headers=headers) as client:
            try:
                result = await client.call_tool(tool, arguments)
            except MCPError as error:  # caught inside the `async with`, or it arrives as an ExceptionGroup
                data = error.data if isinstance(error.data, dict) else {}
                return f"denied: {data.get('reason')} hop={data.get('hop')}"
        return "result: " + json.dumps(result.structured_content, sort_keys=True)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError("delegated calls cannot be cancelled")


class DelegatingAgent(EchoAgent):
    """EchoAgent's card and routes, with the delegating executor behind them."""

    def __init__(self, name: str, public_url: str = "http://127.0.0.1/") -> None:
        self.name = name
        self.public_url = public_url
        self.outbound = Outbound()
        card = self.card()
        handler = DefaultRequestHandler(
            agent_executor=DelegatingExecutor(self.outbound), task_store=InMemoryTaskStore(), agent_card=card
        )
        self.app = Starlette(
            routes=[
                *create_agent_card_routes(card, card_modifier=self._rewrite_card, card_url=AGENT_CARD_WELL_KNOWN_PATH),
                *create_jsonrpc_routes(handler, rpc_url="/"),
            ]
        )
