"""A real A2A echo agent (a2a-sdk 1.3.0, JSON-RPC binding at `/`).

The card's `supportedInterfaces[0].url` is where SDK clients POST, so it must be Envoy's
address, which is known only after Envoy starts: set `public_url` then; the card is rewritten
per request from it.
"""

from __future__ import annotations

from a2a.helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_1_0, TransportProtocol
from starlette.applications import Starlette


class EchoExecutor(AgentExecutor):
    """Answers every message with one Message `echo: <text>` (no Task)."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        await event_queue.enqueue_event(new_text_message(f"echo: {context.get_user_input()}", context_id=context.context_id))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError("echo messages cannot be cancelled")


class EchoAgent:
    """The agent's ASGI `app`, and the public URL its card advertises."""

    def __init__(self, name: str, public_url: str = "http://127.0.0.1/") -> None:
        self.name = name
        self.public_url = public_url
        card = self.card()
        handler = DefaultRequestHandler(agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
        self.app = Starlette(
            routes=[
                *create_agent_card_routes(card, card_modifier=self._rewrite_card, card_url=AGENT_CARD_WELL_KNOWN_PATH),
                *create_jsonrpc_routes(handler, rpc_url="/"),
            ]
        )

    def card(self) -> AgentCard:
        return AgentCard(
            name=self.name,
            description=f"{self.name}: echoes what it is told",
            version="0.1.0",
            supported_interfaces=[
                AgentInterface(url=self.public_url, protocol_binding=TransportProtocol.JSONRPC.value, protocol_version=PROTOCOL_VERSION_1_0)
            ],
            capabilities=AgentCapabilities(streaming=False),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id="echo", name="Echo", description="Echoes the input", tags=["echo"])],
        )

    async def _rewrite_card(self, _card: AgentCard) -> AgentCard:
        return self.card()
