"""Mandate reads what the upstream runs: a differential test against the real a2a-sdk 1.3 apps.

Each request goes to the SDK's own Starlette app (card route, JSON-RPC endpoint and the REST
routes, both with v0.3 compatibility on, listed as `add_a2a_routes_to_fastapi` lists them), driven
the way uvicorn drives it (the path percent-decoded once, nothing else resolved), and to Mandate's
`classify`. The app is built at the SDK's default paths, and again at other `rpc_url`,
`path_prefix` and `card_url` values, each against Mandate given the same `spec.a2a` declaration. The app logs which
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
import shutil
from collections.abc import Iterator
from pathlib import Path
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

from authz.check.classify import classify
from authz.check.decision import Refusal
from authz.check.protocols.a2a import V03_METHODS, V1_METHODS, A2aRouter
from authz.check.request import AuthzInput
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import BILLING_HOST, EXAMPLES, SUPPORT
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
    """The SDK's apps, at the paths `router` declares, with every handler method logged; `send`
    answers (routed, ran)."""

    def __init__(self, router: A2aRouter) -> None:
        self.handler = RecordingHandler()
        self.handler.ran = []
        self.routed: list[str] = []
        routes = [
            *create_agent_card_routes(EchoAgent("sdk-agent").card(), card_url=router.card_path),
            *create_jsonrpc_routes(self.handler, rpc_url=router.jsonrpc_path, enable_v0_3_compat=True),
            *create_rest_routes(self.handler, enable_v0_3_compat=True, path_prefix=router.rest_prefix),
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
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "http",
            "method": method,
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
            "server": ("billing-agent", 80),
            "client": ("127.0.0.1", 40000),
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
    agent = SdkAgent(A2aRouter())
    yield agent
    agent.close()


# Apps served off the SDK's defaults, each chosen to crowd the routes it has to stay clear of:
# segments shared with v0.3's `/v1`, the `/{tenant}` mount's two segments, a trailing slash, `:`.
SERVED = {
    "a2a-api": A2aRouter("/a2a", "/api", "/agent/card.json"),
    "nested": A2aRouter("/t:x/rpc/", "/t:x/v1", "/.well-known/agent.json"),
    "v1": A2aRouter("/v1", "/v1", "/v1/card.json"),
    "root-rest": A2aRouter("/rpc", "", "/card"),
}


def declared_policy(directory: Path, router: A2aRouter) -> PolicySet:
    """The example policies, billing-agent declaring `router`'s paths as its `spec.a2a`."""
    shutil.copytree(EXAMPLES, directory)
    agents = directory / "agents.yaml"
    hosts = "  hosts: [billing-agent.billing.svc.cluster.local]\n"
    declaration = (
        f'  a2a: {{jsonrpcPath: "{router.jsonrpc_path}", restPrefix: "{router.rest_prefix}", '
        f'cardPath: "{router.card_path}"}}\n'
    )
    assert hosts in agents.read_text()
    agents.write_text(agents.read_text().replace(hosts, hosts + declaration))
    policy = compile_directory(directory)
    assert policy.targets["billing-agent"].a2a == router
    return policy


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[PolicySet, SdkAgent]]]:
    """Per declaration: Mandate's policy and the SDK app built with the same paths."""
    agents = {
        name: (declared_policy(tmp_path_factory.mktemp(name) / "policies", router), SdkAgent(router))
        for name, router in SERVED.items()
    }
    yield agents
    for _, agent in agents.values():
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
        (
            "POST",
            "/tasks/tasks/pushNotificationConfigs/pushNotificationConfigs",
            b"{}",
            ("http+json", "CreateTaskPushNotificationConfig"),
        ),
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


@pytest.mark.parametrize(
    ("name", "verb", "path", "body", "expected"),
    [
        ("a2a-api", "POST", "/a2a", GET_TASK, ("jsonrpc", "GetTask")),
        ("a2a-api", "POST", "/a2a?x=1", rpc("tasks/cancel", id="task-1"), ("jsonrpc", "CancelTask")),
        ("a2a-api", "POST", "/", GET_TASK, None),  # the SDK's default endpoint is not this app's
        ("a2a-api", "POST", "/a2a/", GET_TASK, None),  # a slash redirect
        ("a2a-api", "POST", "/%61%32a", GET_TASK, ("jsonrpc", "GetTask")),  # uvicorn decodes it to `/a2a`
        ("a2a-api", "POST", "/api/t:x/tasks/task-1:cancel", GET_TASK, None),
        ("a2a-api", "POST", "/t:x/api/tasks/task-1:cancel", GET_TASK, ("http+json", "CancelTask")),
        ("a2a-api", "POST", "/message:send", GET_TASK, None),
        ("a2a-api", "POST", "/api/message:send", GET_TASK, ("http+json", "SendMessage")),
        ("a2a-api", "GET", "/api/v1/card", b"", ("http+json", "GetExtendedAgentCard")),
        ("a2a-api", "GET", "/agent/card.json", b"", ("card", "")),
        ("a2a-api", "GET", "/agent/card.json/", b"", None),
        ("a2a-api", "GET", "/.well-known/agent-card.json", b"", ("card", "")),  # 404: a card read, harmless
        ("nested", "POST", "/t:x/rpc/", GET_TASK, ("jsonrpc", "GetTask")),
        ("nested", "POST", "/t:x/rpc", GET_TASK, None),
        ("nested", "POST", "/t:x/v1/message:send", GET_TASK, ("http+json", "SendMessage")),
        ("nested", "POST", "/t:x/v1/v1/message:send", GET_TASK, ("http+json", "SendMessage")),  # v0.3's
        ("nested", "POST", "/t:x/t:x/v1/tasks/a:cancel", GET_TASK, ("http+json", "CancelTask")),  # the mount
        ("nested", "GET", "/.well-known/agent.json", b"", ("card", "")),
        ("v1", "POST", "/v1", GET_TASK, ("jsonrpc", "GetTask")),
        ("v1", "POST", "/v1/message:send", GET_TASK, ("http+json", "SendMessage")),
        ("v1", "POST", "/v1/v1/message:send", GET_TASK, ("http+json", "SendMessage")),
        ("v1", "GET", "/v1/v1/card", b"", ("http+json", "GetExtendedAgentCard")),
        ("v1", "GET", "/v1/card.json", b"", ("card", "")),
        ("root-rest", "POST", "/rpc", GET_TASK, ("jsonrpc", "GetTask")),
        ("root-rest", "POST", "/", GET_TASK, None),
        ("root-rest", "GET", "/card", b"", ("card", "")),
        ("root-rest", "GET", "/v1/card", b"", ("http+json", "GetExtendedAgentCard")),
    ],
)
def test_declared_paths_against_the_sdk_built_with_them(served, name, verb, path, body, expected):
    policy, agent = served[name]
    assert check(policy, agent, verb, path, body) == expected


def test_the_sdk_serves_json_rpc_at_its_rpc_url_only(served):
    """The premise of one JSON-RPC path per agent: the SDK's endpoint is `rpc_url`, nothing else."""
    _, agent = served["a2a-api"]
    version = {"a2a-version": "1.0"}
    assert agent.send("POST", "/a2a", version, GET_TASK) == (["jsonrpc"], ["GetTask"])
    assert agent.send("POST", "/", version, GET_TASK) == ([], [])


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
        "tasks",
        "task-1",
        "task:1",
        "t:x",
        "task-1:cancel",
        "task:1:cancel",
        "x:subscribe",
        ":cancel",
        ":subscribe",
        "message:send",
        "message:stream",
        "message",
        "pushNotificationConfigs",
        "c1",
        "v1",
        "card",
        "extendedAgentCard",
        ".well-known",
        "agent-card.json",
        "agent.json",
        ".",
        "..",
        "",
        "%3A",
        "%3Acancel",
        "task%3A1%3Acancel",
        "%74asks",
        "message%3Asend",
        "a%2Fb",
        "%2e%2e",
        "tasks:cancel",
        "%20",
        "a%ZZ",
    ]
) | st.text(alphabet="at:.%-_3A", min_size=1, max_size=6)
# The SDK's REST route templates (v1.0 and v0.3) and their verbs, relative to `path_prefix`.
REST_TEMPLATES = [
    ("POST", "/message:send"),
    ("POST", "/message:stream"),
    ("POST", "/tasks/{id}:cancel"),
    ("GET", "/tasks/{id}:subscribe"),
    ("POST", "/tasks/{id}:subscribe"),
    ("GET", "/tasks/{id}"),
    ("GET", "/tasks/{id}/pushNotificationConfigs/{id}"),
    ("DELETE", "/tasks/{id}/pushNotificationConfigs/{id}"),
    ("POST", "/tasks/{id}/pushNotificationConfigs"),
    ("GET", "/tasks/{id}/pushNotificationConfigs"),
    ("GET", "/tasks"),
    ("GET", "/extendedAgentCard"),
    ("GET", "/card"),
]
IDS = st.sampled_from(
    [
        "task-1",
        "task:1",
        "t:x",
        ":",
        "::",
        "a:cancel",
        "a:subscribe",
        ":cancel",
        "task%3A1%3Acancel",
        "%3A",
        "v1",
        "tasks",
        "card",
        "pushNotificationConfigs",
        "message:send",
        "%74asks",
        ".",
        "..",
        "%2e",
        "a%2Fb",
        "a b",
        "%C3%A9",
    ]
) | st.text(alphabet="at:.-_", min_size=1, max_size=5)
PREFIXES = ["", "", "", "/t:x", "/t:x", "/v1", "/v1", "/t1", "/%3A", "/v1/t1", "/t:x/v1", "/."]


def requests_for(router: A2aRouter) -> st.SearchStrategy[tuple[str, str]]:
    """(verb, path) for an app served as `router` declares: mostly built the way its routes are,
    at its prefix or at the root, its JSON-RPC and card paths and the SDK's defaults too, behind a
    tenant-like prefix or none; else free-form paths of hostile and declared segments."""
    routes = st.sampled_from([(verb, router.rest_prefix + path) for verb, path in REST_TEMPLATES])
    if router.rest_prefix:
        routes |= st.sampled_from(REST_TEMPLATES)
    served = st.sampled_from(
        [
            ("POST", router.jsonrpc_path),
            ("GET", router.card_path),
            ("POST", "/"),
            ("GET", "/.well-known/agent-card.json"),
        ]
    )
    declared = sorted(
        {
            part
            for path in (router.jsonrpc_path, router.rest_prefix, router.card_path)
            for part in path.split("/")
            if part
        }
    )
    prefixes = [*PREFIXES, router.rest_prefix, router.jsonrpc_path.rstrip("/")]
    segments = SEGMENTS | st.sampled_from(declared) if declared else SEGMENTS
    free_form = st.builds(
        lambda segments, slash, query: "/" + "/".join(segments) + slash + query,
        st.lists(segments, max_size=6),
        st.sampled_from(["", "", "/"]),
        st.sampled_from(["", "", "?tenant=x"]),
    )
    rest_shaped = _shaped(routes, prefixes)
    return st.one_of(
        rest_shaped, rest_shaped, _shaped(served, ["", "", "", "", "", *prefixes]), st.tuples(VERBS, free_form)
    )


def _shaped(routes: st.SearchStrategy[tuple[str, str]], prefixes: list[str]) -> st.SearchStrategy[tuple[str, str]]:
    """Requests on `routes`, mostly with the route's own verb so most reach a route; the other verbs
    probe the 405s and the mount that takes a path its top-level route refused."""
    return st.builds(
        _route_shaped,
        routes,
        st.sampled_from(prefixes),
        st.lists(IDS, min_size=2, max_size=2),
        st.sampled_from([None] * 6 + ["GET", "POST", "DELETE", "PUT", "HEAD"]),
        st.sampled_from(["", "", "", "/", "?tenant=x"]),
    )


def _route_shaped(route: tuple[str, str], prefix: str, ids: list[str], verb: str | None, tail: str) -> tuple[str, str]:
    """One request built on a route: behind `prefix`, each `{id}` a hostile segment, the verb the
    route's unless another is drawn."""
    path = prefix + route[1]
    for segment in ids:
        path = path.replace("{id}", segment, 1)
    return verb or route[0], path + tail


REQUESTS = requests_for(A2aRouter())
SERVED_REQUESTS = {name: requests_for(router) for name, router in SERVED.items()}
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


@pytest.mark.parametrize("name", SERVED)
@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data(), body=BODIES, version=st.sampled_from(["1.0", "0.3", ""]))
def test_mandate_reads_what_an_sdk_served_elsewhere_runs(served, name, data, body, version):
    """Generated paths, at and around the declared ones, never read as what the SDK does not run."""
    policy, agent = served[name]
    request = data.draw(SERVED_REQUESTS[name], label="request")
    read = check(policy, agent, *request, body, version)
    event(f"Mandate: {read[0] if read else 'refused'}; SDK routed: {agent.routed[0] if agent.routed else 'nothing'}")
