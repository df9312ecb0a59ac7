"""Clients that talk to Envoy as an agent in the mesh would: mTLS with a SPIFFE SVID, and the
service's Host header (Envoy's own identity claims no target, so Mandate resolves the
target by `:authority`, and Envoy routes by it too).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import httpx2
from a2a.client import A2ACardResolver, ClientCallContext, ClientConfig, ClientFactory
from a2a.helpers import get_stream_response_text
from a2a.types.a2a_pb2 import AgentCard, Message, Part, Role, SendMessageRequest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness.envoy import EnvoyProcess
from tests.harness.pki import CertPair, MeshPKI

T = TypeVar("T")
MCP_READ_TIMEOUT = 10.0  # no SDK call may hang: a deny must surface as an error quickly


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one coroutine to completion with an overall deadline (tests are synchronous)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def raw_client(envoy: EnvoyProcess, pki: MeshPKI, cert: CertPair | None, host: str, **headers: str) -> httpx.Client:
    """A plain httpx client to Envoy presenting `cert` (None: no client certificate)."""
    return httpx.Client(
        base_url=envoy.base_url, verify=pki.ssl_context(cert), headers={"Host": host, **headers}, timeout=10.0
    )


@asynccontextmanager
async def mcp_client(
    envoy: EnvoyProcess,
    pki: MeshPKI,
    cert: CertPair | None,
    host: str,
    *,
    mode: str = "auto",
    headers: dict[str, str] | None = None,
    path: str = "/mcp",
) -> AsyncIterator[Client]:
    """A connected `mcp.Client` (SDK v2) going through Envoy.

    The SDK's transport uses httpx2; mTLS needs an SSLContext. MCPErrors should be caught
    inside the `async with`: escaping it they arrive wrapped in ExceptionGroups.
    """
    http = httpx2.AsyncClient(
        verify=pki.ssl_context(cert),
        headers={"Host": host, **(headers or {})},
        timeout=httpx2.Timeout(MCP_READ_TIMEOUT, read=MCP_READ_TIMEOUT),
    )
    client = Client(
        streamable_http_client(envoy.url(path), http_client=http),
        mode=mode,
        read_timeout_seconds=MCP_READ_TIMEOUT,
        cache=None,  # every call must reach the wire, and so Mandate
    )
    async with http, client:
        yield client


def a2a_http_client(pki: MeshPKI, cert: CertPair | None, host: str) -> httpx.AsyncClient:
    """The httpx client an A2A SDK client shares (the SDK never closes it)."""
    return httpx.AsyncClient(verify=pki.ssl_context(cert), headers={"Host": host}, timeout=10.0)


async def a2a_fetch_card(envoy: EnvoyProcess, http: httpx.AsyncClient) -> AgentCard:
    """GET the agent card through Envoy (raises AgentCardResolutionError on a deny)."""
    return await A2ACardResolver(http, envoy.base_url).get_agent_card()


async def a2a_send_text(envoy: EnvoyProcess, http: httpx.AsyncClient, text: str, card: AgentCard | None = None) -> str:
    """Send one message with the real SDK client and return the reply text.

    Without `card` the client resolves it through Envoy first (`create_from_url`). Raises the
    SDK's errors: AgentCardResolutionError when the card GET fails, A2AClientError when the
    JSON-RPC POST does (its `__cause__` is the httpx.HTTPStatusError with Mandate's body).
    """
    factory = ClientFactory(ClientConfig(httpx_client=http, streaming=False))
    client = factory.create(card) if card is not None else await factory.create_from_url(envoy.base_url)
    try:
        request = SendMessageRequest(
            message=Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
        )
        replies = [
            get_stream_response_text(response)
            async for response in client.send_message(request, context=ClientCallContext(timeout=10.0))
        ]
        return "".join(replies)
    finally:
        await client.close()
