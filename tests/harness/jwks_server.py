"""A JWKS served over real HTTPS (a certificate of the tests' own PKI), as an identity provider
publishes one: the document and its `cache-control` can change while it runs, every GET is
counted, and it can be told to redirect or to hang."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness.pki import CertPair


class JwksServer:
    def __init__(self, server_cert: CertPair, document: bytes, cache_control: str = "max-age=300") -> None:
        self.document = document
        self.cache_control = cache_control
        self.redirect_to = ""  # answer 302 to this location instead
        self.hang = threading.Event()  # set: hold every answer until released
        self.release = threading.Event()
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                if owner.hang.is_set():
                    owner.release.wait(30)
                if owner.redirect_to:
                    self.send_response(302)
                    self.send_header("location", owner.redirect_to)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", owner.cache_control)
                self.send_header("content-length", str(len(owner.document)))
                self.end_headers()
                self.wfile.write(owner.document)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(server_cert.cert), str(server_cert.key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="jwks-server", daemon=True)

    @property
    def uri(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def start(self) -> JwksServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
