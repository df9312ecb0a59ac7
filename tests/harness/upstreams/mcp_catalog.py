"""A real MCP server (mcp 2.3.0) with a dozen tools, four prompts, four resources and two
resource templates: the catalog the response path's tests filter. Streamable HTTP at `/mcp`,
answering with SSE (the SDK's default) or, with `json_response`, with `application/json`.

`Replay` is an in-memory `EventStore`: with it the server makes its streams resumable (MCP
"Resumability and Redelivery") and replays what it stored to a `GET` with `Last-Event-ID`.

`hold` makes its `tools/list` wait until the event is set (or 10 s pass): the window in which
a test stops Mandate mid-answer.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import JSONRPCMessage

TOOLS = [
    "get_me",
    "list_issues",
    "get_issue",
    "create_issue",
    "comment_issue",
    "close_issue",
    "delete_repo",
    "search_code",
    "search_issues",
    "add_label",
    "merge_pr",
    "list_prs",
]
PROMPTS = ["triage", "summarize", "escalate", "release_notes"]
RESOURCES = ["repo://acme/readme", "repo://acme/changelog", "repo://secret/keys", "repo://other/readme"]
TEMPLATES = ["repo://acme/{path}", "repo://{org}/{path}"]


class Hold:
    """Server middleware: a `tools/list` waits while `waiting` is set, until `release` is."""

    def __init__(self) -> None:
        self.waiting = False
        self.reached = threading.Event()
        self.release = threading.Event()

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/list" and self.waiting:
            self.reached.set()
            for _ in range(1000):
                if self.release.is_set():
                    break
                await asyncio.sleep(0.01)
        return await call_next(ctx)


class Replay(EventStore):
    """Every event of every stream, kept in order; a resumed stream gets its own stream's events
    after the one named (priming events, which hold no message, are not sent again)."""

    def __init__(self) -> None:
        self.events: list[tuple[EventId, StreamId, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = f"{stream_id}_{len(self.events)}"
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        found = [n for n, (event_id, _, _) in enumerate(self.events) if event_id == last_event_id]
        if not found:
            return None
        stream_id = self.events[found[0]][1]
        for event_id, stream, message in self.events[found[0] + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _tool(server: MCPServer, name: str) -> None:
    def run(repo: str = "acme/web") -> dict[str, Any]:
        return {"tool": name, "repo": repo}

    server.tool(name=name, description=f"The {name} tool.")(run)


def _prompt(server: MCPServer, name: str) -> None:
    def render(topic: str = "anything") -> list[UserMessage]:
        return [UserMessage(f"{name}: {topic}")]

    server.prompt(name=name, description=f"The {name} prompt.")(render)


def _resource(server: MCPServer, uri: str) -> None:
    def read() -> str:
        return f"contents of {uri}"

    server.resource(uri, name=uri.rsplit("/", 2)[-2] + "-" + uri.rsplit("/", 1)[-1], mime_type="text/plain")(read)


def _template(server: MCPServer, uri: str) -> None:
    if "{org}" in uri:

        def read_any(org: str, path: str) -> str:
            return f"{org}/{path}"

        server.resource(uri, name="any-repo-file")(read_any)
    else:

        def read_acme(path: str) -> str:
            return f"acme/{path}"

        server.resource(uri, name="acme-file")(read_acme)


def build_server(hold: Hold | None = None) -> MCPServer:
    server = MCPServer(name="catalog", version="0.1.0", log_level="WARNING", middleware=[hold] if hold else None)
    for name in TOOLS:
        _tool(server, name)
    for name in PROMPTS:
        _prompt(server, name)
    for uri in RESOURCES:
        _resource(server, uri)
    for uri in TEMPLATES:
        _template(server, uri)
    return server


def build_app(json_response: bool = False, hold: Hold | None = None, replay: Replay | None = None) -> Any:
    """The Starlette app for `/mcp`; DNS-rebinding protection off (requests arrive with the service's Host)."""
    return build_server(hold).streamable_http_app(
        streamable_http_path="/mcp",
        json_response=json_response,
        event_store=replay,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
