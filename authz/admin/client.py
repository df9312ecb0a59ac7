"""The admin API's client, for `mandate status`, `mandate chain … --server` and `mandate explain --server`.

Errors come back as AdminError with one line the operator can act on (unreachable, refused
credentials, unknown chain), never a gRPC traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from authz.admin.auth import AdminConfigError, read_keys
from authz.admin.v1alpha1 import admin_pb2, admin_pb2_grpc

TIMEOUT = 30.0  # seconds: a Reload of a large set compiles it first


class AdminError(RuntimeError):
    """A call that did not succeed; `code` is the gRPC status (NOT_FOUND for an unknown chain)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AdminCredentials:
    key_file: str | None = None  # sends the file's first key as `authorization: Bearer …`
    ca: str | None = None  # TLS: trust the listener's certificate from this CA
    cert: str | None = None  # mTLS: this client's certificate and key
    key: str | None = None


class AdminClient:
    def __init__(self, server: str, credentials: AdminCredentials | None = None) -> None:
        credentials = credentials or AdminCredentials()
        self.server = server
        try:
            self._metadata = (
                [("authorization", f"Bearer {read_keys(credentials.key_file)[0].decode()}")]
                if (credentials.key_file)
                else []
            )
        except AdminConfigError as exc:
            raise AdminError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        self._channel = _channel(server, credentials)
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def status(self) -> admin_pb2.StatusResponse:
        return self._call("Status", admin_pb2.StatusRequest())

    def reload(self) -> admin_pb2.ReloadResponse:
        return self._call("Reload", admin_pb2.ReloadRequest())

    def explain(self, request_text: str) -> dict[str, Any]:
        """The same report `mandate explain` prints (authz/explain.py), decided by the server."""
        return as_dict(self._call("Explain", admin_pb2.ExplainRequest(request=request_text)))

    def chain_show(self, chain: str) -> admin_pb2.Chain:
        return self._call("ChainShow", admin_pb2.ChainRequest(chain=chain))

    def chain_revoke(self, chain: str) -> admin_pb2.ChainRevokeResponse:
        return self._call("ChainRevoke", admin_pb2.ChainRequest(chain=chain))

    def _call(self, method: str, request: Message) -> Any:
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code()
            details = exc.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE:
                details = f"cannot reach the admin API at {self.server} ({details}); is `--admin-listen` set there?"
            raise AdminError(code, f"{method}: {code.name}: {details}") from None


def _channel(server: str, credentials: AdminCredentials) -> grpc.Channel:
    if not credentials.ca and not credentials.cert:
        return grpc.insecure_channel(server)
    ca = Path(credentials.ca).read_bytes() if credentials.ca else None
    cert = Path(credentials.cert).read_bytes() if credentials.cert else None
    key = Path(credentials.key).read_bytes() if credentials.key else None
    return grpc.secure_channel(server, grpc.ssl_channel_credentials(ca, key, cert))


def as_dict(message: Message) -> dict[str, Any]:
    """A reply as the dict the CLI prints (snake_case names, every field, zeros included)."""
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
