"""The policy documents as the security team writes them (SPEC §3).

These models only describe and validate the *shape* of one document. Cross-document
rules (duplicate names, dangling references, two profiles claiming one SPIFFE ID) live in
the compiler, which sees the whole set.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from authz.check.protocols.a2a import DEFAULT_CARD_PATH, DEFAULT_JSONRPC_PATH, DEFAULT_REST_PREFIX

API_VERSION = "mandate.dev/v1alpha1"

Name = Annotated[str, Field(min_length=1, max_length=253)]
NameList = list[Name]


def _everything() -> list[str]:
    """A default name list matching every name. Defaults that are lists or dicts come from
    factories: pydantic deep-copies a literal one for every document, a third of validating a
    large set."""
    return ["*"]


class _Strict(BaseModel):
    """Unknown fields are load errors; YAML keys are camelCase, and only camelCase."""

    model_config = ConfigDict(
        extra="forbid", strict=True, alias_generator=to_camel, populate_by_name=False, frozen=True
    )


class Metadata(_Strict):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# --- rules -----------------------------------------------------------------------------


class McpRule(_Strict):
    server: Name
    tools: NameList = Field(default_factory=list)
    resources: NameList = Field(default_factory=list)
    prompts: NameList = Field(default_factory=list)
    methods: NameList = Field(default_factory=list)
    when: str | None = None


class EgressRule(_Strict):
    host: Name
    paths: NameList = Field(default_factory=_everything)
    methods: NameList = Field(default_factory=_everything)
    when: str | None = None


class HttpRule(_Strict):
    target: Name
    paths: NameList = Field(default_factory=_everything)
    methods: NameList = Field(default_factory=_everything)
    when: str | None = None


class Scope(_Strict):
    """What a principal may do; a profile's own rules, or a `grant` to a delegate."""

    mcp: list[McpRule] = Field(default_factory=list)
    agents: list[AgentRule] = Field(default_factory=list)
    egress: list[EgressRule] = Field(default_factory=list)
    http: list[HttpRule] = Field(default_factory=list)


class AgentRule(_Strict):
    agent: Name
    methods: NameList | None = None  # None: every A2A method
    grant: Scope | None = None
    when: str | None = None


Scope.model_rebuild()


class Delegation(_Strict):
    max_depth: Annotated[int, Field(ge=1, le=64)] | None = None
    accept_from: NameList = Field(default_factory=list)
    require_chain: bool = False
    allow_reentry: bool = False


# --- kinds -----------------------------------------------------------------------------


class TargetSpec(_Strict):
    kind: Literal["mcp", "egress", "http"]
    principals: NameList = Field(default_factory=list)
    hosts: NameList = Field(default_factory=list)
    path_prefix: str | None = None

    @field_validator("path_prefix")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("pathPrefix must start with '/'")
        return value


# A path as the agent's router sees it and as Mandate normalises it, the same string: segments of
# RFC 3986 path characters without `%` (so nothing to decode) and without `{`, `}` (Starlette
# would compile them into a parameter), none `.` or `..`, none empty but a trailing one.
_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]*")


def _path_problem(field: str, value: str) -> str | None:
    """Why `value` cannot be one of the agent's declared paths, or None."""
    if not value.startswith("/"):
        return f"{field} must start with '/'"
    segments = value.split("/")[1:]
    for index, segment in enumerate(segments):
        if not _SEGMENT.fullmatch(segment):
            return f"{field} may hold only letters, digits and -._~!$&'()*+,;=:@ between slashes (no %, {{ or }})"
        if segment in (".", ".."):
            return f"{field} must not contain a '.' or '..' segment: the agent's router resolves none"
        if segment == "" and index < len(segments) - 1:
            return f"{field} must not contain '//'"
    return None


class A2aServing(_Strict):
    """How the profile's workload serves A2A, as its a2a-sdk app was built (SDK defaults).

    The JSON-RPC endpoint is one known path: a POST anywhere else that no HTTP+JSON route
    places is `unsupported_binding`, never read from its body."""

    jsonrpc_path: str = DEFAULT_JSONRPC_PATH  # create_jsonrpc_routes(rpc_url=...)
    rest_prefix: str = DEFAULT_REST_PREFIX  # create_rest_routes(path_prefix=...)
    card_path: str = DEFAULT_CARD_PATH  # create_agent_card_routes(card_url=...)

    @field_validator("jsonrpc_path", "card_path")
    @classmethod
    def _served_path(cls, value: str, info: ValidationInfo) -> str:
        problem = _path_problem(to_camel(info.field_name or ""), value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("rest_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        """The SDK joins it to `/message:send` and the rest as it is: a trailing '/' makes a `//`."""
        if value.endswith("/"):
            raise ValueError("restPrefix must not end with '/' (leave it out to serve the routes at the root)")
        problem = _path_problem("restPrefix", value) if value else None
        if problem:
            raise ValueError(problem)
        return value


class MissionProfileSpec(Scope):
    principals: NameList = Field(min_length=1)
    hosts: NameList = Field(default_factory=list)
    mission: str = Field(min_length=1)
    mode: Literal["enforce", "dry-run"] = "enforce"
    delegation: Delegation = Delegation()
    a2a: A2aServing = Field(A2aServing(), alias="a2a")  # to_camel would make it "a2A"


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class SettingsSpec(_Strict):
    trust_domains: NameList = Field(default=["cluster.local"], min_length=1)
    trust_forwarded_client_cert: bool = False
    max_depth: Annotated[int, Field(ge=1, le=64)] = 5
    chain_header: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "x-delegation-chain"
    chain_ttl: str = Field(default="15m", alias="chainTTL")
    unknown_callers: Literal["deny"] = "deny"

    @field_validator("chain_ttl")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not value or not _DURATION.match(value) or parse_duration(value) <= 0:
            raise ValueError("chainTTL must be a duration like 15m, 1h30m or 90s")
        return value


def parse_duration(text: str) -> int:
    """Seconds in a Go-style duration of h/m/s parts (`1h30m`)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class _Document(_Strict):
    api_version: Literal["mandate.dev/v1alpha1"]
    metadata: Metadata


class Target(_Document):
    kind: Literal["Target"]
    spec: TargetSpec


class MissionProfile(_Document):
    kind: Literal["MissionProfile"]
    spec: MissionProfileSpec


class Settings(_Document):
    kind: Literal["Settings"]
    spec: SettingsSpec = SettingsSpec()


Document = Target | MissionProfile | Settings
DOCUMENT_KINDS: dict[str, type[Target | MissionProfile | Settings]] = {
    "Target": Target,
    "MissionProfile": MissionProfile,
    "Settings": Settings,
}
