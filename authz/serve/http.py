"""The metrics port's small HTTP server: /metrics, /healthz and /readyz."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from authz.serve.grpc_server import listen_error, split_address


def serve_http(
    address: str,
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    before_scrape: Callable[[], object] = lambda: None,
) -> ThreadingHTTPServer:
    """Start /metrics, /healthz and /readyz on `address` (host:port) in a daemon thread;
    `before_scrape` brings the metrics up to date (the recorder's flush). A busy port is a
    ListenError: http.server sets SO_REUSEADDR only, which Linux refuses beside a listener."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                before_scrape()
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._reply(200, b"ok\n")
            elif path == "/readyz":
                ok = ready()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"policies not loaded\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are not audit events

    try:
        server = ThreadingHTTPServer(split_address(address, "metrics"), Handler)
    except OSError as exc:
        raise listen_error(address, "metrics", exc) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
