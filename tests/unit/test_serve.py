"""`mandate serve` in-process: gRPC Check and health on one port, metrics on another, reload."""

from __future__ import annotations

import logging
import shutil
import socket
import time
import urllib.request

import grpc
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.check import pipeline
from authz.cli import build_parser
from authz.serve.service import AUTHORIZATION_SERVICE, MandateServer, ServeOptions
from tests.harness.example_policies import EXAMPLES, GITHUB_HOST, SUPPORT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLES, policies)
    port, metrics_port = free_port(), free_port()
    server = MandateServer(ServeOptions(str(policies), f"127.0.0.1:{port}", f"127.0.0.1:{metrics_port}"))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel, metrics_port, policies
    channel.close()
    server.stop(0)


def check(channel, tool: str) -> external_auth_pb2.CheckResponse:
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.principal = SUPPORT
    http = request.attributes.request.http
    http.method, http.path, http.host = "POST", "/mcp", GITHUB_HOST
    http.raw_body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool}})
    return external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5)


def metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_health_is_serving_once_started(served):
    _, channel, _, _ = served
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", AUTHORIZATION_SERVICE):
        assert (
            stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_check_over_grpc_and_metrics(served):
    _, channel, metrics_port, _ = served
    assert check(channel, "get_me").HasField("ok_response")
    assert check(channel, "create_issue").denied_response.status.code == 403
    text = metrics_text(metrics_port)
    assert 'mandate_decisions_total{reason="allowed",result="allow"} 1.0' in text
    assert 'mandate_decisions_total{reason="tool_not_allowed",result="deny"} 1.0' in text
    assert 'mandate_check_duration_seconds_bucket{le="1e-05"}' in text
    assert "mandate_policy_info{version=" in text
    for path, status in (("/healthz", 200), ("/readyz", 200)):
        assert urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}", timeout=5).status == status


def wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_reload_applies_a_good_set_and_keeps_the_last_good_one(served):
    _, channel, metrics_port, policies = served
    agents = policies / "agents.yaml"
    original = agents.read_text()
    agents.write_text(
        original.replace(
            "tools: [get_me, list_issues, get_issue]", "tools: [get_me, list_issues, get_issue, create_issue]"
        )
    )
    assert wait_for(lambda: check(channel, "create_issue").HasField("ok_response"), 2.5)
    agents.write_text(original.replace("server: github", "server: gitlab"))  # invalid: dangling target
    assert wait_for(lambda: 'mandate_policy_reloads_total{result="rejected"} 1.0' in metrics_text(metrics_port), 2.5)
    assert check(channel, "create_issue").HasField("ok_response")  # still the last good set
    dangling = original.count("server: github")  # one error per rule now naming gitlab
    assert dangling >= 2 and f"mandate_policy_errors {float(dangling)}" in metrics_text(metrics_port)


def test_serve_help_shows_the_default_addresses(monkeypatch, capsys):
    for name in ("MANDATE_LISTEN", "MANDATE_METRICS_LISTEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    assert "gRPC address (default 0.0.0.0:9191)" in text and "(default 0.0.0.0:9090)" in text


def test_stop_is_logged_once(served, caplog):
    server, _, _, _ = served
    with caplog.at_level(logging.INFO, logger="mandate"):
        server.stop(0)
    stopped = [record for record in caplog.records if "mandate stopped" in record.getMessage()]
    assert len(stopped) == 1 and stopped[0].levelno == logging.INFO


def test_the_first_log_line_says_whether_the_request_path_is_compiled(tmp_path, caplog):
    """An operator must see at once that a pod runs the slow, uncompiled path."""
    with caplog.at_level(logging.INFO, logger="mandate"):
        server = MandateServer(ServeOptions(str(EXAMPLES), f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"))
    first = caplog.records[0].getMessage()
    assert first.startswith("mandate ") and "request path " in first
    assert ("compiled" if pipeline.__file__.endswith(".so") else "interpreted") in first
    server.chain_store.close()
