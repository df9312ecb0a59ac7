"""Which headers decide is enforced, not remembered.

The decision cache's key lists the headers a decision may read (`DecisionCache.headers`, and
the pseudo-headers). The steps are given only those (`request.from_wire(wire, visible)`), so
no step can decide on another. These tests hold that from both sides: the input the steps get
holds no other header, and a decision made from every header the request carried (the
protobuf path, `from_check_request`) is the decision made from the visible ones, for requests
carrying every header name that appears anywhere in Mandate's source, with values that matter.
If a step ever reads a header outside the list, the second test fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.check.decision import Decision
from authz.check.decision_cache import PSEUDO_HEADERS
from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, from_check_request, from_wire, to_check_request
from authz.check.wire import read_wire
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import BILLING, BILLING_HOST, EXAMPLES, GITHUB_HOST, ORCHESTRATOR, SUPPORT, TRIAGE

AUTHZ = Path(__file__).resolve().parents[2] / "authz"
# Every header-shaped name in Mandate's source: a step that reads one is found by the tests below.
NAMED_IN_SOURCE = sorted(
    {
        name
        for path in AUTHZ.rglob("*.py")
        for name in re.findall(r"[\"']([a-z][a-z0-9]*(?:-[a-z0-9]+)+)[\"']", path.read_text())
    }
)
HEADER_NAMES = (*NAMED_IN_SOURCE, "authorization", "cookie", "x-tenant", "x-user", "user-agent")
VALUES = (
    "",
    "true",
    "0",
    "5",
    "a",
    "tools/call",
    "get_me",
    "application/json",
    "2025-06-18",
    "URI=spiffe://cluster.local/ns/x/sa/y",
)
WHEN_READS_A_HEADER = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: tools}
spec: {kind: mcp, hosts: [tools.local]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: reader}
spec:
  principals: [spiffe://cluster.local/ns/support/sa/support-agent]
  mission: reads, for tenant a only
  mcp: [{server: tools, tools: [get_me], when: 'request.headers["x-tenant"] == "a"'}]
"""


@pytest.fixture(scope="module")
def policy_sets(tmp_path_factory: pytest.TempPathFactory) -> list[PolicySet]:
    directory = tmp_path_factory.mktemp("when-reads-a-header")
    (directory / "policy.yaml").write_text(WHEN_READS_A_HEADER)
    return [compile_directory(EXAMPLES), compile_directory(directory)]


@st.composite
def requests(draw: st.DrawFn) -> AuthzInput:
    caller = draw(st.sampled_from([SUPPORT, BILLING, ORCHESTRATOR, TRIAGE]))
    host = draw(st.sampled_from([GITHUB_HOST, BILLING_HOST, "tools.local", "api.github.com"]))
    method = draw(st.sampled_from(["tools/call", "tools/list", "SendMessage", "initialize"]))
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"name": "get_me", "arguments": {}}})
    headers = draw(st.dictionaries(st.sampled_from(HEADER_NAMES), st.sampled_from(VALUES), max_size=12))
    verb, path = draw(st.sampled_from([("POST", "/mcp"), ("POST", "/"), ("GET", "/zen")]))
    return AuthzInput(verb, path, host, headers, body if verb == "POST" else b"", caller)


def verdict(decision: Decision) -> tuple[object, ...]:
    return (
        decision.result,
        decision.verdict.reason,
        decision.verdict.status,
        decision.verdict.hop,
        decision.verdict.rule,
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests(), which=st.integers(0, 1))
def test_the_steps_get_only_the_headers_the_key_holds_and_decide_as_with_all(policy_sets, request, which):
    authorizer = Authorizer(policy_sets[which])
    payload = to_check_request(request).SerializeToString()
    wire = read_wire(payload)
    assert wire is not None
    visible = authorizer._snapshot.cache.visible
    seen = from_wire(wire, visible)
    if visible is not None:
        assert set(seen.headers) <= {name.decode() for name in visible}
    every = from_check_request(CheckRequest.FromString(payload))
    assert verdict(authorizer.decide(seen)) == verdict(authorizer.decide(every)), (request.headers, visible)


def test_the_source_scan_finds_the_headers_the_steps_read():
    """The scan is what makes the test above find a new header read: it must see the known ones."""
    assert {"mcp-method", "mcp-name", "content-length", "x-envoy-auth-partial-body", "x-delegation-chain"} <= set(
        NAMED_IN_SOURCE
    )


def test_a_when_that_reads_a_header_puts_it_in_the_key_and_the_input(policy_sets):
    cache = Authorizer(policy_sets[1])._snapshot.cache
    assert cache.visible is not None and b"x-tenant" in cache.visible
    assert {name.encode() for name in PSEUDO_HEADERS} <= set(cache.visible)
    assert b"x-forwarded-client-cert" not in cache.visible  # read only without a source principal: never here
