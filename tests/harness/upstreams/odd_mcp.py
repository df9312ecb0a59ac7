"""A hand-written MCP endpoint that answers list requests in the shapes real servers may send
and the SDK server does not: `POST /mcp/<shape>`, whatever JSON-RPC it is sent.

- `sse-bytes`: SSE with CRLF line ends, a priming event (`id:` and `retry:`, empty data), a
  progress notification whose data spans two lines, then the answers with `id:` lines; sent
  one byte per HTTP chunk;
- `gzip`: the JSON answer with `Content-Encoding: gzip`;
- `json`: the JSON answer (a 2025-03-26 batch is answered with a batch, `tools/call` with a
  result that happens to hold a `tools` key);
- `bad-shape`: a `tools/list` answer whose `tools` is an object, not a list;
- `html`: a 200 `text/html` page naming the tools.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

from tests.harness.upstreams.mcp_catalog import PROMPTS, TOOLS

NOTIFICATION = (
    b'data: {"jsonrpc":"2.0","method":"notifications/progress",\r\ndata: "params":{"progressToken":1,"progress":1}}'
)


def answer(message: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request: the whole catalog for a list."""
    method, request_id = message.get("method"), message.get("id")
    if method == "tools/list":
        result: dict[str, Any] = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]}
    elif method == "prompts/list":
        result = {"prompts": [{"name": n} for n in PROMPTS]}
    else:
        result = {"content": [], "tools": [{"name": "delete_repo"}]}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _sse(answers: list[dict[str, Any]]) -> bytes:
    events = [b"id: prime\r\nretry: 1000\r\ndata: ", NOTIFICATION]
    events += [b"event: message\r\nid: %d\r\ndata: %s" % (n, json.dumps(a).encode()) for n, a in enumerate(answers)]
    return b"".join(event + b"\r\n\r\n" for event in events)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    shape = scope["path"].rsplit("/", 1)[-1]
    sent = json.loads(body) if body else {}
    answers = [answer(m) for m in sent] if isinstance(sent, list) else [answer(sent)]
    whole = json.dumps(answers if isinstance(sent, list) else answers[0]).encode()
    headers = [(b"content-type", b"application/json")]
    chunks = [whole]
    if shape == "sse-bytes":
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        stream = _sse(answers)
        chunks = [stream[i : i + 1] for i in range(len(stream))]
    elif shape == "gzip":
        headers.append((b"content-encoding", b"gzip"))
        chunks = [gzip.compress(whole)]
    elif shape == "bad-shape":
        chunks = [json.dumps({"jsonrpc": "2.0", "id": answers[0]["id"], "result": {"tools": {"name": "x"}}}).encode()]
    elif shape == "html":
        headers = [(b"content-type", b"text/html")]
        chunks = [b"<html>" + " ".join(TOOLS).encode() + b"</html>"]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
