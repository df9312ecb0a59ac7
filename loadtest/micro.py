"""In-process micro-benchmark of Mandate's decision path alone (SPEC §8, first bullet).

What is timed is "parsed request in, response out": from an already-built `AuthzInput` to the
serialized `CheckResponse`, i.e. `Authorizer.decide(request)` followed by
`ResponseTemplates.render(decision)`, as `mandate serve` answers. The protobuf parse of the
CheckRequest, gRPC, metrics and the audit line are
*not* in it (the gRPC benchmarks measure those). Each call is timed on its own with
`time.perf_counter_ns()`, after a warm-up, with the garbage collector enabled and the heap
frozen after loading exactly as `mandate serve` does (`authz.serve.reload.freeze_heap`), so the tails
include the collections a production process would see.

Policy sets are generated, not hand-written: `write_policy_set(directory, profiles, seed)`
writes YAML for N MissionProfiles (each with its own SPIFFE ID and host, two to four MCP
rules, 60 % of those on servers that have one with a CEL `when`, zero to two `agents` rules,
half of them with grants, a third with `when`s, one or two egress hosts, some http rules,
acceptFrom, maxDepth, dry-run) plus Targets (six MCP servers, three egress hosts, one http
service) and Settings. Rule *shapes* (how many rules, which carry a `when` or a grant) follow
the profile's index in fixed proportions, and request pools are drawn in fixed proportions
too, so every size meets the same mix. Each size is compiled once
with `compile_directory`, timed, and its resident memory measured twice: in this process
(VmRSS after compiling, and the growth it caused) and, unless disabled, in a fresh Python
process that only imports `authz` and compiles the same directory (the number to hold
against SPEC's "< 300 MB with 10,000 profiles"; `peak_mb` is VmHWM, which includes the YAML
and pydantic transients of loading).

Which agents send the requests is the other half of comparing sizes. By default they are the
first N profiles, N the smallest size (`--callers`): every size then meets the same agents
with the same rules, and only the number of profiles loaded differs, which is what SPEC §8's
"flat from 10 to 10,000 profiles" asks about. `--callers all` draws them from every profile, so
a larger size also meets more agents (~2,000 distinct ones in the mix at 10,000): their
objects no longer fit the CPU caches between two of their requests, which a tight loop over ten
agents never sees (loadtest/ANALYSIS.md). `loadtest.run` runs both.

All sizes are loaded first; then each scenario's seconds are timed in `--rounds` rounds, the
sizes alternating and their order reversed every other round, so that a noisy minute on a
shared machine lands on every size alike. Each figure pools the samples of every round.

Scenarios (per size):

  floor                    the same timing loop around building a fixed allow CheckResponse
  build_response_allow     build_response() alone for a typical allow decision
  mcp_call_allowed         MCP tools/call the caller's mission allows (CEL `when` where the rule has one)
  mcp_call_denied          MCP tools/call refused: tool not in the rule, server not in the mission,
                           or a `when` that is false (a third each)
  mcp_call_*_when_afresh   the same two, with the policy set's remembered `when` answers forgotten
                           before every call (as if each call brought argument values never seen)
  mcp_tools_list           MCP session plumbing (tools/list)
  egress_get               a GET to an egress host, allowed by an egress rule
  a2a_send_reuse           A2A SendMessage to an agent the caller may call; the same edge was minted
                           less than 30 s ago, so the token is handed out again (no store write)
  a2a_send_mint            the same calls, each minting a fresh chain (in-process store)
  chained_call_cached      the callee of such a SendMessage calls a tool carrying the token minted
                           earlier; the record is in the (in-process) store: MAC, lookup, attenuation
  mix                      40 % mcp_call_allowed, 10 % mcp_call_denied, 15 % mcp_tools_list,
                           10 % egress_get, 5 % a2a_send_reuse, 20 % chained_call_cached
  mix_cache_hit            the mix again, serialized, through `Authorizer.check_bytes` after each
                           was decided once: what the decision cache answers with (the key read
                           from the bytes, lookup, fresh id, kept response; not counted for SPEC §8,
                           whose target is held against the decisions themselves)
  mix_new_ids              the same, but every JSON-RPC call under an id no call used before, as
                           MCP and A2A clients number theirs: the key leaves the id out, so allows
                           are answered by the cache and denies (whose body echoes the id) decided
                           afresh (not counted for SPEC §8 either)
  -- with Redis (--redis-url / --start-redis; skipped otherwise):
  chained_call_redis_cached    as chained_call_cached, against a RedisChainStore whose local cache
                               holds the record (it minted it)
  chained_call_redis_uncached  the token was minted by *another* RedisChainStore (another replica)
                               just before the call, so this replica's cache misses and the
                               decision costs exactly one Redis GET (counted with INFO commandstats)
  a2a_send_mint_redis          a fresh mint through Redis (one SET NX per call)
  (Back-to-back decisions without I/O can starve the store's revocation listener thread of the
  GIL past its 0.75 s liveness; the calls then denied `chain_store_unavailable` are counted and
  reported under "warnings", not hidden.)

`run(sizes, seconds_per_case, redis_url)` returns a JSON-serialisable dict:

  {
    "benchmark": "mandate-micro", "version": 1,
    "python": str, "platform": str, "cpu_count": int, "started": ISO-8601 str,
    "seconds_per_case": float, "rounds": int, "seed": int,
    "callers": int | None,                        # requests from the first N profiles; None: every profile
    "smoke": bool, "gc_enabled": bool, "heap_frozen": bool,
    "redis": str | None,                          # the URL used, or None (Redis cases skipped)
    "what_is_timed": str,
    "sizes": [                                    # one per requested size, in order
      {
        "profiles": int, "targets": int, "policy_files": int,
        "generate_seconds": float, "compile_seconds": float,
        "rss_mb": {"in_process_after_compile": float, "in_process_growth": float,
                   "fresh_process_after_compile": float | None, "fresh_process_peak": float | None,
                   "fresh_process_after_import": float | None},
        "pool": int,                              # distinct requests built per scenario
        "scenarios": {
          name: {
            "description": str,
            "expect": "allow" | "deny" | "mixed",
            "spec": bool,                         # counts for SPEC §8's 50 µs / flatness targets
            "iterations": int,                    # timed calls (warm-up excluded)
            "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us": float,
            "calls_per_s": float,                 # 1e6 / mean_us: one core, timed region only
            "allowed": int, "denied": int,        # by the response actually built (OK vs not)
            "outcomes": {label: count},           # e.g. "allow+verified", "deny:tool_not_allowed"
            "gc_collections": [gen0, gen1, gen2], # collections that ran during the timed calls
            "redis_gets_per_call": float,         # Redis cases only
          }
        },
        "skipped": {name: reason},               # scenarios that could not run at this size
        "warnings": [str],                        # e.g. Redis liveness lapses: calls denied
                                                  # chain_store_unavailable (the scenario then also
                                                  # carries "store_unavailable_calls": int)
      }
    ],
    "summary": {
      "by_scenario": {name: {"p50_us": {size: v}, "p99_us": {size: v},
                             "p99_ratio_largest_vs_smallest": float | None}},
      "spec": {"p99_target_us": 50.0, "flat_tolerance": 0.2,
               "worst_p99_us": {size: {"scenario": str, "p99_us": float}},
               "p99_target_met": bool, "flat": bool | None, "flat_detail": {name: ratio},
               "excluded": {name: reason}},       # spec cases left out of the two verdicts
    },
  }

Sizes are JSON object keys as strings in "summary". Run it as
`python -m loadtest.micro [--sizes 10,1000,10000] [--seconds-per-case N] [--rounds N]
[--callers N|all] [--redis-url URL | --start-redis] [--json OUT.json] [--smoke]`.

The Redis helper (`local_redis()`) is a small copy of the test harness's RedisServer start
logic, so that `loadtest` does not import from `tests/`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc import code_pb2, status_pb2

from authz.chains.memory import MemoryChainStore
from authz.chains.store import Hop
from authz.check.decision import Decision, allow
from authz.check.delegation import ChainStep
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, to_check_request
from authz.check.response import build_response
from authz.check.templates import ResponseTemplates
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from authz.serve.heap import freeze_heap

API = "mandate.dev/v1alpha1"
TRUST_DOMAIN = "cluster.local"
CHAIN_HEADER = "x-delegation-chain"
DEFAULT_SIZES = (10, 1_000, 10_000)
DEFAULT_SECONDS = 3.0
DEFAULT_ROUNDS = 3  # each size's share of a scenario's seconds is timed in this many alternating rounds
P99_TARGET_US = 50.0
FLAT_TOLERANCE = 0.2
PROFILES_PER_FILE = 1_000
EGRESS_GATEWAY = "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"
WHAT_IS_TIMED = (
    "Authorizer.decide(AuthzInput) + ResponseTemplates.render(decision) (serialized CheckResponse), one call per sample, "
    "time.perf_counter_ns, gc enabled; no protobuf parse, no gRPC, no metrics/audit"
)

# --- the generated world ----------------------------------------------------------------


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
        ("get_me", "list_issues", "get_issue", "create_issue", "add_label", "list_pull_requests",
         "get_file_contents", "create_pull_request", "merge_pull_request"),
        'mcp.method != "tools/call" || !has(mcp.tool.arguments.repo) || mcp.tool.arguments.repo.startsWith("acme/")',
        {"repo": "acme/web", "state": "open", "labels": ["bug"]},
        {"repo": "evil/exfiltrate", "state": "open"},
        resources=("repo://acme/*",),
        prompts=("triage", "summarize_pr"),
    ),
    McpServer(
        "jira",
        ("search_issues", "get_issue", "create_issue", "transition_issue", "add_comment"),
        'mcp.method != "tools/call" || !has(mcp.tool.arguments.project) || mcp.tool.arguments.project in ["OPS", "SUP", "ENG"]',
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
        'mcp.method != "tools/call" || !has(mcp.tool.arguments.path) || mcp.tool.arguments.path.startsWith("/workspace/")',
        {"path": "/workspace/reports/q3.md"},
        {"path": "/etc/shadow"},
    ),
    McpServer(
        "slack",
        ("post_message", "list_channels", "read_channel", "add_reaction"),
        'mcp.method != "tools/call" || !has(mcp.tool.arguments.channel) || !mcp.tool.arguments.channel.startsWith("#exec")',
        {"channel": "#support", "text": "Ticket 4411 is resolved; closing."},
        {"channel": "#exec-board", "text": "hello"},
    ),
    McpServer("search", ("web_search", "fetch_page"), None, {"query": "acme quarterly revenue 2026", "limit": 10}, None),
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
    EgressHost("github-api", "api.github.com", ((("/zen", "/repos/acme/*"), ("GET",)),), ("/repos/acme/web/issues", "/zen")),
    EgressHost("pypi", "pypi.org", ((("/simple/*", "/pypi/*"), ("GET",)),), ("/simple/requests/", "/pypi/orjson/json")),
    EgressHost("openai", "api.openai.com", ((("/v1/models", "/v1/models/*"), ("GET",)), (("/v1/chat/completions",), ("POST",))),
               ("/v1/models", "/v1/models/gpt-5-mini")),
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
    def principal(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/sa/{self.name}"

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass
class GeneratedSet:
    profiles: list[GeneratedProfile]
    by_name: dict[str, GeneratedProfile]
    files: int
    targets: int


# What a decision costs depends on the shape of the rules it meets (a `when` or not, a grant or
# not, how many rules), so shapes follow the profile's index in fixed proportions, identical at
# every size; names, tools, callees and hosts are drawn at random. Comparing sizes then compares
# the number of profiles, not a different mix.
WHEN_SHARE = (0, 1, 2)  # rule k of profile i carries its server's `when` iff (i + k) % 5 in WHEN_SHARE
AGENT_PATTERN = ((), (False,), (True,), (True, False))  # by index % 4: agents rules, True = with a grant


def generate(size: int, seed: int = 1) -> tuple[GeneratedSet, list[tuple[str, list[dict[str, Any]]]]]:
    """`size` profiles with realistic variety, and the YAML documents per file."""
    rng = random.Random(seed * 1_000_003 + size)
    namespaces = max(1, size // 25)
    others = [s.name for s in MCP_SERVERS if s.name != "search"]
    profiles: list[GeneratedProfile] = []
    for index in range(size):
        own = random.Random(f"{seed}/{index}")  # a profile's own rules do not depend on the size
        name = f"agent-{index:05d}"
        servers = ["search", *own.sample(others, 1 + index % 3)]
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
        profile = GeneratedProfile(name, f"team-{index % namespaces:03d}", index % 20 == 19, mcp, when)
        for host in own.sample(EGRESS_HOSTS, 1 + index % 2):
            profile.egress.append((host, own.choice(host.get_paths)))
        github = SERVERS_BY_NAME["github"]
        profile.extras = {
            "resources": list(github.resources) if own.random() < 0.5 else [],
            "prompts": list(github.prompts[: own.randint(1, len(github.prompts))]) if own.random() < 0.5 else [],
            "http": own.random() < 0.3,
            "max_depth": 3 if own.random() < 0.2 else None,
        }
        profiles.append(profile)
    by_name = {profile.name: profile for profile in profiles}
    # agents rules, once every profile's own rules exist (a grant is carved out of the callee's)
    for index, profile in enumerate(profiles):
        if size < 2:
            break
        for position, with_grant in enumerate(AGENT_PATTERN[index % 4]):
            callee = profiles[(index + rng.randrange(1, size)) % size]  # never the profile itself
            if callee.name in profile.agents:
                continue
            granted = None
            if with_grant:
                granted_server = rng.choice([s for s in callee.mcp if s != "search"])
                callee_tools = callee.mcp[granted_server]
                granted = tuple((granted_server, tool) for tool in rng.sample(callee_tools, rng.randint(1, len(callee_tools))))
            methods = A2A_METHOD_SETS[(index + position) % len(A2A_METHOD_SETS)]
            profile.agents[callee.name] = AgentRuleSpec(granted, methods, (index + position) % 3 == 0)
    callers_of: dict[str, list[str]] = {}
    for profile in profiles:
        for callee_name in profile.agents:
            callers_of.setdefault(callee_name, []).append(profile.name)

    files: list[tuple[str, list[dict[str, Any]]]] = [
        ("settings.yaml", [_doc("Settings", "default", {
            "trustDomains": [TRUST_DOMAIN], "maxDepth": 5, "chainHeader": CHAIN_HEADER, "chainTTL": "15m"})]),
        ("targets.yaml", _target_documents()),
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
    targets = len(files[1][1])
    return GeneratedSet(profiles, by_name, len(files), targets), files


def _doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": API, "kind": kind, "metadata": metadata, "spec": spec}


def _target_documents() -> list[dict[str, Any]]:
    documents = [
        _doc("Target", server.name, {"kind": "mcp", "principals": [server.principal], "hosts": [server.host], "pathPrefix": "/mcp"})
        for server in MCP_SERVERS
    ]
    documents += [_doc("Target", host.target, {"kind": "egress", "hosts": [host.host]}) for host in EGRESS_HOSTS]
    name, principal, host = HTTP_TARGET
    documents.append(_doc("Target", name, {"kind": "http", "principals": [principal], "hosts": [host]}))
    return documents


def _profile_document(profile: GeneratedProfile, accept_from: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "principals": [profile.principal],
        "hosts": [profile.host],
        "mission": f"Works the {profile.namespace} queue: reads and triages tickets, looks things up, "
                   "asks specialist agents; never deletes.",
    }
    if profile.dry_run:
        spec["mode"] = "dry-run"
    mcp = []
    for server_name, tools in profile.mcp.items():
        server = SERVERS_BY_NAME[server_name]
        rule: dict[str, Any] = {"server": server_name, "tools": list(tools)}
        if server_name == "github" and profile.extras["resources"]:
            rule["resources"] = profile.extras["resources"]
        if server_name == "github" and profile.extras["prompts"]:
            rule["prompts"] = profile.extras["prompts"]
        if profile.when[server_name]:
            rule["when"] = server.when
        mcp.append(rule)
    spec["mcp"] = mcp
    agents = []
    for callee, agent_rule in profile.agents.items():
        rule = {"agent": callee}
        if agent_rule.methods is not None:
            rule["methods"] = list(agent_rule.methods)
        if agent_rule.when:
            rule["when"] = "chain.depth <= 2"
        if agent_rule.granted is not None:
            grant: dict[str, list[str]] = {}
            for granted_server, tool in agent_rule.granted:
                grant.setdefault(granted_server, []).append(tool)
            rule["grant"] = {"mcp": [{"server": name, "tools": tools} for name, tools in grant.items()]}
        agents.append(rule)
    if agents:
        spec["agents"] = agents
    egress = []
    for host, _ in profile.egress:
        for paths, methods in host.rules:
            egress.append({"host": host.host, "paths": list(paths), "methods": list(methods)})
    spec["egress"] = egress
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


# --- requests ------------------------------------------------------------------------


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.count = 0

    def hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def jsonrpc(self) -> int:
        self.count += 1
        return self.count

    def common_headers(self, method: str, path: str, host: str, user_agent: str) -> dict[str, str]:
        request_id = f"{self.hex(32)}-{self.hex(16)}-4{self.hex(12)}-a{self.hex(12)}-{self.hex(48)}"
        return {
            ":method": method,
            ":path": path,
            ":authority": host,
            ":scheme": "https",
            "user-agent": user_agent,
            "x-request-id": request_id,
            "traceparent": f"00-{self.hex(128)}-{self.hex(64)}-01",
            "x-forwarded-proto": "https",
            "x-envoy-attempt-count": "1",
        }


def _mcp_request(ids: _Ids, caller: GeneratedProfile, server: McpServer, method: str, params: dict[str, Any] | None,
                 token: str = "") -> AuthzInput:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": ids.jsonrpc(), "method": method}
    if params is not None:
        message["params"] = params
    body = orjson.dumps(message)
    headers = ids.common_headers("POST", "/mcp", server.host, "mcp-python-sdk/2.3.0 python-httpx/0.28.1")
    headers.update({
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "content-length": str(len(body)),
        "mcp-session-id": ids.hex(128),
    })
    if ids.rng.random() < 0.5:  # the 2026-07-28 revision adds routing headers that must match the body
        headers["mcp-protocol-version"] = "2026-07-28"
        headers["mcp-method"] = method
        if params is not None and "name" in params:
            headers["mcp-name"] = params["name"]
    else:
        headers["mcp-protocol-version"] = "2025-11-25"
    if token:
        headers[CHAIN_HEADER] = token
    return AuthzInput(
        method="POST", path="/mcp", host=server.host, headers=headers, body=body,
        source_principal=caller.principal, destination_principal=server.principal, request_id=headers["x-request-id"],
    )


def tool_call(ids: _Ids, caller: GeneratedProfile, server_name: str, tool: str, arguments: dict[str, Any] | None = None,
              token: str = "") -> AuthzInput:
    server = SERVERS_BY_NAME[server_name]
    params = {"name": tool, "arguments": dict(server.arguments if arguments is None else arguments)}
    return _mcp_request(ids, caller, server, "tools/call", params, token)


def a2a_send(ids: _Ids, caller: GeneratedProfile, callee: GeneratedProfile) -> AuthzInput:
    body = orjson.dumps({
        "jsonrpc": "2.0", "id": ids.jsonrpc(), "method": "SendMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": f"m-{ids.hex(64)}",
                               "parts": [{"text": "Customer cus_8842 asks why invoice INV-20417 was charged twice; please check."}]}},
    })
    headers = ids.common_headers("POST", "/", callee.host, "a2a-python-sdk/1.3.0 python-httpx/0.28.1")
    headers.update({"content-type": "application/json", "accept": "application/json", "a2a-version": "1.0",
                    "content-length": str(len(body))})
    return AuthzInput(
        method="POST", path="/", host=callee.host, headers=headers, body=body,
        source_principal=caller.principal, destination_principal=callee.principal, request_id=headers["x-request-id"],
    )


def egress_get(ids: _Ids, caller: GeneratedProfile, host: EgressHost, path: str) -> AuthzInput:
    full = f"{path}?per_page=50" if ids.rng.random() < 0.5 else path
    headers = ids.common_headers("GET", full, host.host, "python-httpx/0.28.1")
    headers.update({"accept": "application/json", "authorization": f"Bearer {ids.hex(160)}"})
    return AuthzInput(
        method="GET", path=full, host=host.host, headers=headers, body=b"",
        source_principal=caller.principal, destination_principal=EGRESS_GATEWAY, request_id=headers["x-request-id"],
    )


@dataclass
class Edge:
    caller: GeneratedProfile
    callee: GeneratedProfile
    server: str  # a tool the callee may call within the caller's scope for it
    tool: str
    granted: bool


def chain_edges(generated: GeneratedSet) -> list[Edge]:
    """Every agents edge, with a tool call the callee may make while acting for the caller."""
    edges = []
    for caller in generated.profiles:
        for callee_name, rule in caller.agents.items():
            callee = generated.by_name[callee_name]
            if rule.granted:
                server, tool = rule.granted[0]
            else:  # no grant: the caller's own rules bound the callee; both may search
                server, tool = COMMON_TOOL
            edges.append(Edge(caller, callee, server, tool, rule.granted is not None))
    return edges


@dataclass
class Pools:
    mcp_call_allowed: list[AuthzInput]
    mcp_call_denied: list[AuthzInput]
    mcp_tools_list: list[AuthzInput]
    egress_get: list[AuthzInput]
    a2a_send: list[AuthzInput]
    edges: list[Edge]


def first_callers(generated: GeneratedSet, callers: int | None) -> GeneratedSet:
    """The set as request pools see it when only its first `callers` profiles send requests
    (None: every profile). Those profiles' own rules are the same at every size, so the pools
    hold the same kinds of requests from the same agents whatever the policy set's size."""
    return generated if callers is None else dataclasses.replace(generated, profiles=generated.profiles[:callers])


def build_pools(generated: GeneratedSet, pool: int, seed: int = 1) -> Pools:
    """`pool` requests per kind from random callers, in the same proportions at every size:
    60 % of allowed calls meet a `when`; denials are a third each tool / server / false `when`;
    half the A2A edges carry a grant."""
    rng = random.Random(seed * 7_919 + len(generated.profiles))
    ids = _Ids(rng)
    profiles = generated.profiles
    enforced = [p for p in profiles if not p.dry_run] or profiles
    with_when = [(p, s) for p in profiles for s in p.mcp if p.when[s]]
    without_when = [(p, s) for p in profiles for s in p.mcp if not p.when[s]]
    enforced_when = [(p, s) for p in enforced for s in p.mcp if p.when[s]]
    enforced_partial = [(p, s) for p in enforced for s in p.mcp if len(p.mcp[s]) < len(SERVERS_BY_NAME[s].tools)]

    allowed = []
    for index in range(pool):
        caller, server = rng.choice(with_when if index % 5 < 3 and with_when else without_when)
        allowed.append(tool_call(ids, caller, server, rng.choice(caller.mcp[server])))
    denied = []
    for index in range(pool):
        kind = index % 3
        if kind == 2 and enforced_when:  # a `when` that is false
            caller, server = rng.choice(enforced_when)
            bad = SERVERS_BY_NAME[server].bad_arguments
            denied.append(tool_call(ids, caller, server, rng.choice(caller.mcp[server]), bad))
        elif kind == 1:  # a server outside the mission (a profile has at most four of six)
            caller = rng.choice(enforced)
            server = rng.choice([s.name for s in MCP_SERVERS if s.name not in caller.mcp])
            denied.append(tool_call(ids, caller, server, SERVERS_BY_NAME[server].tools[0]))
        else:  # a tool the rule does not list
            caller, server = rng.choice(enforced_partial)
            missing = [t for t in SERVERS_BY_NAME[server].tools if t not in caller.mcp[server]]
            denied.append(tool_call(ids, caller, server, rng.choice(missing)))
    plumbing = []
    for _ in range(pool):
        caller = rng.choice(profiles)
        mcp_server = SERVERS_BY_NAME[rng.choice(list(caller.mcp))]
        plumbing.append(_mcp_request(ids, caller, mcp_server, "tools/list", {} if rng.random() < 0.5 else None))
    egress = []
    for _ in range(pool):
        caller = rng.choice(profiles)
        host, path = rng.choice(caller.egress)
        egress.append(egress_get(ids, caller, host, path))
    every_edge = chain_edges(generated)
    granted = [edge for edge in every_edge if edge.granted]
    plain = [edge for edge in every_edge if not edge.granted]
    edges = []
    if every_edge:
        edges = [rng.choice((granted if index % 2 else plain) or every_edge) for index in range(pool)]
    a2a = [a2a_send(ids, edge.caller, edge.callee) for edge in edges]
    return Pools(allowed, denied, plumbing, egress, a2a, edges)


def chained_calls(authorizer: Authorizer, pools: Pools, seed: int = 1) -> list[AuthzInput]:
    """Mint a token for each edge through `authorizer` (an allowed SendMessage), then the
    callee's tool call carrying it."""
    ids = _Ids(random.Random(seed * 31 + len(pools.edges)))
    header = authorizer.policy.settings.chain_header
    calls = []
    for edge, send in zip(pools.edges, pools.a2a_send, strict=True):
        decision = authorizer.decide(send)
        if not decision.minted_token:
            raise RuntimeError(f"minting {edge.caller.name} -> {edge.callee.name} failed: {decision.verdict}")
        build_response(decision, header)
        calls.append(tool_call(ids, edge.callee, edge.server, edge.tool, token=decision.minted_token))
    return calls


# --- timing --------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    description: str
    expect: str  # allow | deny | mixed
    call: Callable[[Any], Any]
    args: Sequence[Any] = ()
    prepare: Callable[[int], Any] | None = None  # per-iteration argument, built outside the timed region
    label: Callable[[Any], tuple[bool, str]] | None = None  # (response allowed, outcome label)
    spec: bool = True
    redis_client: Any = None  # count GETs on this server during the case
    uses_redis: bool = False


def _decision_label(decision: Decision) -> tuple[bool, str]:
    verdict = decision.verdict
    label = decision.result if verdict.allowed or decision.dry_run else f"deny:{verdict.reason}"
    if decision.dry_run and not verdict.allowed:
        label = f"would_deny:{verdict.reason}"
    if decision.chain_events:
        label += "+" + "+".join(decision.chain_events)
    return decision.enforced_allow, label


def _response_label(response: CheckResponse) -> tuple[bool, str]:
    allowed = response.status.code == code_pb2.OK
    return allowed, "allow" if allowed else "deny"


def _wire_label(response: bytes) -> tuple[bool, str]:
    return _response_label(CheckResponse.FromString(response))


def decision_path(authorizer: Authorizer) -> Callable[[AuthzInput], Decision]:
    """The timed function: decide, then render the serialized CheckResponse Envoy would get, as
    `mandate serve` does (ResponseTemplates)."""
    decide = authorizer.decide
    render = ResponseTemplates(authorizer.policy.settings.chain_header).render

    def decide_and_answer(request: AuthzInput) -> Decision:
        decision = decide(request)
        render(decision)
        return decision

    return decide_and_answer


_FLOOR_STATUS = status_pb2.Status(code=code_pb2.OK)


def floor_call(_: object) -> CheckResponse:
    return CheckResponse(status=_FLOOR_STATUS)


def _percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted ns samples, in µs."""
    rank = math.ceil(round(q * len(ordered), 6))
    return ordered[max(0, min(len(ordered) - 1, rank - 1))] / 1000


def _redis_gets(client: Any) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


@dataclass
class Tally:
    """One scenario at one size, gathered over every round it was timed in."""

    scenario: Scenario
    samples: list[int] = field(default_factory=list)  # ns per timed call
    outcomes: Counter[str] = field(default_factory=Counter)
    allowed: int = 0
    denied: int = 0
    gc_collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    redis_gets: int = 0
    calls: int = 0  # every call so far, warm-up included: `prepare` never sees an index twice


def measure(tally: Tally, seconds: float, warmup_seconds: float, min_iterations: int) -> None:
    """Time one round of `tally.scenario`: a warm-up, then calls one by one until `seconds` passed."""
    scenario = tally.scenario
    call, args, prepare, label = scenario.call, scenario.args, scenario.prepare, scenario.label or _decision_label
    count = len(args)
    clock = time.perf_counter_ns
    outcomes = tally.outcomes
    gets_before = _redis_gets(scenario.redis_client) if scenario.redis_client is not None else 0
    for phase, budget, minimum in (("warmup", warmup_seconds, min(200, min_iterations)), ("timed", seconds, min_iterations)):
        samples: list[int] = []
        append = samples.append
        deadline = clock() + int(budget * 1e9)
        gc_before = [s["collections"] for s in gc.get_stats()]
        index = 0
        while True:
            total = tally.calls
            arg = prepare(total) if prepare is not None else args[total % count]
            started = clock()
            result = call(arg)
            ended = clock()
            append(ended - started)
            tally.calls = total + 1
            index += 1
            if phase == "timed":
                ok, text = label(result)
                outcomes[text] += 1
                if ok:
                    tally.allowed += 1
                else:
                    tally.denied += 1
            if ended > deadline and index >= minimum:
                break
        gc_after = [s["collections"] for s in gc.get_stats()]
    tally.samples += samples
    tally.gc_collections = [kept + after - before for kept, before, after in zip(tally.gc_collections, gc_before, gc_after, strict=True)]
    if scenario.redis_client is not None:
        tally.redis_gets += _redis_gets(scenario.redis_client) - gets_before


def tally_result(tally: Tally) -> dict[str, Any]:
    """A scenario's figures over every round, pooled."""
    scenario = tally.scenario
    ordered = sorted(tally.samples)
    mean_us = sum(ordered) / len(ordered) / 1000
    result: dict[str, Any] = {
        "description": scenario.description,
        "expect": scenario.expect,
        "spec": scenario.spec,
        "iterations": len(ordered),
        "p50_us": round(_percentile(ordered, 0.50), 2),
        "p90_us": round(_percentile(ordered, 0.90), 2),
        "p99_us": round(_percentile(ordered, 0.99), 2),
        "p999_us": round(_percentile(ordered, 0.999), 2),
        "max_us": round(ordered[-1] / 1000, 2),
        "mean_us": round(mean_us, 2),
        "calls_per_s": round(1e6 / mean_us, 1) if mean_us else 0.0,
        "allowed": tally.allowed,
        "denied": tally.denied,
        "outcomes": dict(tally.outcomes.most_common()),
        "gc_collections": tally.gc_collections,
    }
    if scenario.redis_client is not None:
        result["redis_gets_per_call"] = round(tally.redis_gets / tally.calls, 3)
    return result


# --- memory --------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident set (VmRSS), in MB."""
    return _status_kb("VmRSS") / 1024


def _status_kb(field_name: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


_FRESH_RSS = """
import gc, json, sys, time
from pathlib import Path
def kb(name):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0
from authz.policy.compiler import compile_directory
import authz.check.pipeline, authz.check.response
gc.collect()
after_import = kb("VmRSS")
started = time.perf_counter()
policy = compile_directory(sys.argv[1])
seconds = time.perf_counter() - started
gc.collect()
print(json.dumps({"after_import": after_import, "after_compile": kb("VmRSS"), "peak": kb("VmHWM"),
                  "seconds": seconds, "profiles": len(policy.profiles)}))
"""


def fresh_process_rss(directory: Path) -> dict[str, float]:
    """Compile `directory` in a new interpreter that imports only `authz`; its memory, in MB."""
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_RSS, str(directory)],
        capture_output=True, text=True, check=True, timeout=900, cwd=Path(__file__).resolve().parent.parent,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "after_import": round(data["after_import"] / 1024, 1),
        "after_compile": round(data["after_compile"] / 1024, 1),
        "peak": round(data["peak"] / 1024, 1),
        "seconds": round(data["seconds"], 2),
    }


# --- Redis -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    """A throwaway `redis-server` on a free loopback port, no persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="mandate-micro-redis-") as workdir:
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir, "--logfile", str(Path(workdir) / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not answer")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _RedisReplicas:
    """Two RedisChainStores sharing one key, as two Mandate replicas would: `measured` serves
    the timed decisions, `other` mints the chains whose first read by `measured` is a miss."""

    def __init__(self, url: str, policy: PolicySet, keys: Any) -> None:
        import redis

        from authz.chains.redis_store import RedisChainStore

        self.measured_store = RedisChainStore(url)
        self.other_store = RedisChainStore(url)
        self.measured_store.start()
        if not self.measured_store.wait_available(10):
            self.close()
            raise RuntimeError(f"Redis at {url} is not available")
        self.keys = keys
        self.measured = Authorizer(policy, chains=ChainStep(self.measured_store, keys))
        self.other = ChainStep(self.other_store, keys)
        self.stats = redis.Redis.from_url(url)

    def close(self) -> None:
        self.measured_store.close()
        self.other_store.close()
        if getattr(self, "stats", None) is not None:
            self.stats.close()


# --- running -------------------------------------------------------------------------


def _forgetting(policy: PolicySet, pool: list[AuthzInput]) -> Callable[[int], AuthzInput]:
    """A `prepare` that forgets every remembered `when` answer before each call, as if every
    call brought argument values never seen before."""

    def prepare(index: int) -> AuthzInput:
        policy.condition_results.clear()
        return pool[index % len(pool)]

    return prepare


def _scenarios(policy: PolicySet, pools: Pools, seed: int, skipped: dict[str, str]) -> list[Scenario]:
    """The in-process cases (in-memory chain store: no store thread running)."""
    header = policy.settings.chain_header
    main = Authorizer(policy)
    path = decision_path(main)
    typical = Decision("0123456789abcdef", allow("agent-00001.mcp[0]"), caller="spiffe://cluster.local/ns/team-001/sa/agent-00001",
                       profile="agent-00001", target="github", protocol="mcp", chain_id="", hops=("agent-00001",))
    scenarios = [
        Scenario("floor", "timing loop around building a fixed allow CheckResponse", "allow", floor_call, (None,),
                 label=_response_label, spec=False),
        Scenario("build_response_allow", "build_response() alone, typical allow decision", "allow",
                 lambda decision: build_response(decision, header), (typical,), label=_response_label, spec=False),
        Scenario("mcp_call_allowed", "MCP tools/call in the mission (CEL when where the rule has one)", "allow",
                 path, pools.mcp_call_allowed),
        Scenario("mcp_call_denied", "MCP tools/call refused (tool / server / false when)", "deny", path, pools.mcp_call_denied),
        Scenario("mcp_call_allowed_when_afresh", "as mcp_call_allowed, no `when` answer remembered (new argument values)",
                 "allow", path, prepare=_forgetting(policy, pools.mcp_call_allowed)),
        Scenario("mcp_call_denied_when_afresh", "as mcp_call_denied, no `when` answer remembered (new argument values)",
                 "deny", path, prepare=_forgetting(policy, pools.mcp_call_denied)),
        Scenario("mcp_tools_list", "MCP plumbing: tools/list", "allow", path, pools.mcp_tools_list),
        Scenario("egress_get", "GET to an egress host via the egress gateway", "allow", path, pools.egress_get),
    ]
    chained: list[AuthzInput] = []
    if pools.edges:
        chained = chained_calls(main, pools, seed)  # also leaves every edge freshly minted on `main`
        scenarios.append(Scenario("a2a_send_reuse", "A2A SendMessage, edge minted < 30 s ago (token handed out again)",
                                  "allow", path, pools.a2a_send))
        minting = Authorizer(policy, chains=ChainStep(MemoryChainStore(), main.chains.keys))
        mint_path = decision_path(minting)

        def fresh_step(index: int) -> AuthzInput:
            # A new ChainStep forgets its recent mints, so the edge is minted again; a new
            # store now and then keeps MemoryChainStore below its clean-up threshold.
            store = minting.chains.store if index % 50_000 else MemoryChainStore()
            minting.chains = ChainStep(store, main.chains.keys)
            return pools.a2a_send[index % len(pools.a2a_send)]

        scenarios.append(Scenario("a2a_send_mint", "A2A SendMessage minting a fresh chain (in-process store)", "allow",
                                  mint_path, prepare=fresh_step))
        scenarios.append(Scenario("chained_call_cached", "tool call carrying a token minted earlier (in-process store)",
                                  "allow", path, chained))
    else:
        for name in ("a2a_send_reuse", "a2a_send_mint", "chained_call_cached"):
            skipped[name] = "no agents rules at this size"
    mix = _mix(pools, chained, seed)
    scenarios.append(Scenario("mix", "40% allowed call, 10% denied, 15% tools/list, 10% egress, 5% A2A, 20% chained",
                              "mixed", path, mix))
    repeated = [to_check_request(request).SerializeToString() for request in mix]
    for payload in repeated:
        main.check_bytes(payload)  # decided once: from now on the decision cache answers
    scenarios.append(Scenario("mix_cache_hit", "the mix again, serialized, answered by the decision cache "
                              "(Authorizer.check_bytes: key from the bytes, lookup, fresh id, kept response)", "mixed",
                              main.check_bytes, repeated, label=_wire_label, spec=False))

    def renumbered(index: int) -> bytes:
        return _renumbered(mix[index % len(mix)], 1_000_000 + index)

    scenarios.append(Scenario("mix_new_ids", "the mix again, serialized, every JSON-RPC call under an id never used before, "
                              "as clients number their calls: allows answered by the decision cache, denies decided afresh",
                              "mixed", main.check_bytes, prepare=renumbered, label=_wire_label, spec=False))
    return scenarios


def _renumbered(request: AuthzInput, request_id: int) -> bytes:
    """`request` serialized with `request_id` as its JSON-RPC id (and the Content-Length to match)."""
    check = to_check_request(request)
    http = check.attributes.request.http
    document = orjson.loads(request.body) if request.body.startswith(b"{") else None
    if isinstance(document, dict) and "id" in document:
        document["id"] = request_id
        http.raw_body = orjson.dumps(document)
        http.headers["content-length"] = str(len(http.raw_body))
    return check.SerializeToString()


REDIS_SCENARIOS = ("chained_call_redis_cached", "chained_call_redis_uncached", "a2a_send_mint_redis")


def _redis_scenarios(policy: PolicySet, pools: Pools, seed: int, redis: _RedisReplicas) -> list[Scenario]:
    """The cases against Redis; built (and the store's listener thread started) only once the
    in-process cases are done, since that thread competes with them for the GIL."""
    header = policy.settings.chain_header
    scenarios: list[Scenario] = []
    measured_path = decision_path(redis.measured)
    cached = chained_calls(redis.measured, pools, seed + 1)
    scenarios.append(Scenario("chained_call_redis_cached", "chained tool call, RedisChainStore, record in the local cache",
                              "allow", measured_path, cached, redis_client=redis.stats, uses_redis=True))
    templates = cached
    edges = pools.edges

    def minted_elsewhere(index: int) -> AuthzInput:
        edge = edges[index % len(edges)]
        now = time.time()
        minted = redis.other.issue(
            (Hop(edge.caller.name, edge.caller.principal), Hop(edge.callee.name, edge.callee.principal)), (), now, now + 900
        )
        template = templates[index % len(templates)]
        headers = dict(template.headers)
        headers[header] = minted.token
        return dataclasses.replace(template, headers=headers)

    scenarios.append(Scenario("chained_call_redis_uncached",
                              "chained tool call, token minted by another replica: local cache miss, one GET",
                              "allow", measured_path, prepare=minted_elsewhere, spec=False, redis_client=redis.stats,
                              uses_redis=True))
    redis_minting = Authorizer(policy, chains=ChainStep(redis.measured_store, redis.keys))
    redis_mint_path = decision_path(redis_minting)

    def fresh_redis_step(index: int) -> AuthzInput:
        redis_minting.chains = ChainStep(redis.measured_store, redis.keys)
        return pools.a2a_send[index % len(pools.a2a_send)]

    scenarios.append(Scenario("a2a_send_mint_redis", "A2A SendMessage minting a fresh chain through Redis (one SET)",
                              "allow", redis_mint_path, prepare=fresh_redis_step, spec=False, uses_redis=True))
    return scenarios


def _mix(pools: Pools, chained: list[AuthzInput], seed: int) -> list[AuthzInput]:
    rng = random.Random(seed * 13 + len(pools.mcp_call_allowed))
    weighted = [(pools.mcp_call_allowed, 40), (pools.mcp_call_denied, 10), (pools.mcp_tools_list, 15),
                (pools.egress_get, 10), (pools.a2a_send, 5), (chained, 20)]
    mix: list[AuthzInput] = []
    for pool, weight in weighted:
        if pool:
            mix += rng.choices(pool, k=weight * 20)
    rng.shuffle(mix)
    return mix


STORE_DOWN = "chain_store_unavailable"


def _store_down_calls(result: dict[str, Any]) -> int:
    return sum(count for label, count in result["outcomes"].items() if STORE_DOWN in label)


def _check_expectations(scenario: Scenario, result: dict[str, Any]) -> list[str]:
    """Calls that did not decide as the scenario intends. With Redis, `chain_store_unavailable`
    denials are not the generator's fault (the store's liveness lapsed): run_size warns instead."""
    outcomes = {label: count for label, count in result["outcomes"].items() if not (scenario.uses_redis and STORE_DOWN in label)}
    problems = []
    if scenario.expect == "allow" and any(not label.startswith("allow") for label in outcomes):
        problems.append(f"{scenario.name}: expected every call allowed, got {result['outcomes']}")
    if scenario.expect == "deny" and result["allowed"]:
        problems.append(f"{scenario.name}: expected every call denied, got {result['outcomes']}")
    if scenario.name.startswith("chained_call") and any("verified" not in label for label in outcomes):
        problems.append(f"{scenario.name}: expected a verified chain on every call, got {result['outcomes']}")
    if scenario.name.startswith("a2a_send_mint") and any("minted" not in label for label in outcomes):
        problems.append(f"{scenario.name}: expected a fresh mint on every call, got {result['outcomes']}")
    return problems


@dataclass
class _Size:
    """One policy set, loaded and compiled, with its request pools and what was measured on it."""

    size: int
    policy: PolicySet
    pools: Pools
    result: dict[str, Any]
    tallies: dict[str, Tally] = field(default_factory=dict)
    redis: _RedisReplicas | None = None


def prepare_size(size: int, *, seed: int = 1, pool: int = 512, fresh_rss: bool = True, callers: int | None = None,
                 progress: Callable[[str], None] | None = None) -> _Size:
    """Generate and compile `size` profiles, measure the memory they take, draw the request pools."""
    say = progress or (lambda _: None)
    gc.collect()
    rss_before = rss_mb()
    with tempfile.TemporaryDirectory(prefix=f"mandate-micro-{size}-") as directory:
        started = time.perf_counter()
        generated = write_policy_set(directory, size, seed)
        generate_seconds = time.perf_counter() - started
        started = time.perf_counter()
        policy = compile_directory(directory)
        compile_seconds = time.perf_counter() - started
        gc.collect()
        rss_after = rss_mb()
        say(f"{size} profiles: generated in {generate_seconds:.1f} s, compiled in {compile_seconds:.2f} s, "
            f"RSS {rss_after:.0f} MB (+{rss_after - rss_before:.0f})")
        fresh = fresh_process_rss(Path(directory)) if fresh_rss else None
        if fresh:
            say(f"{size} profiles: fresh process RSS {fresh['after_compile']} MB, peak {fresh['peak']} MB")
    result: dict[str, Any] = {
        "profiles": len(policy.profiles),
        "targets": generated.targets,
        "policy_files": generated.files,
        "generate_seconds": round(generate_seconds, 2),
        "compile_seconds": round(compile_seconds, 3),
        "rss_mb": {
            "in_process_after_compile": round(rss_after, 1),
            "in_process_growth": round(rss_after - rss_before, 1),
            "fresh_process_after_import": fresh["after_import"] if fresh else None,
            "fresh_process_after_compile": fresh["after_compile"] if fresh else None,
            "fresh_process_peak": fresh["peak"] if fresh else None,
        },
        "pool": pool,
        "scenarios": {},
        "skipped": {},
        "warnings": [],
    }
    return _Size(size, policy, build_pools(first_callers(generated, callers), pool, seed), result)


def _time_rounds(sizes: list[_Size], batch: Callable[[_Size], list[Scenario]], rounds: int, seconds_per_case: float,
                 warmup_seconds: float, min_iterations: int, say: Callable[[str], None]) -> None:
    """Time every size's scenarios of one batch in `rounds` rounds, the sizes alternating (reversed
    every other round), so that a noisy minute on this shared machine lands on every size alike."""
    scenarios = {entry.size: batch(entry) for entry in sizes}
    freeze_heap()  # as `mandate serve` does once the policy is loaded: gc stops walking it
    for round_number in range(rounds):
        for entry in sizes if round_number % 2 == 0 else sizes[::-1]:
            for scenario in scenarios[entry.size]:
                tally = entry.tallies.setdefault(scenario.name, Tally(scenario))
                measure(tally, seconds_per_case / rounds, warmup_seconds, max(1, min_iterations // rounds))
    for entry in sizes:
        for scenario in scenarios[entry.size]:
            _finish(entry, entry.tallies[scenario.name], say)


def _finish(entry: _Size, tally: Tally, say: Callable[[str], None]) -> None:
    measured = tally_result(tally)
    name, result = tally.scenario.name, entry.result
    down = _store_down_calls(measured) if tally.scenario.uses_redis else 0
    if down:
        measured["store_unavailable_calls"] = down
        result["warnings"].append(
            f"{name}: {down} of {measured['iterations']} calls denied {STORE_DOWN}: the Redis store's "
            "revocation listener thread was not heard for 0.75 s while this thread ran decisions back to back "
            "(GIL-starved), so available() turned false; those calls are in the percentiles"
        )
        say(f"{entry.size:>6} {name:<28} warning: {result['warnings'][-1]}")
    result["scenarios"][name] = measured
    say(f"{entry.size:>6} {name:<28} p50 {measured['p50_us']:>8.1f}  p99 {measured['p99_us']:>8.1f}  "
        f"max {measured['max_us']:>9.1f} µs  n={measured['iterations']}")


def run(sizes: Sequence[int], seconds_per_case: float, redis_url: str | None, *, seed: int = 1, smoke: bool = False,
        fresh_rss: bool | None = None, callers: int | None = None, rounds: int | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark every size; see the module docstring for the shape of the result."""
    say = progress or (lambda _: None)
    pool, warmup_seconds, min_iterations = (64, 0.02, 50) if smoke else (512, 0.1, 2_000)
    rounds = (1 if smoke else DEFAULT_ROUNDS) if rounds is None else rounds
    fresh = bool(fresh_rss) if smoke else (True if fresh_rss is None else fresh_rss)
    report: dict[str, Any] = {
        "benchmark": "mandate-micro",
        "version": 1,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count() or 0,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds_per_case": seconds_per_case,
        "rounds": rounds,
        "seed": seed,
        "callers": callers,
        "smoke": smoke,
        "gc_enabled": gc.isenabled(),
        "heap_frozen": True,  # gc.freeze() after loading, as `mandate serve` does (authz.serve.reload.freeze_heap)
        "redis": redis_url,
        "what_is_timed": WHAT_IS_TIMED,
        "sizes": [],
    }
    loaded = [prepare_size(size, seed=seed, pool=pool, fresh_rss=fresh, callers=callers, progress=progress) for size in sizes]
    timing = (rounds, seconds_per_case, warmup_seconds, min_iterations, say)
    try:
        _time_rounds(loaded, lambda entry: _scenarios(entry.policy, entry.pools, seed, entry.result["skipped"]), *timing)
        # The Redis cases come second: each store's listener thread competes with the others for the GIL.
        with_redis = []
        for entry in loaded:
            if not redis_url:
                entry.result["skipped"].update(dict.fromkeys(REDIS_SCENARIOS, "no Redis (--redis-url or --start-redis)"))
            elif not entry.pools.edges:
                entry.result["skipped"].update(dict.fromkeys(REDIS_SCENARIOS, "no agents rules at this size"))
            else:
                entry.redis = _RedisReplicas(redis_url, entry.policy, Authorizer(entry.policy).chains.keys)
                with_redis.append(entry)
        _time_rounds(with_redis, lambda entry: _redis_scenarios(entry.policy, entry.pools, seed, entry.redis), *timing)
    finally:
        for entry in loaded:
            if entry.redis is not None:
                entry.redis.close()
        gc.unfreeze()
    problems = [problem for entry in loaded for tally in entry.tallies.values()
                for problem in _check_expectations(tally.scenario, entry.result["scenarios"][tally.scenario.name])]
    if problems:
        raise RuntimeError("the generated requests did not decide as intended:\n" + "\n".join(problems))
    report["sizes"] = [entry.result for entry in loaded]
    report["summary"] = summarize(report["sizes"])
    return report


def summarize(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    by_scenario: dict[str, Any] = {}
    names: list[str] = []
    for entry in sizes:
        for name in entry["scenarios"]:
            if name not in names:
                names.append(name)
    for name in names:
        p50 = {str(e["profiles"]): e["scenarios"][name]["p50_us"] for e in sizes if name in e["scenarios"]}
        p99 = {str(e["profiles"]): e["scenarios"][name]["p99_us"] for e in sizes if name in e["scenarios"]}
        values = list(p99.values())
        ratio = round(values[-1] / values[0], 3) if len(values) > 1 and values[0] else None
        by_scenario[name] = {"p50_us": p50, "p99_us": p99, "p99_ratio_largest_vs_smallest": ratio}
    # A case with calls denied because the chain store looked down measured those denials too.
    excluded = {n: "some calls were denied chain_store_unavailable (see warnings)" for n in names
                if any("store_unavailable_calls" in e["scenarios"].get(n, {}) for e in sizes)}
    worst: dict[str, Any] = {}
    for entry in sizes:
        spec = [(s["p99_us"], n) for n, s in entry["scenarios"].items() if s["spec"] and n not in excluded]
        if spec:
            value, name = max(spec)
            worst[str(entry["profiles"])] = {"scenario": name, "p99_us": value}
    spec_names = [n for n in names
                  if n not in excluded and all(e["scenarios"][n]["spec"] for e in sizes if n in e["scenarios"])]
    flat_detail = {n: by_scenario[n]["p99_ratio_largest_vs_smallest"] for n in spec_names
                   if by_scenario[n]["p99_ratio_largest_vs_smallest"] is not None}
    flat = (all(abs(r - 1) <= FLAT_TOLERANCE for r in flat_detail.values()) if flat_detail else None)
    return {
        "by_scenario": by_scenario,
        "spec": {
            "p99_target_us": P99_TARGET_US,
            "flat_tolerance": FLAT_TOLERANCE,
            "worst_p99_us": worst,
            "p99_target_met": bool(worst) and all(w["p99_us"] <= P99_TARGET_US for w in worst.values()),
            "flat": flat,
            "flat_detail": flat_detail,
            "excluded": excluded,
        },
    }


# --- output --------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"Mandate decision path, in process ({report['what_is_timed']})",
        (f"python {report['python']}, {report['cpu_count']} CPUs, {report['seconds_per_case']} s per case in {report['rounds']} "
         f"alternating rounds, redis: {report['redis'] or 'none'}; requests from {_callers_text(report['callers'])}"),
        "",
        f"{'profiles':>8}  {'files':>5}  {'compile s':>9}  {'RSS MB':>7}  {'growth':>7}  {'fresh RSS':>9}  {'fresh peak':>10}",
    ]
    for entry in report["sizes"]:
        rss = entry["rss_mb"]
        fresh = rss["fresh_process_after_compile"]
        peak = rss["fresh_process_peak"]
        lines.append(
            f"{entry['profiles']:>8}  {entry['policy_files']:>5}  {entry['compile_seconds']:>9.2f}  "
            f"{rss['in_process_after_compile']:>7.1f}  {rss['in_process_growth']:>7.1f}  "
            f"{fresh if fresh is not None else '-':>9}  {peak if peak is not None else '-':>10}"
        )
    header = (f"{'scenario':<28} {'profiles':>8} {'n':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>8} {'max':>9} "
              f"{'calls/s':>9}  outcome")
    lines += ["", "latency in µs", header, "-" * len(header)]
    names: list[str] = []
    for entry in report["sizes"]:
        names += [n for n in entry["scenarios"] if n not in names]
    for name in names:
        for entry in report["sizes"]:
            s = entry["scenarios"].get(name)
            if s is None:
                continue
            top = next(iter(s["outcomes"]), "")
            outcome = top if len(s["outcomes"]) == 1 else f"{top} (+{len(s['outcomes']) - 1} more)"
            if "redis_gets_per_call" in s:
                outcome += f", {s['redis_gets_per_call']} GET/call"
            lines.append(
                f"{name:<28} {entry['profiles']:>8} {s['iterations']:>8} {s['p50_us']:>7.1f} {s['p90_us']:>7.1f} "
                f"{s['p99_us']:>7.1f} {s['p999_us']:>8.1f} {s['max_us']:>9.1f} {s['calls_per_s']:>9.0f}  {outcome}"
            )
    skipped = {name: why for entry in report["sizes"] for name, why in entry["skipped"].items()}
    for name, why in skipped.items():
        lines.append(f"{name:<28} skipped: {why}")
    for entry in report["sizes"]:
        for warning in entry.get("warnings", []):
            lines.append(f"warning at {entry['profiles']} profiles: {warning}")
    spec = report["summary"]["spec"]
    lines += ["", (f"SPEC §8: decision p99 <= {spec['p99_target_us']:.0f} µs and flat (±{spec['flat_tolerance']:.0%}) "
                   "from the smallest to the largest size (scenarios marked spec)")]
    for size, worst in spec["worst_p99_us"].items():
        lines.append(f"  worst p99 at {size:>6} profiles: {worst['p99_us']:.1f} µs ({worst['scenario']})")
    lines.append(f"  p99 target met: {spec['p99_target_met']}")
    if spec["flat_detail"]:
        ratios = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in spec["flat_detail"].items())
        lines.append(f"  p99 largest/smallest: {ratios}")
        lines.append(f"  flat: {spec['flat']}")
    for name, why in spec.get("excluded", {}).items():
        lines.append(f"  left out: {name} ({why})")
    return "\n".join(lines)


def _callers_text(callers: int | None) -> str:
    return "every profile" if callers is None else f"the first {callers} profiles (and the agents they call)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.micro", description="In-process micro-benchmark of the decision path.")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="profile counts, comma-separated")
    parser.add_argument("--seconds-per-case", type=float, default=None, help=f"timed seconds per scenario and size (default {DEFAULT_SECONDS})")
    redis_group = parser.add_mutually_exclusive_group()
    redis_group.add_argument("--redis-url", help="a Redis for the chain store cases (redis://127.0.0.1:6379/0)")
    redis_group.add_argument("--start-redis", action="store_true", help="start a throwaway redis-server on a free port")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--callers", help="draw every request from the first N profiles (default: as many as the smallest "
                        "size has, so every size meets the same agents and only the number of profiles loaded differs), "
                        "or `all`: from every profile, so larger sizes also meet more agents")
    parser.add_argument("--rounds", type=int, help=f"time each size's share of a scenario in this many rounds, the sizes "
                        f"alternating (default {DEFAULT_ROUNDS}; 1 with --smoke)")
    parser.add_argument("--no-fresh-rss", action="store_true", help="skip measuring RSS in a fresh process")
    parser.add_argument("--keep-policies", type=Path, help="also write each generated policy set to DIR/<size>/ and exit")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (sizes 10,100, 0.05 s per case) for CI")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if args.keep_policies:
        for size in sizes:
            write_policy_set(args.keep_policies / str(size), size, args.seed)
            print(args.keep_policies / str(size))
        return 0
    seconds = args.seconds_per_case
    if args.smoke:
        sizes = sizes if args.sizes != ",".join(map(str, DEFAULT_SIZES)) else [10, 100]
        seconds = 0.05 if seconds is None else seconds
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    fresh = False if args.no_fresh_rss else None
    callers = min(sizes) if args.callers is None else None if args.callers == "all" else int(args.callers)
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(local_redis()) if args.start_redis else args.redis_url
        report = run(sizes, seconds, redis_url, seed=args.seed, smoke=args.smoke, fresh_rss=fresh, callers=callers,
                     rounds=args.rounds, progress=progress)
    if args.start_redis:
        report["redis"] = "started (throwaway redis-server on loopback)"
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
