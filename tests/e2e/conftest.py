"""Session fixtures for the end-to-end suite: PKI, policies, `mandate serve`, real upstreams
and one Envoy in front of them. Everything is started once and torn down at session end.

Topology (all 127.0.0.1, ports from the kernel):

    test client --mTLS--> Envoy --ext_authz gRPC--> mandate serve (subprocess)
                            |-- Host github-mcp.tools.svc.cluster.local      --> MCP server
                            |-- Host billing-agent.billing.svc.cluster.local --> A2A echo agent
                            |-- Host status-page.ops.svc.cluster.local       --> HTTP echo
                            `-- any other Host                               --> HTTP echo
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.envoy import EnvoyProcess, mesh_envoy_config
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import BILLING_HOST, GITHUB_HOST, INTERN, NOBODY, STATUS_HOST, SUPPORT, write_policy_set
from tests.harness.processes import MandateProcess
from tests.harness.upstreams import Upstream, a2a_agent, echo, mcp_server, serve_upstream


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> MeshPKI:
    return MeshPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def support_cert(pki: MeshPKI) -> CertPair:
    return pki.client_cert(*SUPPORT)


@pytest.fixture(scope="session")
def intern_cert(pki: MeshPKI) -> CertPair:
    return pki.client_cert(*INTERN)


@pytest.fixture(scope="session")
def nobody_cert(pki: MeshPKI) -> CertPair:
    """A valid mesh identity that no MissionProfile governs."""
    return pki.client_cert(*NOBODY)


@pytest.fixture(scope="session")
def untrusted_cert(pki: MeshPKI) -> CertPair:
    """support-agent's SPIFFE ID, but signed by a CA Envoy does not trust."""
    return pki.client_cert(*SUPPORT, untrusted=True)


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy_set(tmp_path_factory.mktemp("policies"))


@pytest.fixture(scope="session")
def mandate(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MandateProcess]:
    process = MandateProcess(policy_dir, tmp_path_factory.mktemp("mandate")).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def mcp_upstream() -> Iterator[Upstream]:
    upstream = serve_upstream("github-mcp", mcp_server.build_app())
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def billing_agent() -> Iterator[tuple[Upstream, a2a_agent.EchoAgent]]:
    agent = a2a_agent.EchoAgent("billing-agent")
    upstream = serve_upstream("billing-agent", agent.app)
    yield upstream, agent
    upstream.stop()


@pytest.fixture(scope="session")
def a2a_upstream(billing_agent: tuple[Upstream, a2a_agent.EchoAgent]) -> Upstream:
    return billing_agent[0]


@pytest.fixture(scope="session")
def echo_upstream() -> Iterator[Upstream]:
    upstream = serve_upstream("echo", echo.build_app())
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def envoy(
    pki: MeshPKI,
    mandate: MandateProcess,
    mcp_upstream: Upstream,
    billing_agent: tuple[Upstream, a2a_agent.EchoAgent],
    echo_upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EnvoyProcess]:
    a2a, agent = billing_agent
    upstreams = {
        GITHUB_HOST: mcp_upstream.port,
        BILLING_HOST: a2a.port,
        STATUS_HOST: echo_upstream.port,
        "*": echo_upstream.port,
    }
    process = EnvoyProcess(
        mesh_envoy_config(pki, mandate.grpc_port, upstreams), tmp_path_factory.mktemp("envoy")
    ).start()
    agent.public_url = process.url("/")  # the card must send SDK clients back through Envoy
    yield process
    process.stop()


# --- delegation chains: a shared HMAC key (the session redis_server is in tests/conftest.py) ---


@pytest.fixture(scope="session")
def chain_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The key file every Mandate replica in the suite shares (one 256-bit key, hex)."""
    path = tmp_path_factory.mktemp("chain-key") / "chain.key"
    path.write_text(os.urandom(32).hex() + "\n")
    return path
