"""`mandate serve`: Envoy's Authorization and ExternalProcessor services and gRPC health on one
port, metrics on another.

The Check handler takes the request as raw bytes and parses it inside the Authorizer, so a
CheckRequest that does not parse still gets a deny with a reason rather than a gRPC error.
The gRPC flavour (core, threads, asyncio, uvloop) is `grpc_server.py`'s business.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from authz import __version__
from authz.admin.auth import AdminSettings
from authz.admin.reloads import RecordingWatcher
from authz.chains.store import open_store
from authz.chains.tokens import ChainKeys, KeyFileError
from authz.check import pipeline
from authz.check.decision_cache import DEFAULT_ENTRIES
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.check.record import Answered, Recorder
from authz.listing.service import ListService
from authz.listing.stream import ListAnswered
from authz.policy.compiler import compile_directory
from authz.serve.audit import AuditLog
from authz.serve.grpc_server import AUTHORIZATION_SERVICE, CheckServer, ListenError
from authz.serve.heap import freeze_heap
from authz.serve.http import serve_http
from authz.serve.metrics import Metrics

if TYPE_CHECKING:
    from authz.admin.server import AdminServer

__all__ = ["AUTHORIZATION_SERVICE", "READY_DIR_ENV", "SUPERVISOR_ENV", "MandateServer", "ServeOptions"]
log = logging.getLogger("mandate")
READY_DIR_ENV = "MANDATE_WORKER_READY_DIR"  # set by the `--workers` supervisor for its workers
SIGNAL_LATENCY = 0.1  # seconds: how long a SIGHUP or SIGTERM may wait for the main thread
SUPERVISOR_ENV = "MANDATE_WORKER_OF"  # the supervisor's pid, set for its workers: they may share its port


@dataclass(frozen=True)
class ServeOptions:
    policies: str
    listen: str = "0.0.0.0:9191"
    metrics_listen: str = "0.0.0.0:9090"
    redis: str | None = None
    chain_key: str | None = None
    chain_store_timeout: float = 0.25
    workers: int = 1
    grpc_server: str = "core"
    threads: int = 16
    decision_cache: int = DEFAULT_ENTRIES
    admin: AdminSettings = field(default_factory=AdminSettings)  # the admin listener; none by default


class MandateServer:
    def __init__(self, options: ServeOptions) -> None:
        log.info(
            "mandate %s starting: request path %s; policies from %s", __version__, request_path(), options.policies
        )
        self.options = options
        self.metrics = Metrics()
        policy = compile_directory(options.policies)  # a bad set at start is fatal, with every error
        self.chain_store = open_store(options.redis, options.chain_store_timeout)
        chains = ChainStep(self.chain_store, chain_keys(options))
        self.recorder: Recorder[Answered] = Recorder([AuditLog().write, self.metrics.count])
        self.authorizer = Authorizer(policy, self.recorder, chains, options.decision_cache)
        self.list_recorder: Recorder[ListAnswered] = Recorder([AuditLog().write_lists, self.metrics.count_lists])
        self.lists = ListService(self.authorizer, self.list_recorder.record, self.metrics.ext_proc_streams.inc)
        self.metrics.serving(policy.version)
        self.watcher = RecordingWatcher(options.policies, self.authorizer, self.metrics, after=self._report_live_set)
        self.grpc = CheckServer(
            self.authorizer.check_bytes,
            options.listen,
            options.grpc_server,
            options.threads,
            share_port=supervised(),
            lists=self.lists,
        )
        self.http: ThreadingHTTPServer | None = None
        self.admin = admin_server(options.admin, self, options.policies) if options.admin.listen else None
        self._stopped = threading.Event()

    def start(self) -> None:
        """Listen on both ports (health NOT_SERVING), connect the chain store, then report SERVING.
        A port that is not free raises ListenError, with neither port left open."""
        self.grpc.start()
        if self.options.metrics_listen:  # empty: a worker, whose supervisor serves the metrics
            try:
                self.http = serve_http(self.options.metrics_listen, self.metrics.registry, lambda: True, self._flush)
            except ListenError:
                self.grpc.stop(0)
                raise
        if self.admin is not None:
            try:
                self.admin.start()
            except ListenError:
                self.grpc.stop(0)
                if self.http is not None:
                    self.http.shutdown()
                raise
        self.chain_store.start()
        if not self.chain_store.wait_available(2.0):
            log.error(
                "chain store %s not reachable yet: chained calls are denied until it is", self.chain_store.description
            )
        freeze_heap()
        self.watcher.start()  # before SERVING: a SIGHUP from then on must reload
        self.grpc.set_serving(True)
        self._report_live_set()
        policy = self.authorizer.policy
        log.info(
            "mandate serving on %s (gRPC %s, metrics %s), policy %s: %d profiles, %d targets; chain store: %s; "
            "request path %s",
            self.options.listen,
            self.options.grpc_server,
            self.options.metrics_listen,
            policy.version,
            len(policy.profiles),
            len(policy.targets) - len(policy.profiles),
            self.chain_store.description,
            request_path(),
        )

    def _report_live_set(self) -> None:
        """Under a `--workers` supervisor: serving, and with which set. The file named after this
        worker's pid holds `VERSION LOADED_AT`, written whole and renamed into place, so the
        supervisor never reads half of it (workers.py reads it for Status)."""
        ready_dir = os.environ.get(READY_DIR_ENV)
        if not ready_dir:
            return
        written = Path(ready_dir, f".{os.getpid()}.new")
        try:
            written.write_text(f"{self.authorizer.policy.version} {self.watcher.loaded_at}")
            os.replace(written, Path(ready_dir, str(os.getpid())))
        except OSError as exc:  # the supervisor is gone or going: Status is its business, not a Check's
            log.warning("cannot tell the supervisor which policy set this worker serves: %s", exc)

    def stop(self, grace: float = 2.0) -> None:
        self.grpc.set_serving(False)
        self.watcher.stop()
        self.grpc.stop(grace)
        self.recorder.close()  # every decision made is on stdout before the process ends
        self.list_recorder.close()
        if self.http is not None:
            self.http.shutdown()
        if self.admin is not None:
            self.admin.stop()
        self.chain_store.close()
        log.info("mandate stopped: gRPC %s closed, audit flushed", self.options.listen)
        self._stopped.set()

    def _flush(self) -> None:
        """Before a scrape: every answer and list already given is counted."""
        self.recorder.flush()
        self.list_recorder.flush()

    def run_forever(self) -> None:
        # SIGHUP first: once health says SERVING, a SIGHUP must reload, never kill the process.
        signal.signal(signal.SIGHUP, lambda *_: self.watcher.reload_now())
        self.start()
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=self.stop).start())
        signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=self.stop).start())
        # Python runs signal handlers on the main thread only, and a signal the kernel hands to
        # another thread (gRPC's, the watcher's) waits until the main thread wakes: wake it often.
        while not self._stopped.wait(SIGNAL_LATENCY):
            pass


def admin_server(settings: AdminSettings, server: MandateServer, policies: str) -> AdminServer:
    """The admin API over this process's live state: its policy set, reload watcher and chain store."""
    from authz.admin.server import AdminBackend, AdminServer

    backend = AdminBackend(policies, server.authorizer, server.watcher, server.chain_store, 1, request_path())
    return AdminServer(settings, backend)


def request_path() -> str:
    """Whether the steps of a Check run compiled, for the first log line: uncompiled, a fresh
    decision takes about twice as long."""
    if pipeline.__file__.endswith(".py"):
        return "interpreted (not compiled at install: MANDATE_COMPILE=0 or no C compiler)"
    return "compiled"


def supervised() -> bool:
    """A `--workers` child, which shares its supervisor's port (SO_REUSEPORT). The pid must be
    our parent's, so the variable inherited by anything else never makes a lone server share."""
    return os.environ.get(SUPERVISOR_ENV) == str(os.getppid())


def chain_keys(options: ServeOptions) -> ChainKeys:
    """The HMAC keys from `--chain-key`; without one, a random key that only this process knows,
    which is refused with `--redis` (other replicas could not verify its tokens)."""
    if options.chain_key:
        return ChainKeys.from_file(options.chain_key)
    if options.redis:
        raise KeyFileError("--redis needs --chain-key: every replica must verify the tokens the others sign")
    log.warning("no --chain-key: chain tokens are signed with a random key and die with this process")
    return ChainKeys.ephemeral()
