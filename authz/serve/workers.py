"""`mandate serve --workers N`: N serving processes behind one gRPC port, so a pod uses
every core despite Python's GIL.

Each worker is a whole `mandate serve` (its own policy copy, chain cache and reload
watcher) binding the same port with SO_REUSEPORT; the kernel spreads connections across
them. This supervising process serves the metrics of all of them (prometheus_client's
multiprocess mode), forwards SIGHUP, and on SIGTERM stops them gracefully. If a worker dies
unexpectedly it stops the rest and exits non-zero, so the orchestrator restarts the pod
rather than leaving it quietly short of capacity.

The admin API (`--admin-listen`) is served here too, not by the workers: the supervisor keeps its
own copy of the policy set, watched and reloaded like theirs (so Status and Explain see what
they decide with), reaches the chains in the Redis they share (a revocation reaches every worker
within a second), and forwards a Reload to every worker as SIGHUP.

Only this supervisor's own workers may share the port. It proves the port free with a bind
that has no SO_REUSEPORT (which fails beside any listener, sharing ones included) and holds
that socket, turned sharing, until its last worker has ended (`hold_port`): so a second
supervisor, or a lone `mandate serve`, is refused even while the first one's workers start.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import multiprocess

from authz.admin.reloads import RecordingWatcher
from authz.chains.store import open_store
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.policy.compiler import compile_directory
from authz.serve.grpc_server import ListenError, claim_port
from authz.serve.http import serve_http
from authz.serve.metrics import Metrics, multiprocess_registry
from authz.serve.service import READY_DIR_ENV, SUPERVISOR_ENV, ServeOptions, chain_keys, request_path

if TYPE_CHECKING:
    from authz.admin.server import AdminServer

log = logging.getLogger("mandate")


def worker_command(options: ServeOptions) -> list[str]:
    """The command line of one worker: the same options, one process, no metrics port."""
    command = [
        sys.executable,
        "-m",
        "authz",
        "serve",
        "--policies",
        options.policies,
        "--listen",
        options.listen,
        "--metrics-listen",
        "",
        "--workers",
        "1",
        "--grpc-server",
        options.grpc_server,
        "--chain-store-timeout",
        str(options.chain_store_timeout),
        "--decision-cache",
        str(options.decision_cache),
        "--admin-listen",
        "",
    ]
    if options.redis:
        command += ["--redis", options.redis]
    if options.chain_key:
        command += ["--chain-key", options.chain_key]
    return command


def hold_port(address: str) -> socket.socket:
    """Bind the gRPC port for the supervisor's lifetime: bound, never listening, so it takes no
    connections. The bind has no SO_REUSEPORT, so it fails if anything listens there; once it
    succeeds the socket turns sharing (SO_REUSEPORT on, SO_REUSEADDR off), which lets the
    workers' sharing sockets in and keeps every plain bind out, even one with SO_REUSEADDR.

    First without SO_REUSEADDR, which makes the proof and the hold one step; if that fails,
    again with it, which also succeeds beside the last run's TIME_WAIT connections (a restart)
    but never beside a listener, and leaves only the microseconds before the flip unguarded."""
    try:
        sock = claim_port(address, "gRPC", reuse_address=False)
    except ListenError:
        sock = claim_port(address, "gRPC")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


class Supervisor:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.state_dir = tempfile.mkdtemp(prefix="mandate-workers-")
        self.metrics_dir = os.path.join(self.state_dir, "metrics")
        self.ready_dir = os.path.join(self.state_dir, "ready")
        os.mkdir(self.metrics_dir)
        os.mkdir(self.ready_dir)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.watcher: RecordingWatcher | None = None  # the admin API's copy of the set, when it is served
        self._stopping = threading.Event()

    def run(self) -> int:
        """Supervise the workers until stopped; a busy port raises ListenError before any starts."""
        try:
            with hold_port(self.options.listen):
                return self._supervise()
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _supervise(self) -> int:
        # Before any worker exists: a SIGTERM must never leave orphans behind.
        signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self._stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload_all())
        http = serve_http(self.options.metrics_listen, multiprocess_registry(self.metrics_dir), self._all_ready)
        try:
            admin = self._admin()
        except ListenError:
            http.shutdown()
            raise
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            READY_DIR_ENV: self.ready_dir,
            SUPERVISOR_ENV: str(os.getpid()),
        }
        for _ in range(self.options.workers):
            self.workers.append(subprocess.Popen(worker_command(self.options), env=env, stdin=subprocess.DEVNULL))
        log.info(
            "mandate supervising %d workers on %s (metrics %s)",
            len(self.workers),
            self.options.listen,
            self.options.metrics_listen,
        )
        code = 0
        while not self._stopping.wait(0.2):
            dead = [worker for worker in self.workers if worker.poll() is not None]
            if dead:
                log.error("worker %d exited with %s: stopping the others", dead[0].pid, dead[0].returncode)
                code = 1
                break
        self._stop_all()
        http.shutdown()
        if admin is not None:
            admin.stop()
        log.info("mandate stopped: %d workers on %s ended", len(self.workers), self.options.listen)
        return code

    def _admin(self) -> AdminServer | None:
        """The admin API over the supervisor's own copy of the set and the workers' shared Redis."""
        if not self.options.admin.listen:
            return None
        from authz.admin.server import AdminBackend, AdminServer

        store = open_store(self.options.redis, self.options.chain_store_timeout)
        authorizer = Authorizer(
            compile_directory(self.options.policies), chains=ChainStep(store, chain_keys(self.options))
        )
        self.watcher = RecordingWatcher(self.options.policies, authorizer, Metrics())
        backend = AdminBackend(
            self.options.policies,
            authorizer,
            self.watcher,
            store,
            self.options.workers,
            request_path(),
            lambda: self._signal_all(signal.SIGHUP),
            self._worker_sets,
        )
        admin = AdminServer(self.options.admin, backend)
        admin.start()
        self.watcher.start()
        return admin

    def _reload_all(self) -> None:
        """SIGHUP: every worker reloads, and so does the admin API's copy."""
        self._signal_all(signal.SIGHUP)
        if self.watcher is not None:
            self.watcher.reload_now()

    def _worker_sets(self) -> list[tuple[int, str, float]]:
        """Each worker's live set as it last wrote it into its ready file (service.py); a worker
        that has not written one, or wrote something else, reports no version."""
        found = []
        for worker in self.workers:
            try:
                version, loaded_at = Path(self.ready_dir, str(worker.pid)).read_text().split()
                found.append((worker.pid, version, float(loaded_at)))
            except (OSError, ValueError):
                found.append((worker.pid, "", 0.0))
        return found

    def _all_ready(self) -> bool:
        """Every worker alive and serving (each says so by a file named after its pid)."""
        ready = set(os.listdir(self.ready_dir))
        return bool(self.workers) and all(worker.poll() is None and str(worker.pid) in ready for worker in self.workers)

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    def _stop_all(self, grace: float = 10.0) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for worker in self.workers:
            try:
                worker.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            multiprocess.mark_process_dead(worker.pid, self.metrics_dir)
