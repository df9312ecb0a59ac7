"""Delegation chains when the shared store misbehaves (SPEC §5 "Store down", "Revocation").

Two `mandate serve` replicas share this module's own redis-server (never the session one,
so it can be stopped, paused and restarted freely) and one HMAC key file; each sits behind
its own Envoy. support-agent (A) messages billing-agent (B) through Envoy 1, which mints a
chain; B then calls the billing-db MCP server with that token through Envoy 2:

    A --Envoy 1 / replica 1--> B (A2A echo agent; its recorder shows the minted token)
    B --Envoy 2 / replica 2--> billing-db (echo; tools/call, scoped by A's grant)

A's grant lets B only `lookup_invoice`; B's own profile also allows `refund`, so a chained
refund is denied while an unchained one is allowed. The fault tests check that chained and
delegating calls fail closed (`chain_store_unavailable`) promptly and visibly, that everything
else is decided as usual, and that recovery needs no restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.envoy import EnvoyProcess, mesh_envoy_config
from tests.harness.pki import MeshPKI, spiffe_id
from tests.harness.processes import MandateProcess, free_port, wait_until
from tests.harness.redis import RedisServer
from tests.harness.upstreams import Upstream, a2a_agent, echo, serve_upstream

BILLING_HOST = "billing-agent.billing.svc.cluster.local"
BILLING_DB_HOST = "billing-db-mcp.billing.svc.cluster.local"
STATUS_HOST = "status-page.ops.svc.cluster.local"
CHAIN_HEADER = "x-delegation-chain"

SUPPORT_NS = "support"  # support-agent governs every service account here: tests take fresh ones
BILLING = ("billing", "billing-agent")
INTERN = ("interns", "intern-agent")

PROMPT_DENY = 1.5  # seconds: a fail-closed answer must come well before Envoy's 2 s ext_authz timeout
NOTICE_WITHIN = 1.0  # SPEC §5: a replica notices within 1 s that it can no longer hear revocations
RECOVERY = 8.0  # deadline for chains to work again once Redis is back (no Mandate restart)

POLICIES = f"""\
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: billing-db}}
spec:
  kind: mcp
  hosts: [{BILLING_DB_HOST}]
  pathPrefix: /mcp
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: status-page}}
spec:
  kind: http
  hosts: [{STATUS_HOST}]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: support-agent}}
spec:
  principals: ["spiffe://cluster.local/ns/{SUPPORT_NS}/sa/*"]
  mission: Answers customer tickets; asks billing-agent to look invoices up.
  agents:
    - agent: billing-agent
      methods: [SendMessage, GetTask]
      grant:
        mcp: [{{server: billing-db, tools: [lookup_invoice]}}]
  http:
    - target: status-page
      paths: ["/api/*"]
      methods: [GET]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: billing-agent}}
spec:
  principals: [{spiffe_id(*BILLING)}]
  hosts: [{BILLING_HOST}]
  mission: Handles billing questions; looks up invoices and refunds them.
  mcp:
    - server: billing-db
      tools: [lookup_invoice, refund]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: intern-agent}}
spec:
  principals: [{spiffe_id(*INTERN)}]
  mission: Reads the status page only.
  http:
    - target: status-page
      paths: ["/api/*"]
      methods: [GET]
"""


def support_agent() -> tuple[str, str]:
    """A support-agent workload no test has used: Mandate hands a caller the chain it minted for
    the same delegation in the last 30 s again, so a fresh caller keeps tests independent."""
    return (SUPPORT_NS, f"support-agent-{uuid.uuid4().hex[:8]}")


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Replica:
    """One `mandate serve` and the Envoy in front of it."""

    mandate: MandateProcess
    envoy: EnvoyProcess


@dataclass
class Mesh:
    redis: RedisServer
    billing: Upstream  # the A2A agent B; its recorder sees the token Mandate minted
    echo: Upstream
    one: Replica
    two: Replica
    pki: MeshPKI
    policies: Path
    chain_key: Path

    @property
    def replicas(self) -> tuple[Replica, Replica]:
        return (self.one, self.two)

    def upstreams(self) -> dict[str, int]:
        return upstream_ports(self.billing, self.echo)


def upstream_ports(billing: Upstream, echo_upstream: Upstream) -> dict[str, int]:
    """Envoy's routes: B's host to the A2A agent, everything else to the echo app."""
    return {
        BILLING_HOST: billing.port,
        BILLING_DB_HOST: echo_upstream.port,
        STATUS_HOST: echo_upstream.port,
        "*": echo_upstream.port,
    }


@pytest.fixture(scope="module")
def mesh(pki: MeshPKI, chain_key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Own Redis, two replicas sharing it and the key file, one Envoy each, shared upstreams."""
    policies = tmp_path_factory.mktemp("fault-policies")
    (policies / "policies.yaml").write_text(POLICIES)
    redis_server = RedisServer(tmp_path_factory.mktemp("fault-redis")).start()
    agent = a2a_agent.EchoAgent("billing-agent")
    billing = serve_upstream("billing-agent", agent.app)
    echo_upstream = serve_upstream("echo", echo.build_app())
    started: list[Any] = [redis_server, billing, echo_upstream]
    try:
        replicas = []
        upstreams = upstream_ports(billing, echo_upstream)
        for index in (1, 2):
            mandate = MandateProcess(
                policies,
                tmp_path_factory.mktemp(f"fault-mandate{index}"),
                redis_url=redis_server.url,
                chain_key=chain_key_file,
            ).start()
            started.append(mandate)
            envoy = EnvoyProcess(
                mesh_envoy_config(pki, mandate.grpc_port, upstreams), tmp_path_factory.mktemp(f"fault-envoy{index}")
            ).start()
            started.append(envoy)
            replicas.append(Replica(mandate, envoy))
        agent.public_url = replicas[0].envoy.url("/")
        yield Mesh(redis_server, billing, echo_upstream, replicas[0], replicas[1], pki, policies, chain_key_file)
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture(autouse=True)
def redis_restored(mesh: Mesh) -> Iterator[None]:
    """Whatever a test did to Redis, the next one starts with it running and chains working."""
    yield
    if mesh.redis.proc is None:
        mesh.redis.start()
    else:
        mesh.redis.resume()
    for replica in mesh.replicas:
        wait_until(partial(_chains_work, mesh, replica, support_agent()), RECOVERY, "chains to work again after a test")


# --- requests through Envoy -------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    headers: httpx.Headers
    elapsed: float  # seconds, measured by the client around the whole exchange

    @property
    def from_mandate(self) -> bool:
        """A deny Mandate wrote (its decision id header and its body), not one Envoy made up."""
        return "x-mandate-decision-id" in self.headers and self.reason is not None

    @property
    def reason(self) -> str | None:
        body = self.body
        if not isinstance(body, dict):
            return None
        if isinstance(body.get("error"), dict):  # JSON-RPC error object
            return body["error"].get("data", {}).get("reason")
        return body.get("reason")


def send(
    replica: Replica,
    mesh: Mesh,
    who: tuple[str, str],
    host: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request as agent `who` through `replica`'s Envoy."""
    with httpx.Client(
        base_url=replica.envoy.base_url, verify=mesh.pki.ssl_context(mesh.pki.client_cert(*who)), timeout=10.0
    ) as client:
        started = time.monotonic()
        response = client.request(method, path, headers={"Host": host, **(headers or {})}, json=body)
        elapsed = time.monotonic() - started
    try:
        parsed = response.json()
    except ValueError:
        parsed = response.text
    return Answer(response.status_code, parsed, response.headers, elapsed)


def delegate(mesh: Mesh, replica: Replica, who: tuple[str, str]) -> tuple[Answer, str | None]:
    """`who` sends billing-agent an A2A SendMessage; the answer and the token B received (if any)."""
    mark = mesh.billing.recorder.mark()
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": "invoice 7?"}]}},
    }
    answer = send(replica, mesh, who, BILLING_HOST, "POST", "/", body=body, headers={"A2A-Version": "1.0"})
    seen = mesh.billing.recorder.since(mark)
    tokens = [value for request in seen for value in request.header_values(CHAIN_HEADER)]
    assert len(tokens) <= 1, tokens
    return answer, (tokens[0] if tokens else None)


def tool_call(mesh: Mesh, replica: Replica, tool: str, token: str | None, who: tuple[str, str] = BILLING) -> Answer:
    """`who` (billing-agent by default) calls a billing-db tool, presenting `token` if given."""
    headers = {"Accept": "application/json, text/event-stream"}
    if token is not None:
        headers[CHAIN_HEADER] = token
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": {"invoice": "7"}}}
    return send(replica, mesh, who, BILLING_DB_HOST, "POST", "/mcp", body=body, headers=headers)


def status_page(mesh: Mesh, replica: Replica, who: tuple[str, str]) -> Answer:
    return send(replica, mesh, who, STATUS_HOST, "GET", "/api/health")


def _chains_work(mesh: Mesh, replica: Replica, who: tuple[str, str]) -> str | None:
    """Mint a chain through `replica` and use it there; the token if both worked."""
    answer, token = delegate(mesh, replica, who)
    if answer.status != 200 or token is None:
        return None
    return token if tool_call(mesh, replica, "lookup_invoice", token).status == 200 else None


def _hears_store(mesh: Mesh, replica: Replica, token: str) -> bool:
    """Whether `replica` reads chains again (whatever it then decides about `token`)."""
    return tool_call(mesh, replica, "lookup_invoice", token).reason != "chain_store_unavailable"


def assert_allowed(answer: Answer) -> None:
    assert answer.status == 200, (answer.status, answer.body)
    assert "x-mandate-decision-id" not in answer.headers  # the upstream answered, not a Mandate deny


def assert_denied(answer: Answer, reason: str, status: int = 403) -> None:
    assert (answer.status, answer.reason) == (status, reason), (answer.status, answer.body)
    assert answer.from_mandate, answer.body


def assert_store_down_deny(answer: Answer) -> None:
    """Fail closed, with Mandate's own answer, well before Envoy would have given up."""
    assert_denied(answer, "chain_store_unavailable")
    assert answer.elapsed < PROMPT_DENY, f"deny took {answer.elapsed:.3f}s"


def store_errors(replica: Replica) -> float:
    for family in text_string_to_metric_families(replica.mandate.metrics_text()):
        for sample in family.samples:
            if sample.name == "mandate_chain_store_errors_total":
                return sample.value
    raise AssertionError("mandate_chain_store_errors_total not exported")


def authz_errors(replica: Replica) -> int:
    """Envoy's count of ext_authz calls that failed or timed out (its own 403s)."""
    stats = replica.envoy.stats("http.ingress.ext_authz")
    return stats.get("http.ingress.ext_authz.error", 0) + stats.get("http.ingress.ext_authz.timeout", 0)


def sleep_until(moment: float) -> None:
    """Wait for a point the SPEC names (e.g. 1 s after Redis died), not for a condition."""
    time.sleep(max(0.0, moment - time.monotonic()))


def mandate_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """The real `mandate` command, without MANDATE_* settings leaking in from the environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    return subprocess.run(
        [*MandateProcess.command(), *args], check=False, capture_output=True, text=True, timeout=timeout, env=env
    )


def chain_id(token: str) -> str:
    return token.split(".", 1)[0]


# --- 1. two replicas, one store: attenuation and revocation across replicas --------------------


def test_chain_minted_on_one_replica_is_honoured_and_revoked_on_both(mesh: Mesh) -> None:
    """The store is what makes a chain a cluster-wide fact: minted by replica 1, checked by
    replica 2, and revoked everywhere by one CLI call, cached copies included."""
    agent = support_agent()
    answer, token = delegate(mesh, mesh.one, agent)
    assert_allowed(answer)
    assert answer.body["result"]["message"]["parts"][0]["text"] == "echo: invoice 7?"
    assert token is not None, "billing-agent received no x-delegation-chain"

    # Replica 2 never saw this chain: it reads it from Redis, then keeps it in its cache.
    assert_allowed(tool_call(mesh, mesh.two, "lookup_invoice", token))
    refused = tool_call(mesh, mesh.two, "refund", token)
    assert_denied(refused, "tool_not_allowed")
    assert refused.body["error"]["data"]["hop"] == "support-agent"  # the scope A delegated refused it
    assert_allowed(tool_call(mesh, mesh.two, "refund", None))  # B acting on its own keeps its rights
    assert_allowed(tool_call(mesh, mesh.one, "lookup_invoice", token))  # replica 1 has it cached since minting

    shown = mandate_cli("chain", "show", token, "--redis", mesh.redis.url, "--json")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["id"] == chain_id(token)
    assert [hop["profile"] for hop in record["hops"]] == ["support-agent", "billing-agent"]
    assert record["hops"][0]["principal"] == spiffe_id(*agent)
    assert record["revoked"] is False
    text = mandate_cli("chain", "show", chain_id(token), "--redis", mesh.redis.url)
    assert text.returncode == 0, text.stderr
    assert "support-agent" in text.stdout and "billing-agent" in text.stdout and "revoked: no" in text.stdout

    revoked = mandate_cli("chain", "revoke", token, "--redis", mesh.redis.url)
    assert revoked.returncode == 0, revoked.stderr

    def both_deny() -> bool:
        return all(
            tool_call(mesh, replica, "lookup_invoice", token).reason == "chain_revoked" for replica in mesh.replicas
        )

    wait_until(both_deny, NOTICE_WITHIN, "both replicas to deny the revoked chain")
    for replica in mesh.replicas:
        assert_denied(tool_call(mesh, replica, "lookup_invoice", token), "chain_revoked")

    assert "revoked: yes" in mandate_cli("chain", "show", token, "--redis", mesh.redis.url).stdout
    # A revoked delegation is not handed out again: A's next call mints a fresh chain.
    answer, fresh = delegate(mesh, mesh.one, agent)
    assert_allowed(answer)
    assert fresh is not None and chain_id(fresh) != chain_id(token)
    assert_allowed(tool_call(mesh, mesh.two, "lookup_invoice", fresh))


# --- 2. Redis stopped: chained calls fail closed, the rest is decided as usual -----------------


def test_redis_down_denies_chained_and_delegating_calls_only(mesh: Mesh) -> None:
    """Fail closed only where the store matters: a cached chain could have been revoked
    unheard, a new one cannot be written; calls that involve no chain keep working."""
    agent = support_agent()
    token = _chains_work(mesh, mesh.one, agent)
    assert token is not None
    assert_allowed(tool_call(mesh, mesh.two, "lookup_invoice", token))  # now cached on both replicas
    errors_before = [store_errors(replica) for replica in mesh.replicas]
    envoy_errors_before = [authz_errors(replica) for replica in mesh.replicas]

    mesh.redis.stop()
    died = time.monotonic()
    sleep_until(died + NOTICE_WITHIN)

    for replica in mesh.replicas:
        # A cached chain is no longer trusted: its revocation could be going unheard.
        assert_store_down_deny(tool_call(mesh, replica, "lookup_invoice", token))
        # A call to an agent would mint a chain (on replica 1, hand out the one it just minted):
        # refused, and B never sees it.
        mark = mesh.billing.recorder.mark()
        answer, handed = delegate(mesh, replica, agent)
        assert_store_down_deny(answer)
        assert handed is None and mesh.billing.recorder.since(mark) == []

        # Unchained calls to targets without a profile are decided by policy as usual.
        assert_allowed(tool_call(mesh, replica, "lookup_invoice", None))
        assert_allowed(tool_call(mesh, replica, "refund", None))
        assert_allowed(status_page(mesh, replica, agent))
        assert_denied(tool_call(mesh, replica, "lookup_invoice", None, who=INTERN), "server_not_allowed")

    for replica, before in zip(mesh.replicas, errors_before):
        assert store_errors(replica) >= before + 2
    assert [authz_errors(replica) for replica in mesh.replicas] == envoy_errors_before


# --- 3. Redis answering slowly (SIGSTOP): bounded denies, never a hang ---------------------------


def test_paused_redis_gives_prompt_denies_and_recovers(mesh: Mesh) -> None:
    """A Redis that accepts but never answers is the dangerous case: every store command must
    time out on its own so Mandate answers before Envoy gives up with its own bare 403."""
    agent = support_agent()
    cached = _chains_work(mesh, mesh.one, agent)
    assert cached is not None
    assert_allowed(tool_call(mesh, mesh.two, "lookup_invoice", cached))
    answer, uncached = delegate(mesh, mesh.one, support_agent())  # replica 2 never read this one
    assert_allowed(answer)
    assert uncached is not None
    envoy_errors_before = [authz_errors(replica) for replica in mesh.replicas]

    mesh.redis.pause()
    paused = time.monotonic()
    try:
        # At once: a cache miss costs one GET, which times out instead of waiting for Redis.
        assert_store_down_deny(tool_call(mesh, mesh.two, "lookup_invoice", uncached))
        sleep_until(paused + NOTICE_WITHIN)
        for replica in mesh.replicas:
            assert_store_down_deny(tool_call(mesh, replica, "lookup_invoice", cached))
            assert_store_down_deny(tool_call(mesh, replica, "lookup_invoice", uncached))
            answer, handed = delegate(mesh, replica, agent)
            assert_store_down_deny(answer)
            assert handed is None
            answer, handed = delegate(mesh, replica, support_agent())
            assert_store_down_deny(answer)
            assert handed is None
            assert_allowed(tool_call(mesh, replica, "refund", None))
            assert_allowed(status_page(mesh, replica, INTERN))
        assert [authz_errors(replica) for replica in mesh.replicas] == envoy_errors_before  # Envoy never timed out
    finally:
        mesh.redis.resume()

    for replica in mesh.replicas:
        token = wait_until(
            partial(_chains_work, mesh, replica, support_agent()), RECOVERY, "chains after resume", interval=0.1
        )
        other = mesh.two if replica is mesh.one else mesh.one
        assert_allowed(tool_call(mesh, other, "lookup_invoice", token))


# --- 4. Start-up with Redis down ----------------------------------------------------------------


def test_start_with_redis_down_then_redis_arrives(mesh: Mesh, tmp_path: Path) -> None:
    """A replica must not refuse to start (or crash-loop) because Redis is late: it serves
    unchained decisions at once and picks chains up when Redis appears on that port."""
    late = RedisServer(tmp_path / "late-redis")
    late.port = free_port()
    mandate = MandateProcess(mesh.policies, tmp_path / "mandate", redis_url=late.url, chain_key=mesh.chain_key).start()
    envoy: EnvoyProcess | None = None
    try:
        envoy = EnvoyProcess(
            mesh_envoy_config(mesh.pki, mandate.grpc_port, mesh.upstreams()), tmp_path / "envoy"
        ).start()
        replica = Replica(mandate, envoy)
        assert "chain store" in mandate.stderr_tail()

        assert_allowed(tool_call(mesh, replica, "lookup_invoice", None))
        assert_denied(tool_call(mesh, replica, "lookup_invoice", None, who=INTERN), "server_not_allowed")
        assert_allowed(status_page(mesh, replica, INTERN))
        answer, handed = delegate(mesh, replica, support_agent())
        assert_store_down_deny(answer)
        assert handed is None
        token = _chains_work(mesh, mesh.one, support_agent())  # a genuine token, from the healthy store
        assert token is not None
        assert_store_down_deny(tool_call(mesh, replica, "lookup_invoice", token))

        late.start()
        token = wait_until(
            partial(_chains_work, mesh, replica, support_agent()), RECOVERY, "chains once Redis is up", interval=0.1
        )
        assert_denied(tool_call(mesh, replica, "refund", token), "tool_not_allowed")
        assert mandate.running
    finally:
        if envoy is not None:
            envoy.stop()
        mandate.stop()
        late.stop()


# --- 5. Fail closed at start-up: no shared key, bad key file ------------------------------------


def _serve_args(mesh: Mesh, *extra: str) -> list[str]:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    return [
        "serve",
        "--policies",
        str(mesh.policies),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--redis",
        dead,
        *extra,
    ]


def test_redis_without_chain_key_refuses_to_start(mesh: Mesh) -> None:
    """With a shared store every replica must verify the others' tokens, so a random key is refused."""
    result = mandate_cli(*_serve_args(mesh))
    assert result.returncode != 0
    assert "--chain-key" in result.stderr


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("abcd1234\n", 1),  # far shorter than 64 hex characters
        ("# rotated 2026-01\n\n" + "zz" * 32 + "\n", 3),  # long enough, not hex
    ],
    ids=["short", "not-hex"],
)
def test_bad_chain_key_file_refuses_to_start(mesh: Mesh, tmp_path: Path, content: str, line: int) -> None:
    key_file = tmp_path / "chain.key"
    key_file.write_text(content)
    result = mandate_cli(*_serve_args(mesh, "--chain-key", str(key_file)))
    assert result.returncode != 0
    assert f"{key_file}:{line}:" in result.stderr, result.stderr
    assert "hex" in result.stderr


# --- 6. Redis restarted on the same port: chains come back without restarting Mandate ----------


def test_redis_restart_recovers_without_restarting_mandate(mesh: Mesh) -> None:
    """Replicas reconnect on their own; what they mint afterwards is in the new store."""
    agent = support_agent()
    assert _chains_work(mesh, mesh.one, agent)
    pids = [replica.mandate.proc.pid for replica in mesh.replicas if replica.mandate.proc]
    mesh.redis.restart()  # no persistence: every record is gone

    handed: list[str] = []

    def minted_into_the_new_store() -> subprocess.CompletedProcess[str] | None:
        """Replica 1 may re-hand its recent chain for the moment (≈0.2 s) before its listener
        sees the connection drop; from then on what it hands out must be in the new store."""
        answer, token = delegate(mesh, mesh.one, agent)
        if answer.status != 200 or token is None:
            return None
        handed.append(token)
        shown = mandate_cli("chain", "show", token, "--redis", mesh.redis.url, "--json")
        return shown if shown.returncode == 0 else None

    shown = wait_until(minted_into_the_new_store, RECOVERY, "replica 1 to mint into the restarted store", interval=0.1)
    token = handed[-1]
    assert [hop["profile"] for hop in json.loads(shown.stdout)["hops"]] == ["support-agent", "billing-agent"]

    def honoured() -> Answer | None:
        answer = tool_call(mesh, mesh.two, "lookup_invoice", token)
        return answer if answer.reason != "chain_store_unavailable" else None  # replica 2 may still be reconnecting

    assert_allowed(wait_until(honoured, RECOVERY, "replica 2 to read chains again", interval=0.1))
    assert [replica.mandate.proc.pid for replica in mesh.replicas if replica.mandate.proc] == pids


def test_chain_cached_before_a_restart_can_still_be_revoked(mesh: Mesh) -> None:
    """A restart without persistence loses records; replicas drop their cached copies when they
    reconnect, and the operator can still revoke the id (the store keeps the revocation even
    without a record), so the chain is refused everywhere within a second."""
    token = _chains_work(mesh, mesh.one, support_agent())
    assert token is not None
    assert_allowed(tool_call(mesh, mesh.two, "lookup_invoice", token))
    mesh.redis.restart()
    for replica in mesh.replicas:
        wait_until(
            partial(_hears_store, mesh, replica, token), RECOVERY, "replicas to hear the restarted store", interval=0.1
        )

    revoked = mandate_cli("chain", "revoke", token, "--redis", mesh.redis.url)
    assert revoked.returncode == 0, revoked.stderr
    done = time.monotonic()
    refused = {"chain_revoked", "chain_unknown"}
    while True:
        reasons = [tool_call(mesh, replica, "lookup_invoice", token).reason for replica in mesh.replicas]
        if all(reason in refused for reason in reasons) or time.monotonic() - done > NOTICE_WITHIN:
            break
        time.sleep(0.02)
    assert all(reason in refused for reason in reasons), (
        f"after `mandate chain revoke` ({revoked.returncode}: {revoked.stderr.strip()}) the replicas answered {reasons}"
    )
