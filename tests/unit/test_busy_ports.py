"""A port already in use is a one-line error and a non-zero exit, never a port silently shared.

Before, every server set SO_REUSEPORT, so a second `mandate serve` on a busy gRPC port started
without a word and the kernel split Envoy's connections between the old policy and the new.
Only a `--workers` supervisor's own children may share a port (tests/unit/test_workers.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.busy_ports import assert_refused, assert_still_serving, serve_again
from tests.harness.example_policies import EXAMPLES
from tests.harness.processes import MandateProcess, free_port


@pytest.fixture
def running(tmp_path: Path) -> Iterator[MandateProcess]:
    process = MandateProcess(EXAMPLES, tmp_path / "first").start()
    yield process
    process.stop()


def test_a_second_server_on_the_grpc_port_is_refused(running: MandateProcess) -> None:
    code, stderr = serve_again(
        "--listen", f"127.0.0.1:{running.grpc_port}", "--metrics-listen", f"127.0.0.1:{free_port()}"
    )
    assert_refused(code, stderr, running.grpc_port)
    assert_still_serving(running.grpc_port)


def test_a_second_server_on_the_metrics_port_is_refused(running: MandateProcess) -> None:
    code, stderr = serve_again(
        "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{running.metrics_port}"
    )
    assert_refused(code, stderr, running.metrics_port)
    assert_still_serving(running.grpc_port)
    assert "mandate_decisions_total" in running.metrics_text()


def test_a_supervisor_on_a_served_port_is_refused(running: MandateProcess, tmp_path: Path) -> None:
    """Refused before any worker starts, so the (unreachable) chain store never matters."""
    key = tmp_path / "chain.key"
    key.write_text("00" * 32)
    code, stderr = serve_again(
        "--listen",
        f"127.0.0.1:{running.grpc_port}",
        "--metrics-listen",
        f"127.0.0.1:{free_port()}",
        "--workers",
        "2",
        "--redis",
        "redis://127.0.0.1:1/0",
        "--chain-key",
        str(key),
    )
    assert_refused(code, stderr, running.grpc_port)
    assert_still_serving(running.grpc_port)


def test_a_single_server_logs_its_shutdown(running: MandateProcess) -> None:
    running.stop()
    assert [line for line in running.stderr_tail().splitlines() if "mandate stopped" in line and " INFO " in line]
