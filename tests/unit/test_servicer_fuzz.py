"""Hostile CheckRequests: always a response with a reason, never an exception (issue #2)."""

from __future__ import annotations

import json

import orjson
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.check.pipeline import Authorizer
from tests.harness.example_policies import GITHUB_HOST, SUPPORT

HEADER_NAMES = st.sampled_from(
    [
        "content-type",
        "mcp-method",
        "mcp-name",
        "mcp-protocol-version",
        "x-envoy-auth-partial-body",
        "content-length",
        "x-forwarded-client-cert",
        "x-delegation-chain",
        ":authority",
        "x-caller-identity",
    ]
) | st.text(min_size=1, max_size=20)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["jsonrpc", "json", "bytes", "deep", "big", "empty"]))
    if kind == "jsonrpc":
        message = {
            "jsonrpc": "2.0",
            "id": draw(st.integers() | st.text(max_size=5)),
            "method": draw(
                st.sampled_from(["tools/call", "resources/read", "prompts/get", "initialize", "SendMessage", "x"])
            ),
            "params": draw(JSON_VALUES),
        }
        return json.dumps(draw(st.sampled_from([message, [message], [message, message]]))).encode()
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 50_000))
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "big":
        return b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"A" * 1_048_576 + b'"}}'
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=200))


@st.composite
def check_requests(draw) -> CheckRequest:
    check = CheckRequest()
    attributes = check.attributes
    if draw(st.booleans()):
        attributes.source.principal = draw(
            st.sampled_from([SUPPORT, "", "spiffe://evil/x", "not a uri"]) | st.text(max_size=50)
        )
    if draw(st.booleans()):
        attributes.destination.principal = draw(st.text(max_size=50))
    http = attributes.request.http
    http.method = draw(st.sampled_from(["POST", "GET", "DELETE", "PUT", ""]) | st.text(max_size=8))
    http.path = draw(
        st.sampled_from(["/mcp", "/", "/.well-known/agent-card.json", "/mcp/../x", "/a%2Fb"]) | st.text(max_size=40)
    )
    http.host = draw(
        st.sampled_from([GITHUB_HOST, "billing-agent.billing.svc.cluster.local", "api.github.com", ""])
        | st.text(max_size=30)
    )
    for name, value in draw(
        st.dictionaries(HEADER_NAMES, st.text(max_size=100) | st.just("x" * 70_000), max_size=6)
    ).items():
        http.headers[name] = value
    http.raw_body = draw(bodies())
    return check


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(check_requests())
def test_any_check_request_gets_a_reasoned_answer(example_policy, check):
    response = CheckResponse.FromString(Authorizer(example_policy).check_bytes(check.SerializeToString()))
    assert response.HasField("ok_response") or response.HasField("denied_response")
    metadata = response.dynamic_metadata.fields
    assert metadata["reason"].string_value  # every answer says why
    if response.HasField("denied_response"):
        assert response.denied_response.status.code in (400, 401, 403)
        orjson.loads(response.denied_response.body)  # always valid JSON
        assert metadata["reason"].string_value != "internal_error"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_bytes_that_are_not_a_check_request(example_policy, payload):
    response = CheckResponse.FromString(Authorizer(example_policy).check_bytes(payload))
    assert response.HasField("ok_response") or response.HasField("denied_response")


def test_invalid_utf8_in_a_string_field_is_a_400(example_policy):
    # field 1 (attributes) > field 4 (request) > field 2 (http) > field 4 (path) holding 0xff
    path = b"\x22\x01\xff"
    http = b"\x12" + bytes([len(path)]) + path
    request = b"\x22" + bytes([len(http)]) + http
    payload = b"\x0a" + bytes([len(request)]) + request
    response = CheckResponse.FromString(Authorizer(example_policy).check_bytes(payload))
    assert response.denied_response.status.code == 400
    assert orjson.loads(response.denied_response.body)["reason"] == "invalid_check_request"
