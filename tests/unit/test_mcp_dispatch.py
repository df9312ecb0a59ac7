"""Mandate reads what the upstream runs: a differential test against the real MCP Python SDK (mcp 2.3).

Each request goes, in process, to the SDK's own Streamable HTTP app serving the e2e harness's MCP
server (tests/harness/upstreams/mcp_server.py), stateful as the e2e tests run it and stateless,
driven the way uvicorn drives it. Its tools, prompt, resource and completion handler log what
they ran; its handler layer logs every method it was handed. The same request goes to Mandate:
`classify_mcp`, and an Authorizer over a small policy. Then:

- what Mandate could read, it read exactly: every method the SDK handed on, and every tool,
  prompt or resource it ran, is one of the actions Mandate read, whatever the policy says;
- what Mandate allowed is all the SDK ran: each tool, prompt or resource an allowed one, run
  no more often than read, a tool with the very arguments Mandate's `when` saw;
- what Mandate refused, it refused as it should: malformed (400), or a 403 naming what it read.

What the SDK does with a request (from its code; `test_what_the_sdk_does` holds each point):
- every POST needs a Content-Type beginning `application/json` (the session era: that type, parameters aside);
- the era is chosen by the `MCP-Protocol-Version` header alone. Absent or a handshake version
  (2024-11-05 to 2025-11-25): the session transport reads the body with `pydantic_core.from_json`
  (a repeated key: the last wins; a BOM, lone surrogates, trailing bytes: refused) into one
  JSON-RPC message (no batches), and ignores `Mcp-Method` / `Mcp-Name`. Any other value: the
  2026-07-28 entry reads it with `json.loads` (the last key wins; a UTF-8 BOM, UTF-16 and lone
  surrogates are read), and wants the `_meta` envelope, `Mcp-Method`, and `Mcp-Name` for
  tools/call, prompts/get and resources/read, to agree with the body;
- in the session era an `id` that is no string or integer (true, 1.5, null, {}) makes the
  message a notification, and a notification with a request's method is dropped;
- a message with both `method` and `result` runs as the request;
- tools and prompts are looked up by exact name, a concrete resource by exact URI;
- GET opens the event stream and DELETE ends the session: neither reads a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from base64 import b64encode
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp.shared.inbound import encode_header_value

from authz.check.decision import Decision
from authz.check.pipeline import Authorizer
from authz.check.protocols.jsonrpc import Malformed
from authz.check.protocols.mcp import McpAction, classify_mcp
from authz.check.request import AuthzInput
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import GITHUB_HOST, SUPPORT
from tests.harness.upstreams.mcp_server import build_app, build_server

POLICY = {
    "target.yaml": """
        apiVersion: mandate.dev/v1alpha1
        kind: Target
        metadata: {name: github}
        spec: {kind: mcp, hosts: [github-mcp.tools.svc.cluster.local], pathPrefix: /mcp}
    """,
    "profile.yaml": f"""
        apiVersion: mandate.dev/v1alpha1
        kind: MissionProfile
        metadata: {{name: support-agent}}
        spec:
          principals: [{SUPPORT}]
          mission: reads issues
          mcp:
            - {{server: github, tools: [get_me], resources: ["repo://acme/readme"], prompts: [triage]}}
            - {{server: github, tools: [list_issues], when: 'mcp.tool.arguments.repo.startsWith("acme/")'}}
    """,
}
ALLOWED = {("tool", "get_me"), ("tool", "list_issues"), ("resource", "repo://acme/readme"), ("prompt", "triage")}
MODERN = "2026-07-28"
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
OLD_ENVELOPE = {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "2025-11-25"}
ACCEPT = "application/json, text/event-stream"


# --- writing requests, hostile ones included ------------------------------------------------


class Members(list):  # type: ignore[type-arg]
    """A JSON object as written: its (key, value) members in order, a key repeated if drawn so."""


def to_json(value: Any, escaped: frozenset[str] = frozenset(), ascii_only: bool = True) -> str:
    """JSON text for `value`; the strings in `escaped` (keys or values) written all in `\\uXXXX`."""
    if isinstance(value, dict):
        value = Members(value.items())
    if isinstance(value, Members):
        members = (f"{to_json(k, escaped, ascii_only)}:{to_json(v, escaped, ascii_only)}" for k, v in value)
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(item, escaped, ascii_only) for item in value) + "]"
    if isinstance(value, str) and value in escaped:
        units = value.encode("utf-16-be", "surrogatepass")
        return '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    return json.dumps(value, ensure_ascii=ascii_only)


@dataclass
class Request:
    """One HTTP request to the MCP server; `session`: send it in the session opened for it."""

    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    verb: str = "POST"
    path: str = "/mcp"
    session: bool = True


def legacy(body: bytes | str, *headers: tuple[str, str], **options: Any) -> Request:
    """A session-era POST as the SDK's client writes one (no routing headers)."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return Request(raw, [("content-type", "application/json"), ("accept", ACCEPT), *headers], **options)


def modern(body: str, method: str | None, name: str | None = None, *headers: tuple[str, str]) -> Request:
    """A 2026-07-28 POST with its routing headers; `$META` in the body stands for the envelope."""
    routing = [("mcp-protocol-version", MODERN)]
    routing += [("mcp-method", method)] if method is not None else []
    routing += [("mcp-name", encode_header_value(name))] if name is not None else []
    return legacy(body.replace("$META", '"_meta":' + json.dumps(ENVELOPE)), *routing, *headers)


def rpc(params: str = '{"name":"get_me"}', method: str = '"tools/call"', request_id: str = "1", extra: str = "") -> str:
    """A JSON-RPC request written by hand, so that keys can repeat and strings be escaped."""
    return f'{{"jsonrpc":"2.0","id":{request_id},"method":{method},"params":{params}{extra}}}'


def enveloped(params: str) -> str:
    """`params` (an object's text) with the 2026-07-28 envelope added."""
    return params[:-1] + ",$META}"


def completion(ref: dict[str, str]) -> Request:
    return legacy(rpc(json.dumps({"ref": ref, "argument": {"name": "a", "value": "x"}}), '"completion/complete"'))


# --- the SDK's side -------------------------------------------------------------------------


@dataclass
class Ran:
    """What the SDK did with one request: its status, the methods its handler layer was handed,
    and the (kind, name, arguments) of each tool, prompt, resource or completion that ran."""

    status: int | None
    methods: list[str]
    invoked: list[tuple[str, str, dict[str, Any]]]

    @property
    def names(self) -> list[str]:
        return [f"{kind} {name}" for kind, name, _ in self.invoked]


class SdkServer:
    """The harness MCP server in the SDK's Streamable HTTP app, its lifespan running on a loop of
    its own. `send` opens a session for the request (stateful), sends the request as uvicorn
    would, waits until the response is written and what it spawned has run, and ends the session."""

    def __init__(self, stateless: bool) -> None:
        self.log: list[tuple[str, str, dict[str, Any]]] = []
        server = build_server(record=lambda kind, name, arguments: self.log.append((kind, name, arguments)))

        @server.completion()
        async def complete(ref: Any, argument: Any, context: Any) -> None:
            self.log.append(("prompt", ref.name, {}) if ref.type == "ref/prompt" else ("resource", ref.uri, {}))

        self.stateless = stateless
        self.app = build_app(server, stateless=stateless)
        self.loop = asyncio.new_event_loop()
        self._lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lifespan_task = self.loop.run_until_complete(self._start())

    async def _start(self) -> asyncio.Task[None]:
        started = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set()

        await self._lifespan.put({"type": "lifespan.startup"})
        lifespan = self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, self._lifespan.get, send)
        task = asyncio.ensure_future(lifespan)
        await asyncio.wait_for(started.wait(), 10)
        return task

    def close(self) -> None:
        self._lifespan.put_nowait({"type": "lifespan.shutdown"})
        self.loop.run_until_complete(asyncio.wait_for(self._lifespan_task, 10))
        pending = asyncio.all_tasks(self.loop)  # sse-starlette's shutdown watcher, started by the streams
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(_settle(pending))
        self.loop.close()

    def send(self, request: Request) -> Ran:
        return self.loop.run_until_complete(asyncio.wait_for(self._send(request), 30))

    async def _send(self, request: Request) -> Ran:
        headers = list(request.headers)
        session = None if self.stateless else await self._open_session(dict(request.headers))
        if session and request.session:
            headers.append(("mcp-session-id", session))
        self.log.clear()
        status, _ = await self._exchange(request.verb, request.path, headers, request.body)
        for _ in range(20):  # a notification or a posted-back response is handled after its 202
            await asyncio.sleep(0)
        methods = [name for kind, name, _ in self.log if kind == "method"]
        ran = Ran(status, methods, [entry for entry in self.log if entry[0] != "method"])
        if session:
            await self._exchange("DELETE", "/mcp", [("accept", ACCEPT), ("mcp-session-id", session)], b"")
        return ran

    async def _open_session(self, headers: dict[str, str]) -> str:
        version = headers.get("mcp-protocol-version")
        client = {"name": "differential", "version": "1"}
        init = {
            "protocolVersion": version if version in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1],
            "capabilities": {},
            "clientInfo": client,
        }
        opening = legacy(to_json({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}))
        status, response_headers = await self._exchange("POST", "/mcp", opening.headers, opening.body)
        assert status == 200, status
        return response_headers["mcp-session-id"]

    async def _exchange(
        self, verb: str, raw_path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int | None, dict[str, str]]:
        path, _, query = raw_path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "http",
            "method": verb,
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(name.encode(), value.encode()) for name, value in headers],
            "server": ("github-mcp", 80),
            "client": ("127.0.0.1", 40000),
        }  # what uvicorn builds: `path` percent-decoded once, nothing else resolved
        answered = asyncio.Event()
        started: dict[str, Any] = {}
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop()
            # The client stays until the response ends; a stream that never ends (GET) it leaves.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), 0.05 if verb == "GET" else 5)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response_headers = {name.decode(): value.decode() for name, value in message["headers"]}
                started.update(status=message["status"], headers=response_headers)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        await self.app(scope, receive, send)
        return started.get("status"), started.get("headers", {})


async def _settle(tasks: set[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="module", params=["stateful", "stateless"])
def sdk(request: pytest.FixtureRequest) -> Iterator[SdkServer]:
    sdk_logs = logging.getLogger("mcp")
    level, sdk_logs.level = sdk_logs.level, logging.CRITICAL  # unknown names make the SDK log tracebacks: slow
    root = logging.getLogger()
    handlers = list(root.handlers)
    server = SdkServer(stateless=request.param == "stateless")
    root.handlers[:] = handlers  # MCPServer() may install a handler of its own on the root logger
    yield server
    server.close()
    sdk_logs.setLevel(level)


@pytest.fixture(scope="module")
def authorizer(tmp_path_factory: pytest.TempPathFactory) -> Authorizer:
    """An Authorizer over this module's POLICY (not the example policy of tests/conftest.py)."""
    directory: Path = tmp_path_factory.mktemp("policy")
    for name, text in POLICY.items():
        (directory / name).write_text("\n".join(line[8:] for line in text.splitlines()))
    return Authorizer(compile_directory(directory))


# --- Mandate's side, and the comparison -----------------------------------------------------


@dataclass
class Reading:
    actions: list[McpAction] | None  # what classify_mcp read; None: it refused the request as malformed
    decision: Decision

    @property
    def outcome(self) -> str:
        verdict = self.decision.verdict
        return "allow" if self.decision.result == "allow" else f"{verdict.status} {verdict.reason}"


def mandate_reads(authorizer: Authorizer, request: Request) -> Reading:
    headers: dict[str, str] = {}
    for name, value in request.headers:  # Envoy hands a repeated header over as one, joined by commas
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    try:
        actions: list[McpAction] | None = classify_mcp(request.verb.upper(), headers, request.body)[0]
    except Malformed:
        actions = None
    whole = AuthzInput(request.verb, request.path, GITHUB_HOST, headers, request.body, SUPPORT)
    return Reading(actions, authorizer.decide(whole))


def check(authorizer: Authorizer, sdk: SdkServer, request: Request) -> tuple[str, list[str]]:
    """Send `request` to both; assert the SDK ran only what Mandate read (and, if Mandate allowed
    it, only what the policy allows); answer (Mandate's outcome, what the SDK ran)."""
    reading = mandate_reads(authorizer, request)
    ran = sdk.send(request)
    where = f"{request}: Mandate {reading.outcome} {reading.actions}; the SDK {ran}"
    read = Counter((action.kind, action.name) for action in reading.actions or ())
    if reading.actions is not None:  # whatever the SDK was handed or ran, Mandate read
        assert set(ran.methods) <= {action.method for action in reading.actions}, where
        assert all((kind, name) in read for kind, name, _ in ran.invoked), where
    if reading.decision.result == "allow":
        assert reading.actions is not None, where
        assert Counter((kind, name) for kind, name, _ in ran.invoked) <= read, where
        assert all((kind, name) in ALLOWED for kind, name, _ in ran.invoked), where
        assert all(_as_read(reading.actions, *invoked) for invoked in ran.invoked), where
    else:
        assert _refused_as_read(reading), where
    return reading.outcome, ran.names


def _as_read(actions: list[McpAction], kind: str, name: str, arguments: dict[str, Any]) -> bool:
    """A tool ran with the arguments Mandate's `when` saw for it (so list_issues for acme only)."""
    if kind != "tool":
        return True
    seen = [action.arguments for action in actions if (action.kind, action.name) == (kind, name)]
    same = any(all(read.get(key) == value for key, value in arguments.items()) for read in seen)
    return same and (name != "list_issues" or arguments["repo"].startswith("acme/"))


def _refused_as_read(reading: Reading) -> bool:
    """A 400, or a 403 for the path, or one that names an action Mandate read."""
    verdict = reading.decision.verdict
    if verdict.status == 400 or (verdict.status == 403 and verdict.reason == "path_outside_target"):
        return True
    named = [repr(action.name) for action in reading.actions or () if action.name]
    return verdict.status == 403 and any(name in verdict.message for name in named)


# --- the adversarial cases, one by one ------------------------------------------------------

ME = '{"name":"get_me"}'
CREATE = '{"name":"create_issue","arguments":{"repo":"acme/x","title":"t"}}'
GET_ME = legacy(rpc(ME))
MODERN_CREATE = modern(rpc(enveloped(CREATE)), "tools/call", "create_issue")
BATCH = f"[{rpc(ME)},{rpc(CREATE, request_id='2')}]"
ALLOW, DUPLICATE, NOT_JSON, NOT_JSONRPC = "allow", "400 duplicate_json_key", "400 invalid_json", "400 invalid_jsonrpc"
BAD_PARAMS, MISMATCH, NO_TOOL = "400 invalid_params", "400 mcp_header_mismatch", "403 tool_not_allowed"
NOTHING, RUNS_ME, RUNS_CREATE, RUNS_TRIAGE = [], ["tool get_me"], ["tool create_issue"], ["prompt triage"]
README = "repo://acme/readme"

# name: (request, Mandate's decision, what the SDK runs if the request reaches it). The same in the
# stateful and the stateless app (each request in a live session).
CASES: dict[str, tuple[Request, str, list[str]]] = {
    # escapes: both readers undo them before a name is compared
    "escaped method": (legacy(rpc(ME, r'"tools\u002fcall"')), ALLOW, RUNS_ME),
    "escaped method, refused tool": (legacy(rpc(CREATE, r'"tools\u002fcall"')), NO_TOOL, RUNS_CREATE),
    "escaped tool name": (legacy(rpc(CREATE.replace("create", r"\u0063reate"))), NO_TOOL, RUNS_CREATE),
    "escaped allowed name": (legacy(rpc(r'{"name":"get\u005fme"}')), ALLOW, RUNS_ME),
    "escaped key": (legacy(rpc(r'{"n\u0061me":"get_me"}')), ALLOW, RUNS_ME),
    # a key given twice: the SDK takes the last, Mandate refuses
    "id twice": (legacy(rpc(ME, extra=',"id":2')), DUPLICATE, RUNS_ME),
    "method twice": (legacy(rpc(CREATE, '"ping","method":"tools/call"')), DUPLICATE, RUNS_CREATE),
    "params twice": (legacy(rpc(ME, extra=f',"params":{CREATE}')), DUPLICATE, RUNS_CREATE),
    "params.name twice": (legacy(rpc('{"name":"get_me",' + CREATE[1:])), DUPLICATE, RUNS_CREATE),
    "params.name twice, once escaped": (legacy(rpc(r'{"name":"get_me","n\u0061' + CREATE[4:])), DUPLICATE, RUNS_CREATE),
    "params.name twice, 2026-07-28": (
        modern(rpc(enveloped('{"name":"get_me",' + CREATE[1:])), "tools/call", "create_issue"),
        DUPLICATE,
        RUNS_CREATE,
    ),
    "an argument twice, past the when": (
        legacy(rpc('{"name":"list_issues","arguments":{"repo":"acme/x","repo":"evil/x"}}')),
        DUPLICATE,
        ["tool list_issues"],
    ),
    "_meta twice": (modern(rpc(enveloped('{"name":"get_me","_meta":{}}')), "tools/call", "get_me"), DUPLICATE, RUNS_ME),
    "ref.name twice": (
        legacy(
            rpc(
                '{"ref":{"type":"ref/prompt","name":"triage","name":"evil"},"argument":{"name":"a","value":"b"}}',
                '"completion/complete"',
            )
        ),
        DUPLICATE,
        ["prompt evil"],
    ),
    # names that are not the allowed one, however close
    "NUL in the name": (legacy(rpc(r'{"name":"get_me\u0000"}')), NO_TOOL, NOTHING),
    "NUL, then another name": (legacy(rpc(r'{"name":"get_me\u0000create_issue"}')), NO_TOOL, NOTHING),
    "lone surrogate": (legacy(rpc(r'{"name":"get_me\ud800"}')), NOT_JSON, NOTHING),
    "lone surrogate, 2026-07-28": (modern(rpc(enveloped(r'{"name":"get_me\ud800"}')), "tools/call"), NOT_JSON, NOTHING),
    "surrogate as bytes, 2026-07-28": (
        modern(rpc(enveloped('{"name":"get_me\udc80"}')), "tools/call"),
        NOT_JSON,
        NOTHING,
    ),
    "fullwidth letters": (legacy(rpc('{"name":"\uff47\uff45\uff54_\uff4d\uff45"}')), NO_TOOL, NOTHING),
    "other case": (legacy(rpc('{"name":"GET_ME"}')), NO_TOOL, NOTHING),
    "trailing space": (legacy(rpc('{"name":"get_me "}')), NO_TOOL, NOTHING),
    # names, methods and ids of other types
    "number as name": (legacy(rpc('{"name":5}')), BAD_PARAMS, NOTHING),
    "list as name": (legacy(rpc('{"name":["get_me"]}')), BAD_PARAMS, NOTHING),
    "null as name": (legacy(rpc('{"name":null}')), BAD_PARAMS, NOTHING),
    "number as method": (legacy(rpc(ME, "5")), NOT_JSONRPC, NOTHING),
    "null as method": (legacy(rpc(ME, "null")), NOT_JSONRPC, NOTHING),
    "list as method": (legacy(rpc(ME, '["tools/call"]')), NOT_JSONRPC, NOTHING),
    "method with a space": (legacy(rpc(ME, '"tools/call "')), "403 method_not_allowed", NOTHING),
    "params as a list": (legacy(rpc('["get_me"]')), BAD_PARAMS, NOTHING),
    "arguments as a list": (legacy(rpc('{"name":"get_me","arguments":["x"]}')), BAD_PARAMS, NOTHING),
    "true as id (to the SDK a notification)": (legacy(rpc(CREATE, request_id="true")), NOT_JSONRPC, NOTHING),
    "1.0 as id": (legacy(rpc(CREATE, request_id="1.0")), NOT_JSONRPC, NOTHING),
    "object as id": (legacy(rpc(CREATE, request_id="{}")), NOT_JSONRPC, NOTHING),
    "null as id (to both a notification)": (legacy(rpc(CREATE, request_id="null")), NO_TOOL, NOTHING),
    "id past 64 bits": (legacy(rpc(ME, request_id=str(2**64))), NOT_JSONRPC, RUNS_ME),
    "empty string as id": (legacy(rpc(ME, request_id='""')), ALLOW, RUNS_ME),
    "a notification calling a tool": (
        legacy(f'{{"jsonrpc":"2.0","method":"tools/call","params":{CREATE}}}'),
        NO_TOOL,
        NOTHING,
    ),
    'jsonrpc "1.0"': (legacy(rpc().replace('"2.0"', '"1.0"')), NOT_JSONRPC, NOTHING),
    "jsonrpc as a number": (legacy(rpc().replace('"2.0"', "2.0")), NOT_JSONRPC, NOTHING),
    # members a reader must not take for the name
    "a name outside params": (legacy(rpc(ME, extra=',"name":"create_issue"')), ALLOW, RUNS_ME),
    "a name in _meta": (legacy(rpc('{"name":"get_me","_meta":{"name":"create_issue"}}')), ALLOW, RUNS_ME),
    "a request with a result": (legacy(rpc(CREATE, extra=',"result":{}')), NOT_JSONRPC, RUNS_CREATE),
    "a request with an error": (legacy(rpc(CREATE, extra=',"error":{"code":1,"message":"x"}')), NOT_JSONRPC, NOTHING),
    "a response posted back": (legacy('{"jsonrpc":"2.0","id":1,"result":{"name":"create_issue"}}'), ALLOW, NOTHING),
    "an error posted back": (legacy('{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"no"}}'), ALLOW, NOTHING),
    # the 2026-07-28 envelope
    "envelope of another version": (
        modern(rpc(f'{{"name":"get_me","_meta":{json.dumps(OLD_ENVELOPE)}}}'), "tools/call", "get_me"),
        ALLOW,
        NOTHING,
    ),
    "envelope in a session": (legacy(modern(rpc(enveloped(ME)), None).body), ALLOW, RUNS_ME),
    "envelope missing": (modern(rpc(ME), "tools/call", "get_me"), ALLOW, NOTHING),
    "_meta not an object": (legacy(rpc('{"name":"get_me","_meta":"x"}')), ALLOW, NOTHING),
    "progress token true": (legacy(rpc('{"name":"get_me","_meta":{"progressToken":true}}')), ALLOW, RUNS_ME),
    "unknown protocol version": (legacy(rpc(), ("mcp-protocol-version", "2099-01-01")), ALLOW, NOTHING),
    # batches: Mandate reads every element; this SDK runs none
    "batch mixing calls": (legacy(BATCH), NO_TOOL, NOTHING),
    "batch of an allowed call": (legacy(f"[{rpc()}]"), ALLOW, NOTHING),
    "batch after 2025-03-26": (legacy(BATCH, ("mcp-protocol-version", "2025-06-18")), "400 batch_not_allowed", NOTHING),
    "batch, 2026-07-28": (modern(BATCH, None), "400 batch_not_allowed", NOTHING),
    "empty batch": (legacy("[]"), "400 empty_batch", NOTHING),
    # routing headers: the session era ignores them, so Mandate must read the body
    "Mcp-Method disagreeing, session era": (legacy(rpc(CREATE), ("mcp-method", "tools/list")), MISMATCH, RUNS_CREATE),
    "Mcp-Name disagreeing, session era": (legacy(rpc(CREATE), ("mcp-name", "get_me")), MISMATCH, RUNS_CREATE),
    "Mcp-Name disagreeing, 2026-07-28": (modern(rpc(enveloped(CREATE)), "tools/call", "get_me"), MISMATCH, NOTHING),
    "Mcp-Method disagreeing, 2026-07-28": (
        modern(rpc(enveloped(CREATE)), "tools/list", "create_issue"),
        MISMATCH,
        NOTHING,
    ),
    "Mcp-Name in base64": (
        modern(rpc(enveloped(ME)), "tools/call", None, ("mcp-name", "=?base64?Z2V0X21l?=")),
        ALLOW,
        RUNS_ME,
    ),
    "Mcp-Name twice": (
        modern(rpc(enveloped(CREATE)), "tools/call", "create_issue", ("mcp-name", "get_me")),
        MISMATCH,
        NOTHING,
    ),
    "Mcp-Name in base64, not canonical": (
        modern(rpc(enveloped(ME)), "tools/call", None, ("mcp-name", "=?base64?Z2V0X21l=?=")),
        "400 invalid_header",
        NOTHING,
    ),
    # framing
    "BOM": (legacy(b"\xef\xbb\xbf" + GET_ME.body), NOT_JSON, NOTHING),
    "BOM, 2026-07-28": (Request(b"\xef\xbb\xbf" + MODERN_CREATE.body, MODERN_CREATE.headers), NOT_JSON, RUNS_CREATE),
    "UTF-16, 2026-07-28": (
        Request(MODERN_CREATE.body.decode().encode("utf-16-le"), MODERN_CREATE.headers),
        NOT_JSON,
        RUNS_CREATE,
    ),
    "trailing garbage": (legacy(GET_ME.body + b"x"), NOT_JSON, NOTHING),
    "two documents": (legacy(GET_ME.body + MODERN_CREATE.body), NOT_JSON, NOTHING),
    "NaN among the arguments": (legacy(rpc('{"name":"get_me","arguments":{"x":NaN}}')), NOT_JSON, RUNS_ME),
    # HTTP: the SDK reads JSON-RPC from a POST to /mcp with a JSON Content-Type only
    "GET with a body": (Request(MODERN_CREATE.body, [("accept", "text/event-stream")], "GET"), ALLOW, NOTHING),
    "DELETE with a body": (Request(MODERN_CREATE.body, [("accept", ACCEPT)], "DELETE"), ALLOW, NOTHING),
    "PUT": (Request(MODERN_CREATE.body, MODERN_CREATE.headers, "PUT"), "400 unsupported_http_method", NOTHING),
    "lower-case post": (Request(GET_ME.body, GET_ME.headers, "post"), ALLOW, NOTHING),
    "percent-encoded path": (Request(GET_ME.body, GET_ME.headers, path="/%6Dcp"), ALLOW, RUNS_ME),
    "trailing slash": (Request(GET_ME.body, GET_ME.headers, path="/mcp/"), ALLOW, NOTHING),
    "double slash": (Request(GET_ME.body, GET_ME.headers, path="//mcp"), ALLOW, NOTHING),
    "dot segments": (Request(GET_ME.body, GET_ME.headers, path="/x/../mcp"), ALLOW, NOTHING),
    "other case path": (Request(GET_ME.body, GET_ME.headers, path="/MCP"), "403 path_outside_target", NOTHING),
    "query": (Request(GET_ME.body, GET_ME.headers, path="/mcp?name=create_issue"), ALLOW, RUNS_ME),
    "text/plain": (Request(GET_ME.body, [("content-type", "text/plain"), *GET_ME.headers[1:]]), ALLOW, NOTHING),
    "text/plain, 2026-07-28": (
        Request(MODERN_CREATE.body, [("content-type", "text/plain"), *MODERN_CREATE.headers[1:]]),
        NO_TOOL,
        NOTHING,
    ),
    # a completion names the prompt or resource it completes
    "completion of the allowed prompt": (completion({"type": "ref/prompt", "name": "triage"}), ALLOW, RUNS_TRIAGE),
    "completion of another prompt": (
        completion({"type": "ref/prompt", "name": "evil"}),
        "403 prompt_not_allowed",
        ["prompt evil"],
    ),
    "completion of a resource": (
        completion({"type": "ref/resource", "uri": "repo://evil/{x}"}),
        "403 resource_not_allowed",
        ["resource repo://evil/{x}"],
    ),
    "completion ref without a type": (completion({"name": "triage"}), BAD_PARAMS, NOTHING),
    "completion ref with a name and a uri": (
        completion({"type": "ref/resource", "name": "triage", "uri": "repo://evil/{x}"}),
        "403 resource_not_allowed",
        ["resource repo://evil/{x}"],
    ),
    "resource": (
        modern(rpc(enveloped(f'{{"uri":"{README}"}}'), '"resources/read"'), "resources/read", README),
        ALLOW,
        [f"resource {README}"],
    ),
    "resource, spelled otherwise": (
        legacy(rpc('{"uri":"repo://acme/%72eadme"}', '"resources/read"')),
        "403 resource_not_allowed",
        NOTHING,
    ),
}


@pytest.mark.parametrize(("request_", "mandate", "sdk_runs"), CASES.values(), ids=CASES.keys())
def test_what_the_sdk_does(authorizer, sdk, request_, mandate, sdk_runs):
    """Each hostile request: Mandate's decision, and what the SDK runs if it gets the request
    anyway. Wherever the SDK would run other than what Mandate allows, Mandate refuses."""
    assert check(authorizer, sdk, request_) == (mandate, sdk_runs)


# --- generated requests ---------------------------------------------------------------------

CALLS = [  # (method, the params member that names what it acts on)
    *[("tools/call", "name")] * 5,
    *[("prompts/get", "name")] * 2,
    *[("resources/read", "uri")] * 2,
    *[("completion/complete", "ref")] * 2,
    ("tools/list", None),
    ("initialize", None),
    ("ping", None),
    ("notifications/initialized", None),
    ("logging/setLevel", None),
    ("resources/subscribe", "uri"),
]
USUAL = {  # what a client usually names with each method: mostly what the policy allows
    "tools/call": ["get_me", "get_me", "list_issues", "list_issues", "create_issue"],
    "prompts/get": ["triage", "triage", "evil"],
    "ref/prompt": ["triage", "triage", "evil"],
    "resources/read": ["repo://acme/readme", "repo://acme/readme", "repo://evil/x"],
    "ref/resource": ["repo://acme/readme", "repo://evil/{x}"],
}
USUAL_ARGUMENTS = {
    "list_issues": [{"repo": "acme/x"}, {"repo": "evil/x"}],
    "create_issue": [{"repo": "acme/x", "title": "t"}],
}
NAMES = st.sampled_from(
    [
        "get_me",
        "list_issues",
        "create_issue",
        "triage",
        "evil",
        "repo://acme/readme",
        "repo://evil/x",
        "GET_ME",
        "get_me ",
        "get_me\x00",
        "get_me\ud800",
        "\uff47et_me",
        "get\u00adme",
        "",
        "repo://acme/%72eadme",
        "tools/call",
    ]
) | st.text(alphabet="get_mcria\x00\ud800\u00e9/", max_size=4)
ARGUMENTS = st.sampled_from([{}, {"repo": "acme/x"}, {"repo": "evil/x"}, {"repo": "acme/x", "title": "t"}])
OTHER = {  # what a member may be replaced with, or repeated with
    "jsonrpc": st.sampled_from(["1.0", 2.0, None, "2.0 "]),
    "id": st.sampled_from([-1, None, True, 1.5, 1.0, 2**63, 2**64, [1], {}, "1"]),
    "method": st.sampled_from(
        [
            "tools/call",
            "ping",
            "Tools/Call",
            "tools/call ",
            "tools/call\x00",
            "tools\\call",
            "notifications/x",
            5,
            None,
            ["tools/call"],
            {"name": "tools/call"},
        ]
    ),
    "params": st.sampled_from([None, ["get_me"], "x", {"name": "create_issue"}, Members([("name", "get_me")])]),
    "name": NAMES | st.sampled_from([5, None, ["get_me"], {"name": "get_me"}, True]),
    "arguments": ARGUMENTS
    | st.sampled_from(
        [None, ["acme/x"], "acme/x", {"repo": 5}, {"repo": ["acme/x"]}, Members([("repo", "acme/x"), ("repo", "x/y")])]
    ),
    "_meta": st.sampled_from(
        [ENVELOPE, OLD_ENVELOPE, {"progressToken": True}, {"name": "create_issue"}, "x", None, {}]
    ),
    "result": st.sampled_from([{}, {"name": "create_issue"}, 5]),
    "error": st.sampled_from([{"code": 1, "message": "x"}, "x"]),
}
OTHER["uri"] = OTHER["ref"] = OTHER["name"]
OTHER_CONTENT_TYPES = ["text/plain", "application/json;charset=utf-8", "APPLICATION/JSON", "application/json-x"]
OTHER_PATHS = ["/%6Dcp", "/mcp/", "//mcp", "/mcp?x=1", "/MCP", "/x/../mcp"]
ESCAPABLE = ["tools/call", "get_me", "create_issue", "name", "method", "params", "uri", "repo", "acme/x", "triage"]
ROUTING = [
    ("mcp-method", "tools/call"),
    ("mcp-method", "tools/list"),
    ("mcp-name", "get_me"),
    ("mcp-name", "create_issue"),
]


def _named(method: str) -> st.SearchStrategy[str]:
    """A name or URI for `method`: mostly a usual one, else any of NAMES."""
    return st.one_of(*[st.sampled_from(USUAL.get(method, ["get_me"]))] * 3, NAMES)


def _bends(draw: st.DrawFn, bends: list[str]) -> list[str]:
    """None of `bends` half the time, else one or two of them."""
    return draw(st.lists(st.sampled_from(bends), max_size=draw(st.sampled_from([0, 0, 1, 2]))))


@st.composite
def messages(draw: st.DrawFn, modern_era: bool) -> Members:
    """A JSON-RPC message as a client writes one, then perhaps bent: a member repeated (with another
    value), replaced by another value or type, dropped or added, or the members reordered."""
    method, subject = draw(st.sampled_from(CALLS))
    params = Members()
    if subject == "ref":
        ref_type = draw(st.sampled_from(["ref/prompt", "ref/resource"]))
        ref = Members([("type", ref_type), ("name" if ref_type == "ref/prompt" else "uri", draw(_named(ref_type)))])
        params += [("ref", ref), ("argument", {"name": "issue", "value": "x"})]
    elif subject:
        params.append((subject, draw(_named(method))))
        usual = USUAL_ARGUMENTS.get(params[0][1], []) if method == "tools/call" else []
        params += [("arguments", draw(st.sampled_from(usual) | ARGUMENTS))] if usual else []
    params += [("_meta", ENVELOPE)] if modern_era else []
    message = Members([("jsonrpc", "2.0"), *([] if method.startswith("notifications/") else [("id", 1)])])
    message += [("method", method), ("params", params)]
    for bend in _bends(draw, ["repeat", "repeat", "replace", "drop", "add", "reorder"]):
        inner = draw(st.sampled_from([message, params])) if params else message
        key = draw(st.sampled_from([key for key, _ in inner] or ["name"]))
        if bend == "repeat":
            inner.insert(draw(st.integers(0, len(inner))), (key, draw(OTHER.get(key, NAMES))))
        elif bend == "replace":
            inner[:] = [(k, draw(OTHER.get(k, NAMES)) if k == key else v) for k, v in inner]
        elif bend == "drop":
            inner[:] = [(k, v) for k, v in inner if k != key]
        elif bend == "add":
            added = draw(st.sampled_from(["result", "error", "name", "_meta"] if inner is message else ["name", "uri"]))
            inner.append((added, draw(OTHER[added])))
        else:
            inner[:] = draw(st.permutations(inner))
    return message


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """A POST as a client of either era writes it, then perhaps bent: a batch, escapes, raw UTF-8,
    a BOM or trailing bytes, routing headers that disagree, another version, verb, path, media type
    or no session."""
    modern_era = draw(st.integers(1, 3)) == 1
    message = draw(messages(modern_era))
    bends = _bends(
        draw,
        [
            "escape",
            "raw utf-8",
            "batch",
            "bom",
            "trailing",
            "routing headers",
            "routing headers",
            "version",
            "verb",
            "path",
            "content-type",
            "accept",
            "no session",
        ],
    )
    sent = [message, *draw(st.lists(messages(modern_era), max_size=2))] if "batch" in bends else message
    escaped = frozenset(draw(st.lists(st.sampled_from(ESCAPABLE), min_size=1, max_size=3))) if "escape" in bends else ()
    body = ("\ufeff" if "bom" in bends else "") + to_json(sent, frozenset(escaped), "raw utf-8" not in bends)
    body += draw(st.sampled_from(["x", "\n", "{}", " []"])) if "trailing" in bends else ""
    version = MODERN if modern_era else None
    if "version" in bends:
        version = draw(st.sampled_from([None, *HANDSHAKE_VERSIONS, MODERN, "2099-01-01", ""]))
    method = _member(message, "method")
    name = _member(_member(message, "params"), "uri" if method in ("resources/read", "resources/subscribe") else "name")
    routing = [("mcp-method", method), ("mcp-name", name)] if modern_era else []
    if "routing headers" in bends:
        routing = draw(st.lists(st.sampled_from([("mcp-method", method), ("mcp-name", name), *ROUTING]), max_size=3))
    headers = legacy(b"").headers + ([("mcp-protocol-version", version)] if version is not None else [])
    headers += [(name, _header_value(value, draw(st.booleans()))) for name, value in routing if isinstance(value, str)]
    if "content-type" in bends:
        headers[0] = ("content-type", draw(st.sampled_from(OTHER_CONTENT_TYPES)))
    if "accept" in bends:
        headers[1] = ("accept", draw(st.sampled_from(["application/json", "text/event-stream", "*/*"])))
    verb = draw(st.sampled_from(["GET", "DELETE", "PUT", "post", "HEAD"])) if "verb" in bends else "POST"
    path = draw(st.sampled_from(OTHER_PATHS)) if "path" in bends else "/mcp"
    return Request(body.encode("utf-8", "surrogatepass"), headers, verb, path, session="no session" not in bends)


def _member(message: Any, key: str) -> Any:
    return next((value for name, value in message if name == key), None) if isinstance(message, Members) else None


def _header_value(name: str, base64: bool) -> str:
    """`name` as a client sends it in an Mcp-* header: plain when it may be, else `=?base64?...?=`
    (its UTF-8 bytes, lone surrogates and all)."""
    with contextlib.suppress(UnicodeEncodeError):
        return encode_header_value(name) if not base64 else f"=?base64?{b64encode(name.encode()).decode()}?="
    return f"=?base64?{b64encode(name.encode('utf-8', 'surrogatepass')).decode()}?="


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(request_=requests())
def test_mandate_reads_what_the_sdk_runs(authorizer, sdk, request_):
    """Generated requests, hostile ones included: whatever the SDK runs, Mandate read and allowed."""
    outcome, ran = check(authorizer, sdk, request_)
    ran_text = ascii(", ".join(ran))[1:-1][:60]  # names may hold lone surrogates
    event(f"Mandate: {outcome.split()[-1]}; the SDK ran: {ran_text or 'nothing'}")
