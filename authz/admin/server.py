"""The admin API's server: Status, Reload, Explain, ChainShow and ChainRevoke over the live state
of one `mandate serve` (proto/mandate/admin/v1alpha1/admin.proto).

It reads what serving uses: the Authorizer's current policy set, the reload watcher and the chain
store (the in-process one too, which nothing outside the process could reach before). Explain runs
`authz/explain.py` against that set, the pipeline Check uses; nothing it decides is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf.json_format import ParseDict

from authz import __version__
from authz.admin.auth import AdminSettings, BearerKeys, server_credentials
from authz.admin.reloads import RecordingWatcher, ReloadResult
from authz.admin.v1alpha1 import admin_pb2, admin_pb2_grpc
from authz.chains.store import ChainRecord, ChainStore, StoreUnavailable
from authz.chains.tokens import chain_id_of
from authz.check.pipeline import Authorizer
from authz.explain import RequestFileError, explain, parse_request
from authz.serve.grpc_server import claim_port, listen_error

log = logging.getLogger("mandate")


@dataclass(frozen=True)
class AdminBackend:
    """What the admin API reads and acts on. `after_reload` runs after each Reload (a `--workers`
    supervisor forwards it to its workers as SIGHUP)."""

    policies: str
    authorizer: Authorizer
    watcher: RecordingWatcher
    store: ChainStore
    workers: int = 1
    request_path: str = ""
    after_reload: Callable[[], None] | None = None
    worker_sets: Callable[[], list[tuple[int, str, float]]] = list  # (pid, version, loaded at) per worker


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, backend: AdminBackend) -> None:
        self.backend = backend

    def Status(self, request: admin_pb2.StatusRequest, context: grpc.ServicerContext) -> admin_pb2.StatusResponse:
        backend = self.backend
        policy = backend.authorizer.policy
        last = backend.watcher.last_result
        return admin_pb2.StatusResponse(
            mandate_version=__version__,
            policy_version=policy.version,
            policies=backend.policies,
            profiles=len(policy.profiles),
            targets=len(policy.targets) - len(policy.profiles),
            loaded_at=backend.watcher.loaded_at,
            last_reload=_reload_message(last) if last is not None else None,
            chain_store=backend.store.description,
            workers=backend.workers,
            request_path=backend.request_path,
            worker_sets=[
                admin_pb2.WorkerSet(pid=pid, policy_version=version, loaded_at=loaded_at)
                for pid, version, loaded_at in backend.worker_sets()
            ],
        )

    def Reload(self, request: admin_pb2.ReloadRequest, context: grpc.ServicerContext) -> admin_pb2.ReloadResponse:
        self.backend.watcher.reload()
        if self.backend.after_reload is not None:
            self.backend.after_reload()
        result = self.backend.watcher.last_result
        assert result is not None  # reload() always records one
        return _reload_message(result)

    def Explain(self, request: admin_pb2.ExplainRequest, context: grpc.ServicerContext) -> admin_pb2.ExplainResponse:
        try:
            described = parse_request(request.request, "request")
        except RequestFileError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        report = explain(self.backend.authorizer.policy, described)
        return ParseDict(report, admin_pb2.ExplainResponse(), ignore_unknown_fields=True)

    def ChainShow(self, request: admin_pb2.ChainRequest, context: grpc.ServicerContext) -> admin_pb2.Chain:
        chain_id = _chain_id(request.chain, context)
        try:
            record = self.backend.store.get(chain_id)
            if record is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"chain {chain_id}: unknown or expired")
            return _chain_message(record, _revoked(self.backend.store, record))
        except StoreUnavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"chain store unavailable: {exc}")

    def ChainRevoke(
        self, request: admin_pb2.ChainRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ChainRevokeResponse:
        chain_id = _chain_id(request.chain, context)
        try:
            record = self.backend.store.revoke(chain_id)
        except StoreUnavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"chain store unavailable: {exc}")
        log.warning("admin API: chain %s revoked (and every chain delegated from it)", chain_id)
        chain = _chain_message(record, True) if record is not None else None
        return admin_pb2.ChainRevokeResponse(id=chain_id, chain=chain)


def _chain_id(text: str, context: grpc.ServicerContext) -> str:
    chain_id = chain_id_of(text)
    if not chain_id:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give a chain id, or a whole token <id>.<mac>")
    return chain_id


def _revoked(store: ChainStore, record: ChainRecord) -> bool:
    """Redis is asked directly (the local copy may lag by a heartbeat); the in-process store knows."""
    revoked_now = getattr(store, "revoked_now", None)
    return bool(revoked_now(record)) if revoked_now is not None else store.is_revoked(record)


def _chain_message(record: ChainRecord, revoked: bool) -> admin_pb2.Chain:
    return admin_pb2.Chain(
        id=record.id,
        hops=[admin_pb2.ChainHop(profile=hop.profile, principal=hop.principal) for hop in record.hops],
        parent=record.parent,
        lineage=list(record.lineage),
        created=record.created,
        expires=record.expires,
        revoked=revoked,
    )


def _reload_message(result: ReloadResult) -> admin_pb2.ReloadResponse:
    return admin_pb2.ReloadResponse(
        applied=result.applied, policy_version=result.version, errors=list(result.errors), at=result.at
    )


class AdminServer:
    """The admin listener: its own port and threads, so it never competes with Check for either."""

    def __init__(self, settings: AdminSettings, backend: AdminBackend) -> None:
        self.settings = settings
        interceptors = [BearerKeys(settings.key_file)] if settings.key_file else []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="admin"), interceptors=interceptors
        )
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(backend), self._server)
        self.port = 0

    def start(self) -> None:
        """Listen, or raise ListenError (one line) when the port is taken."""
        listen = self.settings.listen
        claim_port(listen, "the admin API").close()
        credentials = server_credentials(self.settings)
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(listen)
            else:
                self.port = self._server.add_secure_port(listen, credentials)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise listen_error(listen, "the admin API")
        self._server.start()
        log.info(
            "admin API on %s (%s)",
            listen,
            "authenticated" if self.settings.authenticated else "loopback, no credentials",
        )

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait()
