"""Mandate down → Envoy fails closed. Uses its own `mandate serve` and its own Envoy, so
stopping Mandate here cannot disturb the session's stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import MCPError

from tests.harness.clients import mcp_client, raw_client, run_async
from tests.harness.envoy import EnvoyProcess, mesh_envoy_config
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import GITHUB_HOST, STATUS_HOST
from tests.harness.processes import MandateProcess
from tests.harness.upstreams import Upstream


@dataclass
class Stack:
    mandate: MandateProcess
    envoy: EnvoyProcess


@pytest.fixture
def isolated_stack(
    pki: MeshPKI, policy_dir: Path, mcp_upstream: Upstream, echo_upstream: Upstream, tmp_path: Path
) -> Iterator[Stack]:
    mandate = MandateProcess(policy_dir, tmp_path / "mandate").start()
    envoy: EnvoyProcess | None = None
    try:
        upstreams = {GITHUB_HOST: mcp_upstream.port, STATUS_HOST: echo_upstream.port}
        envoy = EnvoyProcess(mesh_envoy_config(pki, mandate.grpc_port, upstreams), tmp_path / "envoy").start()
        yield Stack(mandate, envoy)
    finally:
        if envoy is not None:
            envoy.stop()
        mandate.stop()


def test_mandate_down_means_403_and_upstream_untouched(
    isolated_stack: Stack, pki: MeshPKI, support_cert: CertPair, mcp_upstream: Upstream, echo_upstream: Upstream
) -> None:
    envoy = isolated_stack.envoy
    with raw_client(envoy, pki, support_cert, STATUS_HOST) as client:
        assert client.get("/api/health").status_code == 200  # the stack works while Mandate is up

    isolated_stack.mandate.stop()
    assert not isolated_stack.mandate.running
    marks = (mcp_upstream.recorder.mark(), echo_upstream.recorder.mark())

    with raw_client(envoy, pki, support_cert, STATUS_HOST) as client:
        response = client.get("/api/health")
    assert response.status_code == 403
    assert response.content == b""  # Envoy's own fail-closed answer, not a Mandate deny
    assert "x-mandate-decision-id" not in response.headers

    async def scenario() -> MCPError:
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode="2026-07-28") as client:
            with pytest.raises(MCPError) as failed:
                await client.call_tool("get_me", {})
            return failed.value

    error = run_async(scenario())  # an error, promptly: not a hang, not a result
    assert error.code != -32001, "the SDK timed out instead of seeing Envoy's 403"

    assert mcp_upstream.recorder.since(marks[0]) == []
    assert echo_upstream.recorder.since(marks[1]) == []
    assert envoy.stats("http.ingress.ext_authz.error")["http.ingress.ext_authz.error"] >= 2
    failed = envoy.wait_access_log(
        lambda entry: entry["details"] == "ext_authz_error" and entry["status"] == 403, count=2
    )
    assert len(failed) >= 2, failed
