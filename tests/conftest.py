"""Shared fixtures: the example policy set, a writer for throwaway policy directories, and one
Redis server. Shared helpers that are not fixtures are in tests/harness/, imported from there."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Before the first import of the harness, so its assert_* helpers report like a test's own asserts
pytest.register_assert_rewrite("tests.harness")

from authz.check.pipeline import Authorizer
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import EXAMPLES
from tests.harness.redis import RedisServer

# Every `mandate serve` the tests start inherits this: none binds the admin API's fixed default
# port (127.0.0.1:9192), which two runs on one machine would fight over. Tests of the admin API
# give --admin-listen a free port (MandateProcess's admin_args).
os.environ["MANDATE_ADMIN_LISTEN"] = ""


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
