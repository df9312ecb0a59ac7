"""The policy documents as the security team writes them (SPEC §3).

These models only describe and validate the *shape* of one document. Cross-document
rules (duplicate names, dangling references, two profiles claiming one SPIFFE ID) live in
the compiler, which sees the whole set.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
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
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        populate_by_name=False,
        frozen=True,
        use_attribute_docstrings=True,  # each field's docstring describes it in `mandate schema`
    )


class Metadata(_Strict):
    name: Name
    """The document's name: unique across kinds, case-sensitive; what rules and chains refer to."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Kubernetes-style labels; Mandate does not read them."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Kubernetes-style annotations; Mandate does not read them."""


# --- rules -----------------------------------------------------------------------------

Subject = Annotated[str, Field(min_length=1, max_length=1024)]


class Users(_Strict):
    """The users a rule (or a grant) is for: the request's user must match one entry (SPEC §10)."""

    groups: NameList = Field(default_factory=list)
    """Groups, as the `groupsClaim` of the user's claims lists them (`*` matches any run of characters)."""
    subjects: list[Subject] = Field(default_factory=list)
    """Users by their `sub` claim, exactly."""

    @model_validator(mode="after")
    def _names_someone(self) -> Users:
        if not self.groups and not self.subjects:
            raise ValueError("users needs groups or subjects (or both); without a users entry the rule is for anyone")
        return self


HeaderName = Annotated[str, Field(min_length=1, max_length=256)]
HeaderText = Annotated[str, Field(max_length=8192)]


class RequestHeaders(_Strict):
    """What an allowed request's headers become before its upstream sees them (a rule's entries win
    over its Target's, per header name). Denied requests are left as they are."""

    set: dict[HeaderName, HeaderText] = Field(default_factory=dict)
    """Headers to set, NAME: VALUE; each replaces every copy the client sent under that name, in any case.
    VALUE is text with {caller.principal}, {caller.namespace}, {caller.serviceAccount}, {profile},
    {decision_id}, {user.sub} or {secret:/absolute/path} (the file's trimmed content, re-read when it
    changes); {{ and }} are literal braces. A value that comes out empty removes the header."""
    remove: list[HeaderName] = Field(default_factory=list)
    """Headers to drop, every copy the client sent."""


class McpRule(_Strict):
    server: Name
    """A Target of kind mcp."""
    tools: NameList = Field(default_factory=list)
    """Tools `tools/call` may call, by name (`*` matches any run of characters)."""
    resources: NameList = Field(default_factory=list)
    """Resource URIs `resources/read` may read (globs, e.g. `repo://acme/*`)."""
    prompts: NameList = Field(default_factory=list)
    """Prompts `prompts/get` may get, by name."""
    methods: NameList = Field(default_factory=list)
    """Other JSON-RPC methods allowed verbatim (extensions); session plumbing needs none."""
    users: Users | None = None
    """Optional: the rule applies only to requests acting for one of these users."""
    request_headers: RequestHeaders | None = None
    """Optional: headers set or removed on the requests this rule allows (over its Target's)."""
    when: str | None = None
    """Optional CEL condition; the rule applies only when it is true (a run-time error denies)."""


class EgressRule(_Strict):
    host: Name
    """A host of a Target of kind egress."""
    paths: NameList = Field(default_factory=_everything)
    """Normalised paths, without the query (globs); default every path."""
    methods: NameList = Field(default_factory=_everything)
    """HTTP methods; default every method."""
    users: Users | None = None
    """Optional: the rule applies only to requests acting for one of these users."""
    request_headers: RequestHeaders | None = None
    """Optional: headers set or removed on the requests this rule allows (over its Target's)."""
    when: str | None = None
    """Optional CEL condition."""


class HttpRule(_Strict):
    target: Name
    """A Target of kind http."""
    paths: NameList = Field(default_factory=_everything)
    """Normalised paths, without the query (globs); default every path."""
    methods: NameList = Field(default_factory=_everything)
    """HTTP methods; default every method."""
    users: Users | None = None
    """Optional: the rule applies only to requests acting for one of these users."""
    request_headers: RequestHeaders | None = None
    """Optional: headers set or removed on the requests this rule allows (over its Target's)."""
    when: str | None = None
    """Optional CEL condition."""


class Scope(_Strict):
    """What a principal may do; a profile's own rules, or a `grant` to a delegate."""

    mcp: list[McpRule] = Field(default_factory=list)
    """MCP servers and what may be called on them."""
    agents: list[AgentRule] = Field(default_factory=list)
    """A2A agents (MissionProfiles) that may be called, which is delegating to them."""
    egress: list[EgressRule] = Field(default_factory=list)
    """Hosts outside the mesh, by path and method."""
    http: list[HttpRule] = Field(default_factory=list)
    """Plain HTTP services in the mesh, by path and method."""


class AgentRule(_Strict):
    agent: Name
    """A MissionProfile name."""
    methods: NameList | None = None  # None: every A2A method
    """A2A methods (v1.0 or v0.3 names); absent: every A2A method."""
    grant: Grant | None = None
    """What the callee may do while acting for this profile; absent: this profile's own rules."""
    users: Users | None = None
    """Optional: the agent may be called only for requests acting for one of these users."""
    request_headers: RequestHeaders | None = None
    """Optional: headers set or removed on the A2A requests this rule allows."""
    when: str | None = None
    """Optional CEL condition."""


class Grant(Scope):
    """What a delegate may do while acting for the profile that grants it."""

    users: Users | None = None
    """Optional: the grant holds only while the chain acts for one of these users."""


Scope.model_rebuild()


class Delegation(_Strict):
    max_depth: Annotated[int, Field(ge=1, le=64)] | None = None
    """Most hops, root and newest included, of a chain this profile is in."""
    accept_from: NameList = Field(default_factory=list)
    """Only these profiles may call this agent; empty: any allowed caller."""
    require_chain: bool = False
    """true: calls without a chain token are denied (the agent only acts when delegated)."""
    allow_reentry: bool = False
    """May this profile appear twice in one chain."""


# --- kinds -----------------------------------------------------------------------------


class TargetSpec(_Strict):
    kind: Literal["mcp", "egress", "http"]
    """How requests to it are read: mcp, egress or http (agents are MissionProfiles)."""
    principals: NameList = Field(default_factory=list)
    """SPIFFE IDs the destination answers as (destination.principal, sidecar inbound)."""
    hosts: NameList = Field(default_factory=list)
    """:authority hosts, port ignored, no wildcards (waypoints, egress gateways)."""
    path_prefix: str | None = None
    """Optional: only paths under it belong to the target (segment-aware)."""
    request_headers: RequestHeaders | None = None
    """Optional: headers set or removed on every request to it that Mandate lets through."""

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
    """The one path where a POST is A2A JSON-RPC."""
    rest_prefix: str = DEFAULT_REST_PREFIX  # create_rest_routes(path_prefix=...)
    """The prefix of the HTTP+JSON routes (the a2a-sdk's path_prefix)."""
    card_path: str = DEFAULT_CARD_PATH  # create_agent_card_routes(card_url=...)
    """The agent card's path."""

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
    """Exact SPIFFE IDs, or spiffe://<td>/ns/<ns>/sa/* for a namespace; an exact ID wins."""
    hosts: NameList = Field(default_factory=list)
    """How callers reach it as an A2A agent (:authority, port ignored)."""
    mission: str = Field(min_length=1)
    """Free text, shown in audit lines and explain."""
    mode: Literal["enforce", "dry-run"] = "enforce"
    """enforce, or dry-run: policy refusals are logged as would_deny and let through."""
    delegation: Delegation = Field(default_factory=Delegation)
    """How this profile takes part in delegation chains."""
    a2a: A2aServing = Field(default_factory=A2aServing, alias="a2a")  # to_camel would make it "a2A"
    """Where its workload serves A2A, as its a2a-sdk app was built."""


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


def _default_algorithms() -> list[Algorithm]:
    return ["RS256", "ES256"]


class Issuer(_Strict):
    """An identity provider whose JWTs name a request's user."""

    issuer: Annotated[str, Field(min_length=1, max_length=1024)]
    """The `iss` its tokens carry, exactly."""
    audiences: list[Subject] = Field(min_length=1)
    """A token's `aud` (a string or a list) must name one of these."""
    jwks_file: str | None = None
    """An absolute path to its JWKS (public keys); re-read when a token names a `kid` it lacks and the file changed."""
    jwks_uri: str | None = None
    """Or its JWKS's https:// URL: cached per its cache-control, fetched again for a new `kid` at most every 10 s."""
    ca_file: str | None = None
    """With jwksUri: a PEM bundle to trust instead of the system trust store (which honours SSL_CERT_FILE)."""
    algorithms: list[Algorithm] = Field(default_factory=_default_algorithms, min_length=1)
    """Algorithms its tokens may be signed with; never none or HS*, which a JWKS cannot vouch for."""

    @model_validator(mode="after")
    def _one_key_source(self) -> Issuer:
        if (self.jwks_file is None) == (self.jwks_uri is None):
            raise ValueError("an issuer needs exactly one of jwksFile and jwksUri")
        if self.jwks_uri is not None and not self.jwks_uri.startswith("https://"):
            raise ValueError("jwksUri must be an https:// URL")
        if self.ca_file is not None and self.jwks_uri is None:
            raise ValueError("caFile is only for jwksUri")
        for name, path in (("jwksFile", self.jwks_file), ("caFile", self.ca_file)):
            if path is not None and not path.startswith("/"):
                raise ValueError(f"{name} must be an absolute path")
        return self


class UsersSettings(_Strict):
    """How Mandate tells the human behind the agent: the token's header, the issuers it trusts."""

    header: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "authorization"
    """The header holding `Bearer <JWT>`; any other value there is no user (agents also carry API keys in it)."""
    groups_claim: Annotated[str, Field(min_length=1)] = "groups"
    """The claim holding the user's groups: a top-level list of strings."""
    issuers: list[Issuer] = Field(min_length=1)
    """The identity providers whose tokens name users."""


class SettingsSpec(_Strict):
    trust_domains: NameList = Field(default=["cluster.local"], min_length=1)
    """Trust domains a caller's SPIFFE ID may have."""
    trust_forwarded_client_cert: bool = False
    """Read the caller from x-forwarded-client-cert when Envoy reports no principal."""
    max_depth: Annotated[int, Field(ge=1, le=64)] = 5
    """The global bound on a chain's hops."""
    chain_header: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "x-delegation-chain"
    """The header that carries chain tokens."""
    chain_ttl: str = Field(default="15m", alias="chainTTL")
    """How long a chain record lives (a duration like 15m, 1h30m, 90s)."""
    unknown_callers: Literal["deny"] = "deny"
    """The only value: a caller no profile governs is refused."""
    users: UsersSettings | None = None
    """Optional: the users requests act for, from JWTs or Envoy's verified claims (absent: no users)."""

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
    """Always mandate.dev/v1alpha1."""
    metadata: Metadata
    """The document's name (and optional labels and annotations)."""


class Target(_Document):
    kind: Literal["Target"]
    """A destination that is not an agent."""
    spec: TargetSpec
    """How the destination is matched and read."""


class MissionProfile(_Document):
    kind: Literal["MissionProfile"]
    """The workloads it governs, what they may do, and how they are reached as agents."""
    spec: MissionProfileSpec
    """What the profile's workloads may do, and how they are reached."""


class Settings(_Document):
    kind: Literal["Settings"]
    """The set's global choices: at most one, named default."""
    spec: SettingsSpec = Field(default_factory=SettingsSpec)
    """The set's global choices, each with its default."""


Document = Target | MissionProfile | Settings
DOCUMENT_KINDS: dict[str, type[Target | MissionProfile | Settings]] = {
    "Target": Target,
    "MissionProfile": MissionProfile,
    "Settings": Settings,
}
