"""A real A2A echo agent (a2a-sdk 1.3.0): JSON-RPC binding at `/`, and the HTTP+JSON binding's
routes (v1.0, with the `/{tenant}` mount, and v0.3's `/v1/...`) as the SDK builds them.

The card's `supportedInterfaces[0].url` is where SDK clients POST, so it must be Envoy's
address, which is known only after Envoy starts: set `public_url` then; the card is rewritten
per request from it.

`record_dispatch` makes an app's routes log which A2A method the SDK's router hands each
request to, so tests can compare it with the method Mandate decided on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from a2a.helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_1_0, TransportProtocol
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

# The SDK's endpoint functions (RestDispatcher's, REST03Handler's behind v0.3's partials, the
# JSON-RPC dispatcher's, the card's) by the A2A method they serve. An endpoint missing here is
# a KeyError: a new SDK route must be looked at, not guessed.
ENDPOINT_METHODS = {
    "on_message_send": "SendMessage",
    "on_message_send_stream": "SendStreamingMessage",
    "on_get_task": "GetTask",
    "list_tasks": "ListTasks",
    "on_cancel_task": "CancelTask",
    "on_subscribe_to_task": "SubscribeToTask",
    "set_push_notification": "CreateTaskPushNotificationConfig",
    "get_push_notification": "GetTaskPushNotificationConfig",
    "list_push_notifications": "ListTaskPushNotificationConfigs",
    "delete_push_notification": "DeleteTaskPushNotificationConfig",
    "handle_authenticated_agent_card": "GetExtendedAgentCard",
    "on_get_extended_agent_card": "GetExtendedAgentCard",
    "handle_requests": "jsonrpc",  # the JSON-RPC endpoint: the body names the method
    "_get_agent_card": "card",
}


def endpoint_method(endpoint: Any) -> str:
    """The A2A method a route's endpoint serves (v0.3 routes wrap theirs in a partial)."""
    if isinstance(endpoint, functools.partial):
        endpoint = endpoint.args[0]
    return ENDPOINT_METHODS[endpoint.__name__]


def record_dispatch(routes: Iterable[BaseRoute], log: list[str]) -> None:
    """Make every route (and every route inside a Mount) append its A2A method to `log` when
    Starlette hands it a request: only a route whose path and verb both matched gets there, so a
    404, 405 or slash redirect logs nothing."""
    for route in routes:
        if isinstance(route, Mount):
            record_dispatch(route.routes, log)
        elif isinstance(route, Route) and not getattr(route.app, "a2a_method", None):
            route.app = _logged(route.app, endpoint_method(route.endpoint), log)


def _logged(app: Any, method: str, log: list[str]) -> Any:
    async def dispatched(scope: Any, receive: Any, send: Any) -> None:
        log.append(method)
        await app(scope, receive, send)

    dispatched.a2a_method = method  # type: ignore[attr-defined]  # the Mount shares its routes: wrap once
    return dispatched


class EchoExecutor(AgentExecutor):
    """Answers every message with one Message `echo: <text>` (no Task)."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        await event_queue.enqueue_event(
            new_text_message(f"echo: {context.get_user_input()}", context_id=context.context_id)
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError("echo messages cannot be cancelled")


class EchoAgent:
    """The agent's ASGI `app`, the public URL its card advertises, and `dispatched`: the A2A
    method of every request its router handed to an endpoint, in order."""

    def __init__(self, name: str, public_url: str = "http://127.0.0.1/") -> None:
        self.name = name
        self.public_url = public_url
        card = self.card()
        handler = DefaultRequestHandler(agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
        self.dispatched: list[str] = []
        routes = [
            *create_agent_card_routes(card, card_modifier=self._rewrite_card, card_url=AGENT_CARD_WELL_KNOWN_PATH),
            *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
            *create_rest_routes(handler, enable_v0_3_compat=True),  # last: its `/{tenant}` mount takes any 2+ segments
        ]
        record_dispatch(routes, self.dispatched)
        self.app = Starlette(routes=routes)

    def card(self) -> AgentCard:
        return AgentCard(
            name=self.name,
            description=f"{self.name}: echoes what it is told",
            version="0.1.0",
            supported_interfaces=[
                AgentInterface(
                    url=self.public_url,
                    protocol_binding=TransportProtocol.JSONRPC.value,
                    protocol_version=PROTOCOL_VERSION_1_0,
                )
            ],
            capabilities=AgentCapabilities(streaming=False),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id="echo", name="Echo", description="Echoes the input", tags=["echo"])],
        )

    async def _rewrite_card(self, _card: AgentCard) -> AgentCard:
        return self.card()
