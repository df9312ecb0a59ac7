"""A2A classification: both JSON-RPC generations, HTTP+JSON routes, the agent card (SPEC §4).

tests/unit/test_a2a_dispatch.py holds the same reading against the real a2a-sdk apps."""

from __future__ import annotations

from unittest.mock import MagicMock

import orjson
import pytest
from a2a.server.request_handlers import RequestHandler
from a2a.server.routes import create_rest_routes
from starlette.routing import Mount, Route, compile_path

from authz.check.classify import MalformedRequest, classify
from authz.check.decision import Refusal
from authz.check.protocols.a2a import (
    REST_V03_ROUTES,
    REST_V1_ROUTES,
    V03_METHODS,
    V1_METHODS,
    A2aRouter,
    UnsupportedBinding,
    classify_a2a,
    routed_path,
    starlette_pattern,
    to_v1_method,
)
from authz.check.protocols.jsonrpc import Malformed
from authz.check.request import AuthzInput
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import BILLING_HOST, SUPPORT
from tests.harness.upstreams.a2a_agent import endpoint_method

SDK = A2aRouter()  # the a2a-sdk's defaults: JSON-RPC at `/`, REST at the root, the well-known card


def rpc(method: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": "r1", "method": method, "params": {}})


@pytest.mark.parametrize("method", V1_METHODS)
def test_v1_names(method):
    (action,) = classify_a2a("POST", "/", rpc(method), "application/json", SDK)
    assert (action.method, action.binding, action.id) == (method, "jsonrpc", "r1")


@pytest.mark.parametrize(("old", "new"), sorted(V03_METHODS.items()))
def test_v03_names_map_to_v1(old, new):
    (action,) = classify_a2a("POST", "/", rpc(old), "application/json", SDK)
    assert (action.method, action.wire_method) == (new, old)


def test_unknown_method_is_kept_empty_for_the_decision_to_refuse():
    (action,) = classify_a2a("POST", "/", rpc("tasks/delete_everything"), "application/json", SDK)
    assert action.method == "" and action.binding == "jsonrpc"
    assert to_v1_method("sendmessage") is None


@pytest.mark.parametrize(
    "path", ["/.well-known/agent-card.json", "/.well-known/agent.json", "/t1/.well-known/agent-card.json"]
)
def test_agent_card(path):
    (action,) = classify_a2a("GET", path, b"", "", SDK)
    assert action.is_card


@pytest.mark.parametrize(
    ("verb", "path", "method"),
    [
        ("POST", "/message:send", "SendMessage"),
        ("POST", "/tenant-a/message:stream", "SendStreamingMessage"),
        ("GET", "/tasks/abc", "GetTask"),
        ("GET", "/tasks", "ListTasks"),
        ("POST", "/tasks/abc:cancel", "CancelTask"),
        ("GET", "/tasks/abc:subscribe", "SubscribeToTask"),
        ("POST", "/tasks/abc/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
        ("GET", "/tasks/abc/pushNotificationConfigs", "ListTaskPushNotificationConfigs"),
        ("GET", "/tasks/abc/pushNotificationConfigs/c1", "GetTaskPushNotificationConfig"),
        ("DELETE", "/tasks/abc/pushNotificationConfigs/c1", "DeleteTaskPushNotificationConfig"),
        ("GET", "/extendedAgentCard", "GetExtendedAgentCard"),
        ("POST", "/v1/message:send", "SendMessage"),
        ("GET", "/v1/card", "GetExtendedAgentCard"),
        # Starlette's `{id}` and `{tenant}` are `[^/]+`: a colon is part of them.
        ("POST", "/t:x/tasks/task-1:cancel", "CancelTask"),
        ("POST", "/tasks/task:1:cancel", "CancelTask"),
        ("POST", "/tasks/a:cancel:subscribe", "SubscribeToTask"),
        ("POST", "/t:x/tasks/task-1/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
        ("GET", "/t:x/tasks/task-1:cancel", "GetTask"),  # no GET `:cancel` route: `/tasks/{id}`, id `task-1:cancel`
        ("GET", "/v1/tasks", "ListTasks"),  # not a v0.3 route: the tenant mount, tenant `v1`
        ("POST", "/tasks/tasks/pushNotificationConfigs/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
    ],
)
def test_http_json_binding(verb, path, method):
    (action,) = classify_a2a(verb, path, b'{"message":{}}' if verb == "POST" else b"", "application/json", SDK)
    assert (action.method, action.binding) == (method, "http+json")


def test_rest_body_hygiene_still_applies():
    with pytest.raises(Malformed) as caught:
        classify_a2a("POST", "/message:send", b'{"a":1,"a":2}', "application/json", SDK)
    assert caught.value.reason == "duplicate_json_key"


@pytest.mark.parametrize(
    ("verb", "path", "content_type"),
    [
        ("PUT", "/", "application/json"),
        ("GET", "/", ""),
        ("POST", "/a2a.v1.A2AService/SendMessage", "application/grpc"),
        ("POST", "/", "application/grpc"),
    ],
)
def test_other_bindings(verb, path, content_type):
    with pytest.raises(UnsupportedBinding):
        classify_a2a(verb, path, b"\x00\x00", content_type, SDK)


@pytest.mark.parametrize(
    ("verb", "path"),
    [
        ("POST", "/a2a"),  # JSON-RPC is served at `/` only: a POST elsewhere is not read from its body
        ("POST", "/t:x"),
        ("POST", "/tasks/task-1"),  # `/tasks/{id}` is GET only, and the tenant mount has no `/{id}` route
        ("POST", "/tasks/:cancel"),  # an empty id: no route
        ("PUT", "/tasks/task-1:cancel"),
        ("DELETE", "/v1/card"),
        ("GET", "/card"),  # v0.3's card is `/v1/card` only, never under a tenant
        ("GET", "/t1/v1/card"),
        ("GET", "/t:x/v1/tasks"),  # the mount takes one segment: `/v1/tasks` is no v1.0 route
        ("GET", "/tasks/"),  # Starlette redirects a trailing slash; it does not dispatch it
        ("POST", "/tasks/task-1:cancel/"),
        ("HEAD", "/tasks/task-1"),  # Starlette runs GetTask for it; Mandate does not read HEAD as GET
    ],
)
def test_a_path_no_route_places_is_refused_whatever_the_body_says(verb, path):
    with pytest.raises(UnsupportedBinding):
        classify_a2a(verb, path, rpc("GetTask"), "application/json", SDK)


def test_the_route_table_is_the_sdks():
    """Mandate's routes are `create_rest_routes(enable_v0_3_compat=True)`'s, in order, and the
    `/{tenant}` mount holds exactly the v1.0 ones."""
    routes = create_rest_routes(MagicMock(spec=RequestHandler), enable_v0_3_compat=True)

    def table(routes):
        return [
            (verb, route.path, endpoint_method(route.endpoint))
            for route in routes
            if isinstance(route, Route)
            for verb in sorted(route.methods - {"HEAD"})
        ]  # Starlette adds HEAD to every GET route

    top = table(routes)
    (mount,) = [route for route in routes if isinstance(route, Mount)]
    mounted = table(mount.routes)
    assert top == [*REST_V03_ROUTES, *REST_V1_ROUTES]
    assert (mount.path, mounted) == ("/{tenant}", list(REST_V1_ROUTES))


@pytest.mark.parametrize("prefix", ["", "/api", "/t:x/v1", "/v1"])
def test_the_prefixed_route_tables_are_the_sdks(prefix):
    """`path_prefix` goes before every route, v0.3's and v1.0's, and inside the tenant mount too
    (`/{tenant}{prefix}/tasks`): Mandate's compiled patterns are Starlette's for the SDK's paths."""
    routes = create_rest_routes(MagicMock(spec=RequestHandler), enable_v0_3_compat=True, path_prefix=prefix)
    router = A2aRouter(rest_prefix=prefix)

    def compiled(routes):
        table: dict[str, list[tuple[str, str]]] = {}
        for route in routes:
            if isinstance(route, Route):
                for verb in sorted(route.methods - {"HEAD"}):
                    table.setdefault(verb, []).append((route.path_regex.pattern, endpoint_method(route.endpoint)))
        return table

    def mandates(table):
        return {verb: [(pattern.pattern, method) for pattern, method in rows] for verb, rows in table.items()}

    (mount,) = [route for route in routes if isinstance(route, Mount)]
    assert mandates(router.top_routes) == compiled(routes)
    assert mandates(router.tenant_routes) == compiled(mount.routes)
    assert mount.path == "/{tenant}"


TEMPLATES = [*(path for _, path, _ in (*REST_V03_ROUTES, *REST_V1_ROUTES)), "/{tenant}/{path:path}"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_patterns_are_starlettes(template):
    assert starlette_pattern(template).pattern == compile_path(template)[0].pattern


def test_the_tenant_mount_answers_with_its_own_routes_only():
    assert SDK.rest_method("GET", "/t/tasks/x") == "GetTask"
    assert SDK.rest_method("GET", "/t/u/tasks/x") is None
    assert SDK.rest_method("DELETE", "/tasks/x/pushNotificationConfigs/y") == "DeleteTaskPushNotificationConfig"
    assert SDK.rest_method("DELETE", "/v1/tasks/x/pushNotificationConfigs/y") == "DeleteTaskPushNotificationConfig"


@pytest.mark.parametrize(
    ("raw", "routed"),
    [
        ("/tasks/a%3Ab:cancel?x=1", "/tasks/a:b:cancel"),
        ("/tasks/abc/pushNotificationConfigs/..", "/tasks/abc/pushNotificationConfigs/.."),
        ("//message:send", "//message:send"),
        ("/", "/"),
    ],
)
def test_routed_path_decodes_once_and_resolves_nothing(raw, routed):
    assert routed_path(raw) == routed


def test_batches_and_responses_are_not_a2a():
    with pytest.raises(Malformed):
        classify_a2a("POST", "/", b"[" + rpc("SendMessage") + b"]", "application/json", SDK)
    with pytest.raises(Malformed):
        classify_a2a("POST", "/", b'{"jsonrpc":"2.0","id":1,"result":{}}', "application/json", SDK)


@pytest.mark.parametrize(
    "path", ["/tasks/abc/pushNotificationConfigs/..", "/./message:send", "//message:send", "/x/../", "/tasks/%2e%2e"]
)
def test_an_agent_path_that_normalisation_changes_is_ambiguous(example_policy, path):
    """The agent's router resolves no dot segment and merges no slash: Mandate would read another path."""
    with pytest.raises(MalformedRequest) as refused:
        classify(example_policy, AuthzInput("POST", path, BILLING_HOST, {}, rpc("GetTask"), SUPPORT))
    assert (refused.value.verdict.status, refused.value.verdict.reason) == (400, "ambiguous_path")
    assert refused.value.jsonrpc_ids == ("r1",)


SERVED = A2aRouter("/a2a", "/api", "/agent/card.json")  # rpc_url, path_prefix, card_url as an app may choose


@pytest.mark.parametrize(
    ("verb", "path", "expected"),
    [
        ("POST", "/a2a", ("jsonrpc", "GetTask")),
        ("POST", "/api/message:send", ("http+json", "SendMessage")),
        ("POST", "/t:x/api/tasks/task-1:cancel", ("http+json", "CancelTask")),  # the mount, then the prefix
        ("POST", "/api/v1/tasks/task-1:cancel", ("http+json", "CancelTask")),
        ("GET", "/api/v1/card", ("http+json", "GetExtendedAgentCard")),
        ("GET", "/agent/card.json", ("card", "")),
        ("GET", "/.well-known/agent-card.json", ("card", "")),  # no route ends so: the SDK 404s it
    ],
)
def test_declared_paths_place_each_binding(verb, path, expected):
    (action,) = classify_a2a(verb, path, rpc("GetTask") if verb == "POST" else b"", "application/json", SERVED)
    assert (action.binding, action.method) == expected


@pytest.mark.parametrize(
    ("verb", "path"),
    [
        ("POST", "/"),  # the default endpoint is not this agent's: one JSON-RPC path per agent
        ("POST", "/a2a/"),
        ("POST", "/api"),
        ("POST", "/message:send"),  # the routes are under `/api` now
        ("POST", "/api/t:x/tasks/task-1:cancel"),  # the tenant goes before the prefix, never after
        ("POST", "/t:x/tasks/task-1:cancel"),
        ("GET", "/t:x/api/v1/card"),  # the mount holds v1.0's routes only
        ("POST", "/agent/card.json"),
    ],
)
def test_a_post_off_the_declared_paths_is_unsupported(verb, path):
    with pytest.raises(UnsupportedBinding):
        classify_a2a(verb, path, rpc("GetTask"), "application/json", SERVED)


def test_classify_reads_the_agents_own_declaration(write_policies):
    profile = """
        apiVersion: mandate.dev/v1alpha1
        kind: MissionProfile
        metadata: {name: billing-agent}
        spec:
          principals: [spiffe://cluster.local/ns/billing/sa/billing-agent]
          hosts: [billing-agent.billing.svc.cluster.local]
          mission: bills
          a2a: {jsonrpcPath: /a2a, restPrefix: /api, cardPath: /agent/card.json}
    """
    policy = compile_directory(write_policies(p=profile))
    assert policy.targets["billing-agent"].a2a == SERVED

    def binding(path):
        try:
            classified = classify(policy, AuthzInput("POST", path, BILLING_HOST, {}, rpc("GetTask"), SUPPORT))
        except Refusal as refusal:
            return refusal.verdict.reason
        return classified.actions[0].binding

    assert [binding(path) for path in ("/a2a", "/", "/api/message:send")] == [
        "jsonrpc",
        "unsupported_binding",
        "http+json",
    ]
