"""Real upstream servers behind Envoy, each wrapped in a `RequestRecorder`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.harness.processes import ThreadedUvicorn
from tests.harness.upstreams.recorder import RequestRecorder, SeenRequest

__all__ = ["RequestRecorder", "SeenRequest", "Upstream", "serve_upstream"]


@dataclass
class Upstream:
    """A running upstream and the log of requests that reached it."""

    name: str
    recorder: RequestRecorder
    server: ThreadedUvicorn

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        self.server.stop()


def serve_upstream(name: str, app: Any) -> Upstream:
    """Start `app` (ASGI) behind a RequestRecorder on a kernel-chosen port."""
    recorder = RequestRecorder(app)
    return Upstream(name, recorder, ThreadedUvicorn(recorder, name).start())
