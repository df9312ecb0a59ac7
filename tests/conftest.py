"""Shared fixtures: the example policy set, and a writer for throwaway policy directories."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authz.check.pipeline import Authorizer
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from tests.harness.redis import RedisServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "policies"

SUPPORT = "spiffe://cluster.local/ns/support/sa/support-agent"
BILLING = "spiffe://cluster.local/ns/billing/sa/billing-agent"
ORCHESTRATOR = "spiffe://cluster.local/ns/agents/sa/orchestrator"
TRIAGE = "spiffe://cluster.local/ns/triage/sa/labeler"
GITHUB_HOST = "github-mcp.tools.svc.cluster.local"
BILLING_HOST = "billing-agent.billing.svc.cluster.local"


@pytest.fixture(scope="session")
def example_policy() -> PolicySet:
    return compile_directory(EXAMPLES)


@pytest.fixture
def authorizer(example_policy: PolicySet) -> Authorizer:
    return Authorizer(example_policy)


@pytest.fixture
def write_policies(tmp_path: Path) -> Callable[..., Path]:
    """write_policies(a="yaml text", b="...") -> a directory holding a.yaml, b.yaml."""

    def write(**files: str) -> Path:
        directory = tmp_path / "policies"
        directory.mkdir(exist_ok=True)
        for name, text in files.items():
            (directory / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip())
        return directory

    return write


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; a test that stops or pauses it must restore it."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
