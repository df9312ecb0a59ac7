"""The human behind the agent end to end (SPEC §10): a real Envoy 1.40 whose jwt_authn filter is
configured as Istio's RequestAuthentication configures it (the token verified, its payload put in
the dynamic metadata, the token removed), ext_authz forwarding that metadata to `mandate serve`,
a real A2A agent that delegates for real, and a real MCP server.

    test client (orchestrator's SVID, a person's JWT)
        --A2A SendMessage--> Envoy [jwt_authn -> ext_authz] --> billing-agent (DelegatingAgent)
                                                                   |  copies only the chain header
        billing-agent's SVID --MCP tools/call refund--> Envoy [jwt_authn -> ext_authz] --> billing-db

billing-agent's refund is allowed only for a user in `finance`, and only for the customer their
token names; no JWT travels past the first hop — the chain carries the user.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.harness.clients import a2a_send_text, run_async
from tests.harness.delegating_agent import DelegatingAgent
from tests.harness.envoy import EnvoyProcess, mesh_envoy_config
from tests.harness.pki import MeshPKI
from tests.harness.processes import MandateProcess, wait_until
from tests.harness.upstreams import Upstream, billing_mcp, serve_upstream
from tests.harness.users import ISSUER, Idp, request_authentication, users_settings

ORCHESTRATOR = ("orchestrator", "orchestrator")
BILLING = ("billing", "billing-agent")
BILLING_HOST = "billing-agent.billing.svc.cluster.local"
BILLING_DB_HOST = "billing-db.billing.svc.cluster.local"
POLICIES = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: billing-db}
spec: {kind: mcp, hosts: [billing-db.billing.svc.cluster.local], pathPrefix: /mcp}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: orchestrator}
spec:
  principals: [spiffe://cluster.local/ns/orchestrator/sa/orchestrator]
  mission: takes a person's request and hands it to the agent for it
  agents:
    - agent: billing-agent
      grant: {mcp: [{server: billing-db, tools: [refund]}]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: billing-agent}
spec:
  principals: [spiffe://cluster.local/ns/billing/sa/billing-agent]
  hosts: [billing-agent.billing.svc.cluster.local]
  mission: refunds, for finance only, the customer's own
  mcp:
    - server: billing-db
      tools: [refund]
      users: {groups: [finance]}
      when: 'mcp.tool.arguments.customer == user.claims.customer_id'
"""


@dataclass
class UserMesh:
    pki: MeshPKI
    idp: Idp
    mandate: MandateProcess
    envoy: EnvoyProcess
    agent: Upstream
    billing_db: Upstream
    delegating: DelegatingAgent
    refunds: list[dict[str, Any]]

    def ask(self, text: str, token: str | None) -> str:
        """The orchestrator asks billing-agent, for the person whose token it holds."""
        headers = {"Host": BILLING_HOST, **({"authorization": f"Bearer {token}"} if token else {})}
        cert = self.pki.client_cert(*ORCHESTRATOR)
        http = httpx.AsyncClient(verify=self.pki.ssl_context(cert), headers=headers, timeout=15.0)

        async def send() -> str:
            async with http:
                return await a2a_send_text(self.envoy, http, text)

        return run_async(send())


@pytest.fixture(scope="module")
def mesh(pki: MeshPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserMesh]:
    idp = Idp()
    keys = idp.write_jwks(tmp_path_factory.mktemp("idp") / "jwks.json")
    policies = tmp_path_factory.mktemp("user-policies")
    (policies / "policy.yaml").write_text(users_settings(keys) + "---" + POLICIES)
    refunds: list[dict[str, Any]] = []
    started: list[Any] = []
    try:
        billing_db = serve_upstream("billing-db", billing_mcp.build_app(refunds))
        delegating = DelegatingAgent("billing-agent")
        agent = serve_upstream("billing-agent", delegating.app)
        mandate = MandateProcess(policies, tmp_path_factory.mktemp("user-mandate")).start()
        started += [billing_db, agent, mandate]
        config = mesh_envoy_config(pki, mandate.grpc_port, {BILLING_HOST: agent.port, BILLING_DB_HOST: billing_db.port})
        config.leading_filters = [request_authentication(keys)]
        config.extra_authz = {"metadata_context_namespaces": ["envoy.filters.http.jwt_authn"]}
        envoy = EnvoyProcess(config, tmp_path_factory.mktemp("user-envoy")).start()
        started.append(envoy)
        delegating.public_url = envoy.url("/")
        out = delegating.outbound
        out.envoy, out.pki, out.mcp_host, out.cert = envoy, pki, BILLING_DB_HOST, pki.client_cert(*BILLING)
        yield UserMesh(pki, idp, mandate, envoy, agent, billing_db, delegating, refunds)
    finally:
        for thing in reversed(started):
            thing.stop()


def refund(customer: str) -> str:
    return "call refund " + json.dumps({"customer": customer, "amount": 5})


def test_a_finance_users_refund_goes_through_the_chain_without_the_jwt(mesh):
    token = mesh.idp.token("alice", ["finance"], customer_id="c-1")
    reply = mesh.ask(refund("c-1"), token)
    assert reply.startswith("result: ") and json.loads(reply[len("result: ") :])["refunded"] is True
    assert mesh.refunds[-1] == {"customer": "c-1", "amount": 5}
    # the person's token stopped at the first Envoy: neither agent nor MCP server ever saw one
    seen = [*mesh.agent.recorder.requests, *mesh.billing_db.recorder.requests]
    assert seen and all(not request.header_values("authorization") for request in seen)
    assert mesh.delegating.outbound.propagated[-1]  # the chain header alone went on


def test_another_user_is_refused_the_refund_at_the_hop_that_needs_finance(mesh):
    before = len(mesh.refunds)
    bob = mesh.idp.token("bob", ["engineering"], customer_id="c-1")
    assert mesh.ask(refund("c-1"), bob) == "denied: user_not_allowed hop=billing-agent"
    alice = mesh.idp.token("alice", ["finance"], customer_id="c-1")
    assert mesh.ask(refund("c-2"), alice) == "denied: tool_not_allowed hop=billing-agent"  # not her customer
    assert len(mesh.refunds) == before


def test_without_a_person_the_refund_needs_one(mesh):
    assert mesh.ask(refund("c-1"), None) == "denied: user_required hop=billing-agent"


def test_a_token_envoy_cannot_verify_never_reaches_mandate(mesh):
    forged = Idp(ISSUER).token("alice", ["finance"], customer_id="c-1")  # the right iss, another key
    cert = mesh.pki.client_cert(*ORCHESTRATOR)
    with httpx.Client(verify=mesh.pki.ssl_context(cert), timeout=10.0) as http:
        answer = http.get(
            mesh.envoy.url("/.well-known/agent-card.json"),
            headers={"Host": BILLING_HOST, "authorization": f"Bearer {forged}"},
        )
    assert answer.status_code == 401  # jwt_authn's own answer, as Istio's RequestAuthentication gives


def test_the_audit_lines_name_the_user_at_every_hop(mesh):
    token = mesh.idp.token("carol", ["finance"], customer_id="c-3")
    assert mesh.ask(refund("c-3"), token).startswith("result: ")

    def carols() -> list[dict[str, Any]] | None:
        lines = [e for e in mesh.mandate.audit_events() if (e.get("user") or {}).get("sub") == "carol"]
        return lines if any(line.get("gen_ai.tool.name") == "refund" for line in lines) else None

    lines = wait_until(carols, 5.0, "carol's audit lines")
    assert {line["user"]["iss"] for line in lines} == {ISSUER}
    sent = next(line for line in lines if line.get("a2a.method") == "SendMessage")
    refunded = next(line for line in lines if line.get("gen_ai.tool.name") == "refund")
    assert sent["caller"].endswith("/sa/orchestrator") and sent["decision"] == "allow"
    assert refunded["caller"].endswith("/sa/billing-agent") and refunded["decision"] == "allow"
    assert refunded["hops"] == ["orchestrator", "billing-agent"] and refunded["chain_id"] == sent["minted_chain_id"]
    assert token not in mesh.mandate.stdout_text()
