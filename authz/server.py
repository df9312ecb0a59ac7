"""`mandate serve`: Envoy's Authorization service and gRPC health on one port, metrics on another.

The Check handler takes the request as raw bytes and parses it inside the Authorizer, so a
CheckRequest that does not parse still gets a deny with a reason rather than a gRPC error.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .audit import AuditLog, make_logger
from .chain import ChainStep
from .chains.store import open_store
from .chains.tokens import ChainKeys, KeyFileError
from .metrics import Metrics, serve_http
from .pipeline import Authorizer
from .policy.compiler import compile_directory
from .reload import PolicyWatcher

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
log = logging.getLogger("mandate")


@dataclass(frozen=True)
class ServeOptions:
    policies: str
    listen: str = "0.0.0.0:9191"
    metrics_listen: str = "0.0.0.0:9090"
    redis: str | None = None
    chain_key: str | None = None
    chain_store_timeout: float = 0.25
    workers: int = 1
    threads: int = 16


class MandateServer:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.health = health.HealthServicer()
        for service in ("", AUTHORIZATION_SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        policy = compile_directory(options.policies)  # a bad set at start is fatal, with every error
        self.chain_store = open_store(options.redis, options.chain_store_timeout)
        chains = ChainStep(self.chain_store, chain_keys(options))
        self.authorizer = Authorizer(policy, AuditLog(make_logger()), self.metrics, chains)
        self.metrics.serving(policy.version)
        self.watcher = PolicyWatcher(options.policies, self.authorizer, self.metrics)
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="check"),
            options=[("grpc.so_reuseport", 1)],
        )
        self.grpc_server.add_generic_rpc_handlers([self._authorization_handler()])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        self.port = self.grpc_server.add_insecure_port(options.listen)
        self.http = None
        self._stopped = threading.Event()

    def _authorization_handler(self) -> grpc.GenericRpcHandler:
        check = grpc.unary_unary_rpc_method_handler(
            lambda payload, context: self.authorizer.check_bytes(payload),
            request_deserializer=None,  # raw bytes: parsing is the Authorizer's job
            response_serializer=lambda response: response.SerializeToString(),
        )
        return grpc.method_handlers_generic_handler(AUTHORIZATION_SERVICE, {"Check": check})

    def start(self) -> None:
        self.chain_store.start()
        if not self.chain_store.wait_available(2.0):
            log.error("chain store %s not reachable yet: chained calls are denied until it is", self.chain_store.description)
        self.grpc_server.start()
        self.http = serve_http(self.options.metrics_listen, self.metrics, lambda: True)
        for service in ("", AUTHORIZATION_SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.watcher.start()
        log.info(
            "mandate serving on %s (metrics %s), policy %s: %d profiles, %d targets; chain store: %s",
            self.options.listen, self.options.metrics_listen, self.authorizer.policy.version,
            len(self.authorizer.policy.profiles), len(self.authorizer.policy.targets) - len(self.authorizer.policy.profiles),
            self.chain_store.description,
        )

    def stop(self, grace: float = 2.0) -> None:
        for service in ("", AUTHORIZATION_SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.watcher.stop()
        self.grpc_server.stop(grace).wait()
        if self.http is not None:
            self.http.shutdown()
        self.chain_store.close()
        self._stopped.set()

    def run_forever(self) -> None:
        self.start()
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=self.stop).start())
        signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=self.stop).start())
        signal.signal(signal.SIGHUP, lambda *_: self.watcher.reload_now())
        self._stopped.wait()


def chain_keys(options: ServeOptions) -> ChainKeys:
    """The HMAC keys from `--chain-key`; without one, a random key that only this process knows,
    which is refused with `--redis` (other replicas could not verify its tokens)."""
    if options.chain_key:
        return ChainKeys.from_file(options.chain_key)
    if options.redis:
        raise KeyFileError("--redis needs --chain-key: every replica must verify the tokens the others sign")
    log.warning("no --chain-key: chain tokens are signed with a random key and die with this process")
    return ChainKeys.ephemeral()
