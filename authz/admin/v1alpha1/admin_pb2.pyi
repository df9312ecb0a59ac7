from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("mandate_version", "policy_version", "policies", "profiles", "targets", "loaded_at", "last_reload", "chain_store", "workers", "request_path", "worker_sets")
    MANDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_FIELD_NUMBER: _ClassVar[int]
    CHAIN_STORE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_PATH_FIELD_NUMBER: _ClassVar[int]
    WORKER_SETS_FIELD_NUMBER: _ClassVar[int]
    mandate_version: str
    policy_version: str
    policies: str
    profiles: int
    targets: int
    loaded_at: float
    last_reload: ReloadResponse
    chain_store: str
    workers: int
    request_path: str
    worker_sets: _containers.RepeatedCompositeFieldContainer[WorkerSet]
    def __init__(self, mandate_version: _Optional[str] = ..., policy_version: _Optional[str] = ..., policies: _Optional[str] = ..., profiles: _Optional[int] = ..., targets: _Optional[int] = ..., loaded_at: _Optional[float] = ..., last_reload: _Optional[_Union[ReloadResponse, _Mapping]] = ..., chain_store: _Optional[str] = ..., workers: _Optional[int] = ..., request_path: _Optional[str] = ..., worker_sets: _Optional[_Iterable[_Union[WorkerSet, _Mapping]]] = ...) -> None: ...

class WorkerSet(_message.Message):
    __slots__ = ("pid", "policy_version", "loaded_at")
    PID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    pid: int
    policy_version: str
    loaded_at: float
    def __init__(self, pid: _Optional[int] = ..., policy_version: _Optional[str] = ..., loaded_at: _Optional[float] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("applied", "policy_version", "errors", "at")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    policy_version: str
    errors: _containers.RepeatedScalarFieldContainer[str]
    at: float
    def __init__(self, applied: _Optional[bool] = ..., policy_version: _Optional[str] = ..., errors: _Optional[_Iterable[str]] = ..., at: _Optional[float] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: str
    def __init__(self, request: _Optional[str] = ...) -> None: ...

class ExplainHop(_message.Message):
    __slots__ = ("hop", "scope", "allows", "rule", "reason")
    HOP_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    ALLOWS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    hop: str
    scope: str
    allows: bool
    rule: str
    reason: str
    def __init__(self, hop: _Optional[str] = ..., scope: _Optional[str] = ..., allows: _Optional[bool] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("decision", "status", "reason", "message", "caller", "profile", "mission", "target", "protocol", "rule", "refused_by_hop", "chain", "hops", "minted_chain", "action", "policy_version", "request_headers", "user")
    class ActionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DECISION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    MISSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BY_HOP_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    MINTED_CHAIN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    decision: str
    status: int
    reason: str
    message: str
    caller: str
    profile: str
    mission: str
    target: str
    protocol: str
    rule: str
    refused_by_hop: str
    chain: _containers.RepeatedScalarFieldContainer[str]
    hops: _containers.RepeatedCompositeFieldContainer[ExplainHop]
    minted_chain: _containers.RepeatedScalarFieldContainer[str]
    action: _containers.ScalarMap[str, str]
    policy_version: str
    request_headers: ExplainHeaders
    user: ExplainUser
    def __init__(self, decision: _Optional[str] = ..., status: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., caller: _Optional[str] = ..., profile: _Optional[str] = ..., mission: _Optional[str] = ..., target: _Optional[str] = ..., protocol: _Optional[str] = ..., rule: _Optional[str] = ..., refused_by_hop: _Optional[str] = ..., chain: _Optional[_Iterable[str]] = ..., hops: _Optional[_Iterable[_Union[ExplainHop, _Mapping]]] = ..., minted_chain: _Optional[_Iterable[str]] = ..., action: _Optional[_Mapping[str, str]] = ..., policy_version: _Optional[str] = ..., request_headers: _Optional[_Union[ExplainHeaders, _Mapping]] = ..., user: _Optional[_Union[ExplainUser, _Mapping]] = ...) -> None: ...

class ExplainUser(_message.Message):
    __slots__ = ("iss", "sub")
    ISS_FIELD_NUMBER: _ClassVar[int]
    SUB_FIELD_NUMBER: _ClassVar[int]
    iss: str
    sub: str
    def __init__(self, iss: _Optional[str] = ..., sub: _Optional[str] = ...) -> None: ...

class ExplainHeaders(_message.Message):
    __slots__ = ("set", "remove")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SET_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    set: _containers.ScalarMap[str, str]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, set: _Optional[_Mapping[str, str]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class ChainRequest(_message.Message):
    __slots__ = ("chain",)
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    chain: str
    def __init__(self, chain: _Optional[str] = ...) -> None: ...

class ChainHop(_message.Message):
    __slots__ = ("profile", "principal")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    profile: str
    principal: str
    def __init__(self, profile: _Optional[str] = ..., principal: _Optional[str] = ...) -> None: ...

class Chain(_message.Message):
    __slots__ = ("id", "hops", "parent", "lineage", "created", "expires", "revoked")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    id: str
    hops: _containers.RepeatedCompositeFieldContainer[ChainHop]
    parent: str
    lineage: _containers.RepeatedScalarFieldContainer[str]
    created: float
    expires: float
    revoked: bool
    def __init__(self, id: _Optional[str] = ..., hops: _Optional[_Iterable[_Union[ChainHop, _Mapping]]] = ..., parent: _Optional[str] = ..., lineage: _Optional[_Iterable[str]] = ..., created: _Optional[float] = ..., expires: _Optional[float] = ..., revoked: _Optional[bool] = ...) -> None: ...

class ChainRevokeResponse(_message.Message):
    __slots__ = ("id", "chain")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    chain: Chain
    def __init__(self, id: _Optional[str] = ..., chain: _Optional[_Union[Chain, _Mapping]] = ...) -> None: ...
