"""The response path end to end (SPEC §9): a real Envoy 1.40 configured with exactly what
`mandate export envoy` prints, SPIFFE mTLS, `mandate serve`, real MCP servers (the SDK's, in
SSE and JSON response modes, and a hand-written one for the shapes the SDK does not send),
and the real `mcp` client in the legacy and the 2026-07-28 protocol revisions.

Topology (own Mandate and Envoy; the suite's `mandate`/`envoy` fixtures are not used):

    mcp client --mTLS--> Envoy [ext_authz -> composite(ext_proc only if x-mandate-filter)] --> upstream
                           |      \\--Check / Process--> mandate serve
                           |-- catalog-sse.tools...   --> catalog MCP server, SSE answers
                           |-- catalog-json.tools...  --> catalog MCP server, JSON answers
                           |-- catalog-resumable...   --> catalog MCP server, SSE with an event store
                           |-- odd-mcp.tools...       --> hand-written answers (odd_mcp.py)
                           `-- support-agent.support  --> A2A echo agent (mints the delegate's chain)
"""

from __future__ import annotations

import gzip
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import MCPError
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.clients import mcp_client, raw_client, run_async
from tests.harness.envoy import AUTHZ_CLUSTER, EnvoyProcess, mesh_envoy_config
from tests.harness.list_policies import (
    CATALOG_JSON,
    CATALOG_RESUMABLE,
    CATALOG_SSE,
    DELEGATE_SEES,
    INTERN,
    INTERN_SEES,
    ODD,
    ORCHESTRATOR,
    SUPPORT,
    SUPPORT_AGENT_HOST,
    SUPPORT_SEES,
    write_list_policy_set,
)
from tests.harness.pki import CertPair, MeshPKI, spiffe_id
from tests.harness.processes import MandateProcess
from tests.harness.upstreams import Upstream, a2a_agent, mcp_catalog, odd_mcp, serve_upstream

MODES = ["legacy", "2026-07-28"]
HOSTS = {"sse": CATALOG_SSE, "json": CATALOG_JSON}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}


def exported_filters(cluster: str) -> list[dict[str, Any]]:
    """`mandate export envoy --cluster CLUSTER`, run as an operator would; stdout is only the list."""
    done = subprocess.run(
        [*MandateProcess.command(), "export", "envoy", "--cluster", cluster],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    filters = yaml.safe_load(done.stdout)
    assert isinstance(filters, list)
    return filters


@dataclass
class Mesh:
    pki: MeshPKI
    mandate: MandateProcess
    envoy: EnvoyProcess
    hold: mcp_catalog.Hold
    support_agent: Upstream
    catalog: Upstream  # the SSE one
    replay: mcp_catalog.Replay  # the resumable one's stored events

    def cert(self, who: tuple[str, str]) -> CertPair:
        return self.pki.client_cert(*who)


def start_mesh(pki: MeshPKI, policies: Path, workdir: Path, started: list[Any]) -> Mesh:
    hold, replay = mcp_catalog.Hold(), mcp_catalog.Replay()
    upstreams = {
        CATALOG_RESUMABLE: serve_upstream("catalog-resumable", mcp_catalog.build_app(replay=replay)),
        CATALOG_SSE: serve_upstream("catalog-sse", mcp_catalog.build_app(hold=hold)),
        CATALOG_JSON: serve_upstream("catalog-json", mcp_catalog.build_app(json_response=True)),
        ODD: serve_upstream("odd-mcp", odd_mcp.app),
        SUPPORT_AGENT_HOST: serve_upstream("support-agent", a2a_agent.EchoAgent("support-agent").app),
    }
    started += upstreams.values()
    mandate = MandateProcess(policies, workdir / "mandate").start()
    started.append(mandate)
    config = mesh_envoy_config(pki, mandate.grpc_port, {host: u.port for host, u in upstreams.items()})
    config.http_filters = exported_filters(AUTHZ_CLUSTER)
    envoy = EnvoyProcess(config, workdir / "envoy").start()
    started.append(envoy)
    return Mesh(pki, mandate, envoy, hold, upstreams[SUPPORT_AGENT_HOST], upstreams[CATALOG_SSE], replay)


def stop_all(started: list[Any]) -> None:
    for thing in started:
        if isinstance(thing, Upstream):
            thing.server.server.should_exit = True
    for thing in reversed(started):
        thing.stop()


@pytest.fixture(scope="module")
def mesh(pki: MeshPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    started: list[Any] = []
    try:
        workdir = tmp_path_factory.mktemp("lists")
        yield start_mesh(pki, write_list_policy_set(workdir / "policies"), workdir, started)
    finally:
        stop_all(started)


def list_everything(
    mesh: Mesh, who: tuple[str, str], host: str, mode: str, headers: dict[str, str] | None = None
) -> dict[str, list[str]]:
    async def scenario() -> dict[str, list[str]]:
        async with mcp_client(mesh.envoy, mesh.pki, mesh.cert(who), host, mode=mode, headers=headers) as client:
            return {
                "tools": [tool.name for tool in (await client.list_tools()).tools],
                "prompts": [prompt.name for prompt in (await client.list_prompts()).prompts],
                "resources": [str(resource.uri) for resource in (await client.list_resources()).resources],
                "templates": [t.uri_template for t in (await client.list_resource_templates()).resource_templates],
            }

    return run_async(scenario())


def streams_opened(mandate: MandateProcess) -> float:
    for family in text_string_to_metric_families(mandate.metrics_text()):
        for sample in family.samples:
            if sample.name == "mandate_ext_proc_streams_total":
                return sample.value
    return 0.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", list(HOSTS))
@pytest.mark.parametrize(("who", "sees"), [(SUPPORT, SUPPORT_SEES), (INTERN, INTERN_SEES)], ids=["support", "intern"])
def test_each_caller_lists_exactly_what_it_may_call(mesh: Mesh, who, sees, shape: str, mode: str) -> None:
    assert list_everything(mesh, who, HOSTS[shape], mode) == sees


def delegated_token(mesh: Mesh) -> str:
    """orchestrator messages support-agent through Envoy; the chain token its upstream received."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": "hi"}]}},
    }
    mark = mesh.support_agent.recorder.mark()
    headers = {"a2a-version": "1.0", "content-type": "application/json"}
    with raw_client(mesh.envoy, mesh.pki, mesh.cert(ORCHESTRATOR), SUPPORT_AGENT_HOST) as client:
        response = client.post("/", content=json.dumps(body), headers=headers)
    assert response.status_code == 200, response.text
    [[token]] = [seen.header_values("x-delegation-chain") for seen in mesh.support_agent.recorder.since(mark)]
    return token


@pytest.mark.parametrize("mode", MODES)
def test_a_delegate_lists_only_what_its_whole_chain_allows(mesh: Mesh, mode: str) -> None:
    token = delegated_token(mesh)
    headers = {"x-delegation-chain": token}
    assert list_everything(mesh, SUPPORT, CATALOG_SSE, mode, headers) == DELEGATE_SEES
    assert list_everything(mesh, SUPPORT, CATALOG_JSON, mode) == SUPPORT_SEES  # on its own: its own rights


def test_a_forbidden_tool_is_neither_listed_nor_callable(mesh: Mesh) -> None:
    async def scenario() -> tuple[list[str], MCPError]:
        async with mcp_client(mesh.envoy, mesh.pki, mesh.cert(INTERN), CATALOG_SSE, mode="legacy") as client:
            listed = [tool.name for tool in (await client.list_tools()).tools]
            with pytest.raises(MCPError) as refused:
                await client.call_tool("delete_repo", {"repo": "acme/web"})
        return listed, refused.value

    listed, refused = run_async(scenario())
    assert "delete_repo" not in listed
    assert isinstance(refused.data, dict) and refused.data["reason"] == "tool_not_allowed"


@pytest.mark.filterwarnings("ignore:ping is removed")
def test_only_list_requests_open_an_ext_proc_stream(mesh: Mesh) -> None:
    """initialize, notifications, the GET stream, tools/call, ping and DELETE never reach ext_proc:
    the streams opened are exactly the list requests that reached the server (the SDK's
    call_tool lists the tools first, to check the result against the tool's output schema)."""
    before, mark = streams_opened(mesh.mandate), mesh.catalog.recorder.mark()

    async def session() -> None:
        async with mcp_client(mesh.envoy, mesh.pki, mesh.cert(SUPPORT), CATALOG_SSE, mode="legacy") as client:
            await client.call_tool("get_me", {})
            await client.call_tool("get_issue", {})
            await client.send_ping()

    run_async(session())
    with raw_client(mesh.envoy, mesh.pki, mesh.cert(INTERN), ODD) as client:  # intern has no rule for odd
        denied = client.post("/mcp/json", content=json.dumps(LIST_TOOLS), headers={"content-type": "application/json"})
    assert denied.status_code == 403  # a list request Mandate denies opens no stream either
    seen = [(r.method, r.jsonrpc_method) for r in mesh.catalog.recorder.since(mark)]
    lists = [method for _, method in seen if method in ("tools/list", "prompts/list", "resources/list")]
    others = {method for method in seen if method[1] not in lists}
    assert {("POST", "initialize"), ("POST", "tools/call"), ("POST", "ping"), ("DELETE", None)} <= others, seen
    assert streams_opened(mesh.mandate) - before == len(lists), seen


def counter(mandate: MandateProcess, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(mandate.metrics_text()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_each_filtered_list_has_an_audit_line_with_the_decision_id_of_its_request(mesh: Mesh) -> None:
    start = len(mesh.mandate.audit_events())
    filtered = counter(mesh.mandate, "mandate_list_answers_total", method="tools/list", result="filtered")
    removed = counter(mesh.mandate, "mandate_list_entries_removed_total", method="tools/list")
    list_everything(mesh, INTERN, CATALOG_JSON, "2026-07-28")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [e for e in mesh.mandate.audit_events()[start:] if e.get("event") == "list"]
        if len(lines) == 4:
            break
        time.sleep(0.05)
    tools = next(line for line in lines if line["mcp.method.name"] == "tools/list")
    assert (tools["caller"], tools["server"], tools["kept"], tools["removed"]) == (spiffe_id(*INTERN), "catalog", 1, 11)
    decisions = {e["decision_id"]: e for e in mesh.mandate.audit_events() if e.get("event") == "decision"}
    assert decisions[tools["decision_id"]]["mcp.method.name"] == "tools/list"
    assert counter(mesh.mandate, "mandate_list_answers_total", method="tools/list", result="filtered") == filtered + 1
    assert counter(mesh.mandate, "mandate_list_entries_removed_total", method="tools/list") == removed + 11


# --- a resumed stream (MCP "Resumability and Redelivery") ---------------------------------------


def sse_data(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event id, data) of each event that carries data, as the SSE stream delivers them."""
    event_id, data = "", ""
    for line in lines:
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif not line and data:
            yield event_id, data
            event_id, data = "", ""


def test_a_resumed_get_gets_the_stored_list_answer_filtered(mesh: Mesh) -> None:
    """The SDK server with an event store keeps the tools/list answer it sent (the whole catalog)
    and replays it to a GET with Last-Event-ID; Envoy sends that GET's answer through Mandate."""
    version = {"mcp-protocol-version": "2025-11-25", "accept": "application/json, text/event-stream"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    with raw_client(mesh.envoy, mesh.pki, mesh.cert(SUPPORT), CATALOG_RESUMABLE, **version) as client:
        opened = client.post("/mcp", json=initialize)
        assert opened.status_code == 200, opened.text
        session = {"mcp-session-id": opened.headers["mcp-session-id"]}
        client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        listed = client.post("/mcp", json=LIST_TOOLS, headers=session)
        [prime] = [line[3:].strip() for line in listed.text.splitlines() if line.startswith("id:")][:1]
        streams = streams_opened(mesh.mandate)
        resumed = {**session, "last-event-id": prime, "accept": "text/event-stream"}
        with client.stream("GET", "/mcp", headers=resumed) as replayed:
            assert replayed.status_code == 200 and replayed.headers["content-type"].startswith("text/event-stream")
            event_id, data = next(sse_data(replayed.iter_lines()))
    stored = [m for event, _, m in mesh.replay.events if event == event_id and m is not None]
    assert stored and "delete_repo" in stored[0].model_dump_json()  # the server replayed the whole catalog
    answer = json.loads(data)
    assert answer["id"] == 7 and [tool["name"] for tool in answer["result"]["tools"]] == SUPPORT_SEES["tools"]
    assert streams_opened(mesh.mandate) == streams + 1  # the GET's answer went through ext_proc


# --- shapes the SDK server does not send ------------------------------------------------------


def post_list(mesh: Mesh, shape: str, body: object, **headers: str):  # type: ignore[no-untyped-def]
    sent = {"content-type": "application/json", "accept": "application/json, text/event-stream", **headers}
    with raw_client(mesh.envoy, mesh.pki, mesh.cert(SUPPORT), ODD) as client:
        return client.post(f"/mcp/{shape}", content=json.dumps(body), headers=sent)


def test_an_sse_answer_sent_a_byte_at_a_time_is_filtered_and_its_other_events_pass(mesh: Mesh) -> None:
    response = post_list(mesh, "sse-bytes", LIST_TOOLS)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    text = response.content
    assert text.startswith(b"id: prime\r\nretry: 1000\r\ndata: \r\n\r\n" + odd_mcp.NOTIFICATION + b"\r\n\r\n")
    data = text.split(b"\r\n\r\n")[2].split(b"\r\n")[-1].removeprefix(b"data: ")
    assert [tool["name"] for tool in json.loads(data)["result"]["tools"]] == ["get_me", "list_issues"]


def test_a_gzip_answer_is_filtered_and_sent_plain(mesh: Mesh) -> None:
    response = post_list(mesh, "gzip", LIST_TOOLS, **{"accept-encoding": "gzip"})
    assert response.status_code == 200 and "content-encoding" not in response.headers
    assert [tool["name"] for tool in response.json()["result"]["tools"]] == ["get_me", "list_issues"]
    assert gzip  # the upstream compressed it (odd_mcp.py)


def test_a_batch_answer_filters_its_list_answers_only(mesh: Mesh) -> None:
    batch = [
        LIST_TOOLS,
        {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "get_me", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 9, "method": "prompts/list", "params": {}},
    ]
    response = post_list(mesh, "json", batch, **{"mcp-protocol-version": "2025-03-26"})
    tools, call, prompts = response.json()
    assert [tool["name"] for tool in tools["result"]["tools"]] == ["get_me", "list_issues"]
    assert call["result"]["tools"] == [{"name": "delete_repo"}]  # a tools/call result is untouched
    assert [prompt["name"] for prompt in prompts["result"]["prompts"]] == ["triage"]


@pytest.mark.parametrize("shape", ["bad-shape", "html"])
def test_an_answer_mandate_cannot_read_reaches_the_agent_as_an_error(mesh: Mesh, shape: str) -> None:
    response = post_list(mesh, shape, LIST_TOOLS)
    assert b"delete_repo" not in response.content
    if shape == "html":  # refused before the answer's headers went out: Mandate's own status and headers
        assert response.status_code == 502 and response.headers["content-type"] == "application/json"
        assert response.headers["x-mandate-decision-id"]
    error = response.json()
    assert error["id"] == 7 and error["error"]["data"]["reason"] == "list_unreadable"


# --- Mandate gone -------------------------------------------------------------------------------


def test_mandate_stopping_mid_answer_or_down_gives_the_agent_an_error(
    pki: MeshPKI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    started: list[Any] = []
    try:
        workdir = tmp_path_factory.mktemp("lists-down")
        mesh = start_mesh(pki, write_list_policy_set(workdir / "policies"), workdir, started)
        mesh.hold.waiting = True
        outcome: list[object] = []

        async def list_tools() -> object:
            try:
                async with mcp_client(mesh.envoy, pki, mesh.cert(SUPPORT), CATALOG_SSE, mode="2026-07-28") as client:
                    return [tool.name for tool in (await client.list_tools()).tools]
            except Exception as exc:  # noqa: BLE001 - any error will do, never the list
                return exc

        waiting = threading.Thread(target=lambda: outcome.append(run_async(list_tools())))
        waiting.start()
        assert mesh.hold.reached.wait(10), "the list request never reached the server"
        assert mesh.mandate.proc is not None
        mesh.mandate.proc.kill()  # mid-answer: ext_authz has let it through, ext_proc holds its stream
        mesh.mandate.proc.wait()
        mesh.hold.release.set()
        waiting.join(30)
        assert outcome and isinstance(outcome[0], BaseException), outcome
        assert not isinstance(run_async(list_tools()), list)  # and with Mandate down, from the start
    finally:
        stop_all(started)
