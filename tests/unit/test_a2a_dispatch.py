"""Mandate reads what the upstream runs: a differential test against the real a2a-sdk 1.3 apps.

Each request goes to the SDK's own Starlette app (card route, JSON-RPC endpoint at `/` and the
REST routes, both with v0.3 compatibility on), driven the way uvicorn drives it (the path
percent-decoded once, nothing else resolved), and to Mandate's `classify`. The app logs which
route its router handed the request to and which handler method ran. Mandate must refuse the
request (400, or 403 `unsupported_binding`) or name exactly what the SDK ran:

- http+json: the router's route serves that method;
- jsonrpc: the router picked the JSON-RPC endpoint, and the handler ran that method or none;
- card: nothing but the card route (or no route at all) ran.

So a path Mandate places, the SDK places the same way, and a path the SDK does not dispatch
(404, 405, slash redirect) Mandate does not allow as anything but the agent card.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from a2a.server.request_handlers import RequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.utils.errors import TaskNotFoundError
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from authz.classify import classify
from authz.policy.compiler import PolicySet
from authz.protocols.a2a import V03_METHODS, V1_METHODS
from authz.request import AuthzInput
from authz.verdict import Refusal
from tests.conftest import BILLING_HOST, SUPPORT
from tests.harness.upstreams.a2a_agent import EchoAgent, record_dispatch

HANDLER_METHODS = {
    "on_message_send": "SendMessage",
    "on_message_send_stream": "SendStreamingMessage",
    "on_get_task": "GetTask",
    "on_list_tasks": "ListTasks",
    "on_cancel_task": "CancelTask",
    "on_subscribe_to_task": "SubscribeToTask",
    "on_create_task_push_notification_config": "CreateTaskPushNotificationConfig",
    "on_get_task_push_notification_config": "GetTaskPushNotificationConfig",
    "on_list_task_push_notification_configs": "ListTaskPushNotificationConfigs",
    "on_delete_task_push_notification_config": "DeleteTaskPushNotificationConfig",
    "on_get_extended_agent_card": "GetExtendedAgentCard",
}


def _recorded(method: str) -> Any:
    # A plain function, so the call is logged whether the SDK awaits it or iterates it (streams).
    def run(self: Any, *_args: Any, **_kwargs: Any) -> Any:
        self.ran.append(method)
        raise TaskNotFoundError()

    return run


RecordingHandler: Any = type(
    "RecordingHandler", (RequestHandler,), {name: _recorded(method) for name, method in HANDLER_METHODS.items()}
)


class SdkAgent:
    """The SDK's apps with every handler method logged; `send` answers (routed, ran)."""

    def __init__(self) -> None:
        self.handler = RecordingHandler()
        self.handler.ran = []
        self.routed: list[str] = []
        routes = [
            *create_agent_card_routes(EchoAgent("sdk-agent").card()),
            *create_jsonrpc_routes(self.handler, rpc_url="/", enable_v0_3_compat=True),
            *create_rest_routes(self.handler, enable_v0_3_compat=True),
        ]
        record_dispatch(routes, self.routed)
        self.app = Starlette(routes=routes)
        self.loop = asyncio.new_event_loop()

    def send(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[list[str], list[str]]:
        self.routed.clear()
        self.handler.ran = []
        self.loop.run_until_complete(asyncio.wait_for(self._call(method, raw_path, headers, body), 10))
        return list(self.routed), list(self.handler.ran)

    async def _call(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> None:
        path, _, query = raw_path.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http", "method": method,
            "path": unquote(path), "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
            "server": ("billing-agent", 80), "client": ("127.0.0.1", 40000),
        }  # what uvicorn builds: `path` is the raw path percent-decoded once, `.`, `..` and `//` kept
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive() -> dict[str, Any]:
            return next(messages, {"type": "http.disconnect"})

        async def send(_message: dict[str, Any]) -> None:
            return None

        with contextlib.suppress(Exception):  # the handler's TaskNotFoundError may surface: what ran is logged
            await self.app(scope, receive, send)

    def close(self) -> None:
        pending = asyncio.all_tasks(self.loop)  # sse-starlette's shutdown watcher, started by the streams
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(_settle(pending))
        self.loop.close()


async def _settle(tasks: set[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="module")
def sdk() -> Iterator[SdkAgent]:
    agent = SdkAgent()
    yield agent
    agent.close()


def mandate_reads(
    policy: PolicySet, method: str, raw_path: str, headers: dict[str, str], body: bytes
) -> tuple[str, str] | None:
    """(binding, method) Mandate decided on, or None when it refused the request as it should."""
    try:
        classified = classify(policy, AuthzInput(method, raw_path, BILLING_HOST, dict(headers), body, SUPPORT))
    except Refusal as refusal:
        verdict = refusal.verdict
        assert verdict.status == 400 or verdict.reason == "unsupported_binding", verdict
        return None
    (action,) = classified.actions
    return action.binding, action.method  # type: ignore[union-attr]


def check(
    policy: PolicySet, sdk: SdkAgent, method: str, raw_path: str, body: bytes = b"", version: str = "1.0"
) -> tuple[str, str] | None:
    """Send one request to both; assert the SDK runs what Mandate read, and answer Mandate's reading."""
    headers = {"content-type": "application/json", **({"a2a-version": version} if version else {})}
    read = mandate_reads(policy, method, raw_path, headers, body)
    routed, ran = sdk.send(method, raw_path, headers, body)
    where = f"{method} {raw_path} {body[:80]!r}: Mandate read {read}, the SDK routed to {routed} and ran {ran}"
    if read is None:
        return None
    binding, a2a_method = read
    if binding == "card":
        assert routed in ([], ["card"]) and ran == [], where
    elif binding == "http+json":
        assert routed == [a2a_method] and ran in ([], [a2a_method]), where
    else:
        assert binding == "jsonrpc" and routed == ["jsonrpc"] and ran in ([], [a2a_method]), where
    return read


def rpc(method: str, **params: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})


GET_TASK = rpc("GetTask", id="task-1")
PUSH = orjson.dumps(
    {"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": "task-1"}, "url": "https://evil.example/hook"}
)


@pytest.mark.parametrize(
    ("verb", "path", "body", "expected"),
    [
        # The red-team finding: `:` in the tenant or the task id, body saying GetTask.
        ("POST", "/t:x/tasks/task-1:cancel", GET_TASK, ("http+json", "CancelTask")),
        ("POST", "/tasks/task:1:cancel", GET_TASK, ("http+json", "CancelTask")),
        ("POST", "/t:x/tasks/task-1/pushNotificationConfigs", PUSH, ("http+json", "CreateTaskPushNotificationConfig")),
        ("POST", "/t:x/message:send", GET_TASK, ("http+json", "SendMessage")),
        ("GET", "/t:x/tasks/task-1:cancel", b"", ("http+json", "GetTask")),  # `/tasks/{id}`, id `task-1:cancel`
        ("POST", "/tasks/a:subscribe:cancel", b"{}", ("http+json", "CancelTask")),
        ("POST", "/tasks/a:cancel:subscribe", b"{}", ("http+json", "SubscribeToTask")),
        ("POST", "/tasks/:cancel:cancel", b"{}", ("http+json", "CancelTask")),
        ("POST", "/tasks/%3Acancel", b"{}", None),  # decodes to `/tasks/:cancel`: the id would be empty, no route
        ("POST", "/tasks/task%3A1%3Acancel", GET_TASK, ("http+json", "CancelTask")),
        ("POST", "/%74asks/task-1:cancel", GET_TASK, ("http+json", "CancelTask")),
        # v0.3's `/v1/...`, and the tenant mount that also claims `v1`.
        ("POST", "/v1/tasks/task-1:cancel", GET_TASK, ("http+json", "CancelTask")),
        ("GET", "/v1/card", b"", ("http+json", "GetExtendedAgentCard")),
        ("GET", "/v1/tasks", b"", ("http+json", "ListTasks")),
        ("DELETE", "/v1/tasks/a/pushNotificationConfigs/b", b"", ("http+json", "DeleteTaskPushNotificationConfig")),
        ("GET", "/t1/v1/card", b"", None),
        ("GET", "/card", b"", None),
        # A route whose verb does not match is no route: the mount then claims the path, and 404s.
        ("POST", "/tasks/tasks/pushNotificationConfigs/pushNotificationConfigs", b"{}",
         ("http+json", "CreateTaskPushNotificationConfig")),
        ("POST", "/tasks/task-1", GET_TASK, None),
        ("PUT", "/tasks/task-1:cancel", GET_TASK, None),
        ("HEAD", "/tasks/task-1", b"", None),
        # Trailing slashes and dot segments: Starlette redirects the one and resolves neither.
        ("POST", "/tasks/task-1:cancel/", GET_TASK, None),
        ("GET", "/tasks/", b"", None),
        ("GET", "/tasks/abc/pushNotificationConfigs/..", b"", None),
        ("GET", "/tasks/abc/pushNotificationConfigs/.", b"", None),
        ("GET", "/x/../tasks", b"", None),
        ("POST", "//message:send", GET_TASK, None),
        ("POST", "/tasks/a%2Fb:cancel", GET_TASK, None),
        # JSON-RPC lives at `/` only; a REST body there is not JSON-RPC.
        ("POST", "/", GET_TASK, ("jsonrpc", "GetTask")),
        ("POST", "/", rpc("tasks/cancel", id="task-1"), ("jsonrpc", "CancelTask")),
        ("POST", "/?x=1", rpc("message/send"), ("jsonrpc", "SendMessage")),
        ("POST", "/a2a", GET_TASK, None),
        ("POST", "/v1", GET_TASK, None),
        ("POST", "/t:x", GET_TASK, None),
        ("POST", "/", b'{"message":{"role":"ROLE_USER"}}', None),
        ("GET", "/", b"", None),
        ("POST", "/message:send", GET_TASK, ("http+json", "SendMessage")),  # a JSON-RPC body on a REST path
        ("GET", "/.well-known/agent-card.json", b"", ("card", "")),
        ("GET", "/t1/.well-known/agent-card.json", b"", ("card", "")),  # the SDK 404s it: a card read, harmless
    ],
)
def test_finding_and_adversarial_paths(example_policy, sdk, verb, path, body, expected):
    assert check(example_policy, sdk, verb, path, body) == expected


def test_the_sdk_does_dispatch_what_the_finding_smuggled(sdk):
    """The premise, held against the SDK itself: these paths do run CancelTask and create a push config."""
    version = {"a2a-version": "1.0"}
    assert sdk.send("POST", "/t:x/tasks/task-1:cancel", version, GET_TASK) == (["CancelTask"], ["CancelTask"])
    assert sdk.send("POST", "/tasks/task:1:cancel", version, GET_TASK) == (["CancelTask"], ["CancelTask"])
    routed, _ = sdk.send("POST", "/t:x/tasks/task-1/pushNotificationConfigs", version, PUSH)
    assert routed == ["CreateTaskPushNotificationConfig"]


VERBS = st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD"])
SEGMENTS = st.sampled_from(
    [
        "tasks", "task-1", "task:1", "t:x", "task-1:cancel", "task:1:cancel", "x:subscribe", ":cancel", ":subscribe",
        "message:send", "message:stream", "message", "pushNotificationConfigs", "c1", "v1", "card", "extendedAgentCard",
        ".well-known", "agent-card.json", "agent.json", ".", "..", "", "%3A", "%3Acancel", "task%3A1%3Acancel",
        "%74asks", "message%3Asend", "a%2Fb", "%2e%2e", "tasks:cancel", "%20", "a%ZZ",
    ]
) | st.text(alphabet="at:.%-_3A", min_size=1, max_size=6)
# The SDK's own route templates (v1.0 and v0.3) and their verbs, behind the tenant mount's prefix or none.
TEMPLATES = st.sampled_from(
    [
        ("POST", "/message:send"), ("POST", "/message:stream"), ("POST", "/tasks/{id}:cancel"),
        ("GET", "/tasks/{id}:subscribe"), ("POST", "/tasks/{id}:subscribe"), ("GET", "/tasks/{id}"),
        ("GET", "/tasks/{id}/pushNotificationConfigs/{id}"), ("DELETE", "/tasks/{id}/pushNotificationConfigs/{id}"),
        ("POST", "/tasks/{id}/pushNotificationConfigs"), ("GET", "/tasks/{id}/pushNotificationConfigs"),
        ("GET", "/tasks"), ("GET", "/extendedAgentCard"), ("GET", "/card"), ("POST", "/"),
        ("GET", "/.well-known/agent-card.json"),
    ]
)
IDS = st.sampled_from(
    [
        "task-1", "task:1", "t:x", ":", "::", "a:cancel", "a:subscribe", ":cancel", "task%3A1%3Acancel", "%3A", "v1",
        "tasks", "card", "pushNotificationConfigs", "message:send", "%74asks", ".", "..", "%2e", "a%2Fb", "a b",
        "%C3%A9",
    ]
) | st.text(alphabet="at:.-_", min_size=1, max_size=5)
PREFIXES = st.sampled_from(["", "", "", "/t:x", "/t:x", "/v1", "/v1", "/t1", "/%3A", "/v1/t1", "/t:x/v1", "/."])


@st.composite
def route_shaped(draw: st.DrawFn) -> tuple[str, str]:
    """(verb, path) built the way the SDK's routes are, each `{id}` a hostile segment, the verb mostly the route's."""
    verb, template = draw(TEMPLATES)
    path = draw(PREFIXES) + template
    while "{id}" in path:
        path = path.replace("{id}", draw(IDS), 1)
    verb = draw(st.sampled_from([verb] * 6 + ["GET", "POST", "DELETE", "PUT", "HEAD"]))
    return verb, path + draw(st.sampled_from(["", "", "", "/", "?tenant=x"]))


FREE_FORM = st.builds(
    lambda segments, slash, query: "/" + "/".join(segments) + slash + query,
    st.lists(SEGMENTS, max_size=6),
    st.sampled_from(["", "", "/"]),
    st.sampled_from(["", "", "?tenant=x"]),
)
REQUESTS = st.one_of(route_shaped(), route_shaped(), route_shaped(), st.tuples(VERBS, FREE_FORM))
BODIES = st.one_of(
    st.just(b""),
    st.builds(rpc, st.sampled_from([*V1_METHODS, *V03_METHODS, "tasks/list", "SetTaskPushNotificationConfig", "Nope"])),
    st.sampled_from([b'{"message":{"role":"ROLE_USER","parts":[{"text":"hi"}]}}', b"{}", b"[]", b"not json", PUSH]),
)


@settings(
    max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(request=REQUESTS, body=BODIES, version=st.sampled_from(["1.0", "0.3", ""]))
@example(request=("POST", "/t:x/tasks/task-1:cancel"), body=GET_TASK, version="1.0")
@example(request=("GET", "/tasks/abc/pushNotificationConfigs/.."), body=b"", version="1.0")
def test_mandate_reads_what_the_sdk_runs(example_policy, sdk, request, body, version):
    read = check(example_policy, sdk, *request, body, version)
    event(f"Mandate: {read[0] if read else 'refused'}; SDK routed: {sdk.routed[0] if sdk.routed else 'nothing'}")
