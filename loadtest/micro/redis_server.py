"""Redis for the chain-store cases: a throwaway `redis-server`, and two Mandate replicas sharing it.

`local_redis()` is a small copy of the test harness's RedisServer start logic, so that
`loadtest` does not import from `tests/`; `loadtest.run` uses it too.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.policy.compiled import PolicySet


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    """A throwaway `redis-server` on a free loopback port, no persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="mandate-micro-redis-") as workdir:
        port = _free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--logfile",
                str(Path(workdir) / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not answer")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RedisReplicas:
    """Two RedisChainStores sharing one key, as two Mandate replicas would: `measured` serves
    the timed decisions, `other` mints the chains whose first read by `measured` is a miss."""

    def __init__(self, url: str, policy: PolicySet, keys: Any) -> None:
        import redis

        from authz.chains.redis_store import RedisChainStore

        self.measured_store = RedisChainStore(url)
        self.other_store = RedisChainStore(url)
        self.measured_store.start()
        if not self.measured_store.wait_available(10):
            self.close()
            raise RuntimeError(f"Redis at {url} is not available")
        self.keys = keys
        self.measured = Authorizer(policy, chains=ChainStep(self.measured_store, keys))
        self.other = ChainStep(self.other_store, keys)
        self.stats = redis.Redis.from_url(url)

    def close(self) -> None:
        self.measured_store.close()
        self.other_store.close()
        if getattr(self, "stats", None) is not None:
            self.stats.close()
