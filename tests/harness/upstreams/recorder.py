"""ASGI middleware that records every HTTP request reaching an upstream.

Tests use it to prove the negative (a denied request never reached the upstream) and to
see the headers Envoy forwarded (exactly one `x-caller-identity`, Mandate's value).
The request is recorded once its body is read, before the app answers, so long-lived
streams (an MCP GET) are recorded too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class SeenRequest:
    """One request as the upstream received it; header names are lowercase."""

    method: str
    path: str  # raw path as sent on the wire, with the query string
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def jsonrpc_method(self) -> str | None:
        """The JSON-RPC `method` of a single-message POST body, if any."""
        try:
            value = self.json()
        except ValueError:
            return None
        return value.get("method") if isinstance(value, dict) else None

    @property
    def jsonrpc_name(self) -> str | None:
        """`params.name` (tools, prompts) or `params.uri` (resources) of the body, if any."""
        try:
            value = self.json()
        except ValueError:
            return None
        params = value.get("params") if isinstance(value, dict) else None
        if not isinstance(params, dict):
            return None
        return params.get("name") or params.get("uri")


class RequestRecorder:
    """Wraps an ASGI app; `mark()` / `since(mark)` scope assertions to one test's traffic."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._seen: list[SeenRequest] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        first: Message = {"type": "http.request", "body": b"", "more_body": True}
        while first.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":  # client went away mid-body
                first = message
                break
            chunks.append(message.get("body", b""))
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": message.get("more_body", False)}
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        path = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        headers = tuple((key.decode("latin-1").lower(), value.decode("latin-1")) for key, value in scope["headers"])
        with self._lock:
            self._seen.append(SeenRequest(scope["method"], path, headers, b"".join(chunks)))

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    @property
    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    def mark(self) -> int:
        with self._lock:
            return len(self._seen)

    def since(self, mark: int) -> list[SeenRequest]:
        with self._lock:
            return self._seen[mark:]
