"""The generated policy sets: YAML for N MissionProfiles plus the Targets and Settings they use.

Generated, not hand-written, so that any size can be measured: each profile has its own SPIFFE
ID (one in ten a namespace wildcard, `.../ns/<own namespace>/sa/*`, the rest exact IDs) and host,
two to four MCP rules (60 % of those on servers that have one with a CEL `when`), zero to two
`agents` rules (half of them with grants, a third with `when`s), one or two egress hosts, some
http rules, acceptFrom, maxDepth, dry-run. Targets: six MCP servers, three egress hosts, one http
service, and one team MCP server per TEAM_SIZE profiles (1,000 of them at 100,000 profiles), on
which every profile of the team has a rule that no request uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

API = "mandate.dev/v1alpha1"
TRUST_DOMAIN = "cluster.local"
CHAIN_HEADER = "x-delegation-chain"
PROFILES_PER_FILE = 1_000
TEAM_SIZE = 100  # profiles per team MCP server
TEAM_TOOLS = ("search_docs", "get_doc", "update_doc")
WILDCARD_EVERY = 10  # profile i claims its whole namespace when i % WILDCARD_EVERY == WILDCARD_AT
WILDCARD_AT = 7
EGRESS_GATEWAY = "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"


@dataclass(frozen=True)
class McpServer:
    name: str
    tools: tuple[str, ...]
    when: str | None  # the CEL condition rules on this server may carry
    arguments: dict[str, Any]  # arguments that satisfy `when`
    bad_arguments: dict[str, Any] | None  # arguments that make `when` false
    resources: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()

    @property
    def principal(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/ns/tools/sa/{self.name}-mcp"

    @property
    def host(self) -> str:
        return f"{self.name}-mcp.tools.svc.cluster.local"


MCP_SERVERS: tuple[McpServer, ...] = (
    McpServer(
        "github",
        (
            "get_me",
            "list_issues",
            "get_issue",
            "create_issue",
            "add_label",
            "list_pull_requests",
            "get_file_contents",
            "create_pull_request",
            "merge_pull_request",
        ),
        'mcp.method != "tools/call" || !has(mcp.tool.arguments.repo) || mcp.tool.arguments.repo.startsWith("acme/")',
        {"repo": "acme/web", "state": "open", "labels": ["bug"]},
        {"repo": "evil/exfiltrate", "state": "open"},
        resources=("repo://acme/*",),
        prompts=("triage", "summarize_pr"),
    ),
    McpServer(
        "jira",
        ("search_issues", "get_issue", "create_issue", "transition_issue", "add_comment"),
        'mcp.method != "tools/call" || !has(mcp.tool.arguments.project) || mcp.tool.arguments.project in ["OPS", '
        '"SUP", "ENG"]',
        {"project": "SUP", "jql": "status = Open ORDER BY created DESC", "maxResults": 20},
        {"project": "HR", "jql": "assignee = currentUser()"},
    ),
    McpServer(
        "billing-db",
        ("lookup_invoice", "list_invoices", "refund", "void_invoice"),
        "!has(mcp.tool.arguments.amount_cents) || mcp.tool.arguments.amount_cents <= 50000",
        {"invoice": "INV-20417", "customer": "cus_8842", "amount_cents": 1299},
        {"invoice": "INV-20417", "customer": "cus_8842", "amount_cents": 990000},
    ),
    McpServer(
        "filesystem",
        ("read_file", "list_directory", "write_file", "delete_file", "search_files"),
        'mcp.method != "tools/call" || !has(mcp.tool.arguments.path) || '
        'mcp.tool.arguments.path.startsWith("/workspace/")',
        {"path": "/workspace/reports/q3.md"},
        {"path": "/etc/shadow"},
    ),
    McpServer(
        "slack",
        ("post_message", "list_channels", "read_channel", "add_reaction"),
        'mcp.method != "tools/call" || !has(mcp.tool.arguments.channel) || '
        '!mcp.tool.arguments.channel.startsWith("#exec")',
        {"channel": "#support", "text": "Ticket 4411 is resolved; closing."},
        {"channel": "#exec-board", "text": "hello"},
    ),
    McpServer(
        "search", ("web_search", "fetch_page"), None, {"query": "acme quarterly revenue 2026", "limit": 10}, None
    ),
)
SERVERS_BY_NAME = {server.name: server for server in MCP_SERVERS}
COMMON_TOOL = ("search", "web_search")  # every profile may search: the tool any unattenuated chain allows


@dataclass(frozen=True)
class EgressHost:
    target: str
    host: str
    rules: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (paths, methods) a profile may get
    get_paths: tuple[str, ...]  # concrete paths a GET rule above allows


EGRESS_HOSTS: tuple[EgressHost, ...] = (
    EgressHost(
        "github-api", "api.github.com", ((("/zen", "/repos/acme/*"), ("GET",)),), ("/repos/acme/web/issues", "/zen")
    ),
    EgressHost("pypi", "pypi.org", ((("/simple/*", "/pypi/*"), ("GET",)),), ("/simple/requests/", "/pypi/orjson/json")),
    EgressHost(
        "openai",
        "api.openai.com",
        ((("/v1/models", "/v1/models/*"), ("GET",)), (("/v1/chat/completions",), ("POST",))),
        ("/v1/models", "/v1/models/gpt-5-mini"),
    ),
)
HTTP_TARGET = ("status-page", "spiffe://cluster.local/ns/ops/sa/status-page", "status-page.ops.svc.cluster.local")
A2A_METHOD_SETS: tuple[tuple[str, ...] | None, ...] = (
    ("SendMessage", "GetTask"),
    None,  # every A2A method
    ("SendMessage", "SendStreamingMessage", "GetTask", "CancelTask"),
)


@dataclass
class AgentRuleSpec:
    granted: tuple[tuple[str, str], ...] | None  # (server, tool)s the grant allows; None: no grant
    methods: tuple[str, ...] | None
    when: bool  # carries `when: chain.depth <= 2`


@dataclass
class GeneratedProfile:
    name: str
    namespace: str
    dry_run: bool
    mcp: dict[str, tuple[str, ...]]  # server -> tools
    when: dict[str, bool]  # server -> the rule carries the server's `when`
    agents: dict[str, AgentRuleSpec] = field(default_factory=dict)  # callee -> its rule
    egress: list[tuple[EgressHost, str]] = field(default_factory=list)  # (host, a path a GET is allowed on)
    extras: dict[str, Any] = field(default_factory=dict)  # resources, prompts, http, maxDepth: no request uses them

    @property
    def wildcard(self) -> bool:
        return int(self.name.rsplit("-", 1)[1]) % WILDCARD_EVERY == WILDCARD_AT

    @property
    def principal(self) -> str:
        """The SPIFFE ID its requests carry: under a wildcard, one workload of its namespace."""
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/sa/{'worker-1' if self.wildcard else self.name}"

    @property
    def claim(self) -> str:
        """What its profile's `principals` says."""
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/sa/{'*' if self.wildcard else self.name}"

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass
class GeneratedSet:
    profiles: list[GeneratedProfile]
    by_name: dict[str, GeneratedProfile]
    files: int
    targets: int


Files = list[tuple[str, list[dict[str, Any]]]]  # (file name, its YAML documents)

# What a decision costs depends on the shape of the rules it meets (a `when` or not, a grant or
# not, how many rules), so shapes follow the profile's index in fixed proportions, identical at
# every size; names, tools, callees and hosts are drawn at random. Comparing sizes then compares
# the number of profiles, not a different mix.
WHEN_SHARE = (0, 1, 2)  # rule k of profile i carries its server's `when` iff (i + k) % 5 in WHEN_SHARE
AGENT_PATTERN = ((), (False,), (True,), (True, False))  # by index % 4: agents rules, True = with a grant


def generate(size: int, seed: int = 1) -> tuple[GeneratedSet, Files]:
    """`size` profiles with realistic variety, and the YAML documents per file."""
    rng = random.Random(seed * 1_000_003 + size)
    namespaces = max(1, size // 25)
    profiles = [_own_rules(index, seed, namespaces) for index in range(size)]
    _add_agents_rules(profiles, rng)
    files = _policy_files(profiles)
    targets = len(files[1][1])
    return GeneratedSet(profiles, {profile.name: profile for profile in profiles}, len(files), targets), files


def _own_rules(index: int, seed: int, namespaces: int) -> GeneratedProfile:
    """Profile `index` with every rule but its `agents` ones, drawn from its own generator so
    that a profile is the same at every size: `--callers N` then meets the same agents."""
    own = random.Random(f"{seed}/{index}")
    servers = ["search", *own.sample([s.name for s in MCP_SERVERS if s.name != "search"], 1 + index % 3)]
    mcp: dict[str, tuple[str, ...]] = {}
    when: dict[str, bool] = {}
    for position, server_name in enumerate(servers):
        catalogue = SERVERS_BY_NAME[server_name]
        tools: tuple[str, ...]
        if server_name == "search":
            tools = ("web_search",) if own.random() < 0.5 else ("web_search", "fetch_page")
        else:  # never the whole catalogue, so a refused tool always exists
            tools = tuple(own.sample(catalogue.tools, own.randint(1, len(catalogue.tools) - 1)))
        mcp[server_name] = tools
        when[server_name] = catalogue.when is not None and (index + position) % 5 in WHEN_SHARE
    # a wildcard claims a namespace of its own: two profiles never claim one namespace
    namespace = f"agent-{index:05d}" if index % WILDCARD_EVERY == WILDCARD_AT else f"team-{index % namespaces:03d}"
    profile = GeneratedProfile(f"agent-{index:05d}", namespace, index % 20 == 19, mcp, when)
    for host in own.sample(EGRESS_HOSTS, 1 + index % 2):
        profile.egress.append((host, own.choice(host.get_paths)))
    github = SERVERS_BY_NAME["github"]
    profile.extras = {
        "resources": list(github.resources) if own.random() < 0.5 else [],
        "prompts": list(github.prompts[: own.randint(1, len(github.prompts))]) if own.random() < 0.5 else [],
        "http": own.random() < 0.3,
        "max_depth": 3 if own.random() < 0.2 else None,
    }
    return profile


def _add_agents_rules(profiles: list[GeneratedProfile], rng: random.Random) -> None:
    """The `agents` rules, once every profile's own rules exist: a grant is carved out of the callee's."""
    size = len(profiles)
    if size < 2:
        return
    for index, profile in enumerate(profiles):
        for position, with_grant in enumerate(AGENT_PATTERN[index % 4]):
            callee = profiles[(index + rng.randrange(1, size)) % size]  # never the profile itself
            if callee.name in profile.agents:
                continue
            granted = None
            if with_grant:
                granted_server = rng.choice([s for s in callee.mcp if s != "search"])
                callee_tools = callee.mcp[granted_server]
                granted = tuple(
                    (granted_server, tool) for tool in rng.sample(callee_tools, rng.randint(1, len(callee_tools)))
                )
            methods = A2A_METHOD_SETS[(index + position) % len(A2A_METHOD_SETS)]
            profile.agents[callee.name] = AgentRuleSpec(granted, methods, (index + position) % 3 == 0)


def _policy_files(profiles: list[GeneratedProfile]) -> Files:
    """Settings, Targets, then the profiles, PROFILES_PER_FILE to a file, as a large deployment splits them."""
    callers_of: dict[str, list[str]] = {}
    for profile in profiles:
        for callee_name in profile.agents:
            callers_of.setdefault(callee_name, []).append(profile.name)
    files: Files = [
        (
            "settings.yaml",
            [
                _doc(
                    "Settings",
                    "default",
                    {"trustDomains": [TRUST_DOMAIN], "maxDepth": 5, "chainHeader": CHAIN_HEADER, "chainTTL": "15m"},
                )
            ],
        ),
        ("targets.yaml", _target_documents(len(profiles))),
    ]
    documents: list[dict[str, Any]] = []
    for index, profile in enumerate(profiles):
        accept_from = sorted(callers_of[profile.name]) if profile.name in callers_of and index % 5 == 4 else []
        documents.append(_profile_document(profile, accept_from))
        if len(documents) == PROFILES_PER_FILE:
            files.append((f"profiles-{len(files) - 2:03d}.yaml", documents))
            documents = []
    if documents:
        files.append((f"profiles-{len(files) - 2:03d}.yaml", documents))
    return files


def _doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": API, "kind": kind, "metadata": metadata, "spec": spec}


def team_server(index: int) -> str:
    """The team MCP server of profile `index` (the same at every size)."""
    return f"team-{index // TEAM_SIZE:04d}-docs"


def _target_documents(profiles: int) -> list[dict[str, Any]]:
    documents = [
        _doc(
            "Target",
            server.name,
            {"kind": "mcp", "principals": [server.principal], "hosts": [server.host], "pathPrefix": "/mcp"},
        )
        for server in MCP_SERVERS
    ]
    documents += [_doc("Target", host.target, {"kind": "egress", "hosts": [host.host]}) for host in EGRESS_HOSTS]
    name, principal, host = HTTP_TARGET
    documents.append(_doc("Target", name, {"kind": "http", "principals": [principal], "hosts": [host]}))
    for team in range(0, profiles, TEAM_SIZE):
        server = team_server(team)
        documents.append(
            _doc(
                "Target",
                server,
                {
                    "kind": "mcp",
                    "principals": [f"spiffe://{TRUST_DOMAIN}/ns/docs/sa/{server}"],
                    "hosts": [f"{server}.docs.svc.cluster.local"],
                },
            )
        )
    return documents


def _profile_document(profile: GeneratedProfile, accept_from: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "principals": [profile.claim],
        "hosts": [profile.host],
        "mission": f"Works the {profile.namespace} queue: reads and triages tickets, looks things up, "
        "asks specialist agents; never deletes.",
    }
    if profile.dry_run:
        spec["mode"] = "dry-run"
    spec["mcp"] = _mcp_rules(profile)
    agents = [_agents_rule(callee, rule) for callee, rule in profile.agents.items()]
    if agents:
        spec["agents"] = agents
    spec["egress"] = [
        {"host": host.host, "paths": list(paths), "methods": list(methods)}
        for host, _ in profile.egress
        for paths, methods in host.rules
    ]
    if profile.extras["http"]:
        spec["http"] = [{"target": HTTP_TARGET[0], "paths": ["/api/*"], "methods": ["GET"]}]
    delegation: dict[str, Any] = {}
    if profile.extras["max_depth"]:
        delegation["maxDepth"] = profile.extras["max_depth"]
    if accept_from:
        delegation["acceptFrom"] = accept_from
    if delegation:
        spec["delegation"] = delegation
    return _doc("MissionProfile", profile.name, spec, {"team": profile.namespace})


def _mcp_rules(profile: GeneratedProfile) -> list[dict[str, Any]]:
    rules = []
    for server_name, tools in profile.mcp.items():
        rule: dict[str, Any] = {"server": server_name, "tools": list(tools)}
        if server_name == "github" and profile.extras["resources"]:
            rule["resources"] = profile.extras["resources"]
        if server_name == "github" and profile.extras["prompts"]:
            rule["prompts"] = profile.extras["prompts"]
        if profile.when[server_name]:
            rule["when"] = SERVERS_BY_NAME[server_name].when
        rules.append(rule)
    index = int(profile.name.rsplit("-", 1)[1])
    rules.append({"server": team_server(index), "tools": list(TEAM_TOOLS[: 1 + index % len(TEAM_TOOLS)])})
    return rules


def _agents_rule(callee: str, spec: AgentRuleSpec) -> dict[str, Any]:
    rule: dict[str, Any] = {"agent": callee}
    if spec.methods is not None:
        rule["methods"] = list(spec.methods)
    if spec.when:
        rule["when"] = "chain.depth <= 2"
    if spec.granted is not None:
        grant: dict[str, list[str]] = {}
        for granted_server, tool in spec.granted:
            grant.setdefault(granted_server, []).append(tool)
        rule["grant"] = {"mcp": [{"server": name, "tools": tools} for name, tools in grant.items()]}
    return rule


def write_policy_set(directory: str | Path, size: int, seed: int = 1) -> GeneratedSet:
    """Write the generated policy set for `size` profiles into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generated, files = generate(size, seed)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    for name, documents in files:
        text = yaml.dump_all(documents, Dumper=dumper, sort_keys=False, default_flow_style=None, width=160)
        (directory / name).write_text(text, encoding="utf-8")
    return generated
