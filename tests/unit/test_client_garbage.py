"""Client garbage is the client's fault: a 400 with a reason that says what was wrong, never
`internal_error`, never a traceback in the log (SPEC §4.3, red-team finding B).

Each case goes through `Authorizer.check_bytes`, the gRPC entry point, as Envoy would send it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, to_check_request
from authz.policy.compiled import PolicySet
from tests.harness.example_policies import GITHUB_HOST, SUPPORT

TOOL_CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_me","arguments":{}}}'


def send(authorizer: Authorizer, headers: dict[str, str], body: bytes) -> CheckResponse:
    request = AuthzInput(
        method="POST", path="/mcp", host=GITHUB_HOST, headers=headers, body=body, source_principal=SUPPORT
    )
    return CheckResponse.FromString(authorizer.check_bytes(to_check_request(request).SerializeToString()))


def outcome(response: CheckResponse) -> tuple[int, str]:
    status = response.denied_response.status.code if response.HasField("denied_response") else 200
    return status, response.dynamic_metadata.fields["reason"].string_value


def logged_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("decision_cache", [0, 1000], ids=["uncached", "cached"])
@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"mcp-name": "=?base64?\u00e9?="}, TOOL_CALL, (400, "invalid_header")),
        ({"mcp-method": "=?base64?\u00e9?="}, TOOL_CALL, (400, "invalid_header")),
        ({}, b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping","method":"ping"}', (400, "duplicate_json_key")),
        ({"content-length": "\u00b2"}, TOOL_CALL, (400, "invalid_header")),  # "²".isdigit(), but int("²") fails
        ({"content-length": "\u0661\u0660\u0660"}, TOOL_CALL, (400, "invalid_header")),  # int() reads Arabic-Indic 100
        ({"content-length": "9" * 5000}, TOOL_CALL, (400, "partial_body")),  # int() refuses 4,300 digits or more
        (
            {"content-length": "0" * 5000 + str(len(TOOL_CALL))},
            TOOL_CALL,
            (200, "allowed"),
        ),  # leading zeros are allowed
    ],
    ids=[
        "mcp-name",
        "mcp-method",
        "surrogate-id",
        "superscript-length",
        "arabic-length",
        "huge-length",
        "zero-padded-length",
    ],
)
def test_client_garbage_is_a_precise_400(example_policy, caplog, headers, body, expected, decision_cache):
    caplog.set_level(logging.ERROR)
    response = send(Authorizer(example_policy, decision_cache=decision_cache), headers, body)
    assert outcome(response) == expected
    assert logged_errors(caplog) == []
    if expected[0] == 400:
        error = orjson.loads(response.denied_response.body)
        assert error["error"]["data"]["reason"] == expected[1]


# --- any header value, any JSON-RPC body ---------------------------------------------------------

NAMES = ["get_me", "list_issues", "repo://acme/readme", "triage", "cr\u00e9er_issue", "tools/call"]
METHODS = [
    "tools/call",
    "resources/read",
    "prompts/get",
    "completion/complete",
    "initialize",
    "ping",
    "tools/list",
    "notifications/initialized",
    "logging/setLevel",
]
# Text with lone and paired surrogates, which `json.dumps` writes as `\ud800` escapes.
SURROGATES = st.text(
    st.characters(min_codepoint=0xD7FF, max_codepoint=0xE000) | st.sampled_from("a\u00e9\U0001f600"), max_size=4
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | SURROGATES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
IDS = (
    st.integers(0, 99)
    | st.text(max_size=6)
    | st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | SURROGATES
)
DIGITS = (
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=6)  # ², ١, Ⅻ, １ ...
    | st.integers(0, 10**20).map(str)
    | st.integers(4200, 6000).map(lambda count: "9" * count)
    | st.integers(4200, 6000).map(lambda count: "0" * count + "7")
)


def base64_forms(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A name in the 2026-07-28 wrapping, and ways to get the wrapping nearly right."""
    encoded = text.map(lambda value: base64.b64encode(value.encode()).decode())
    return st.one_of(
        encoded.map(lambda payload: f"=?base64?{payload}?="),
        st.binary(max_size=12).map(lambda raw: f"=?base64?{base64.b64encode(raw).decode()}?="),  # not always UTF-8
        st.text(max_size=12).map(lambda payload: f"=?base64?{payload}?="),
        st.tuples(encoded, st.sampled_from(["=", "==", "\n", " ", "?=", "\u00e9"])).map(
            lambda pair: f"=?base64?{pair[0]}{pair[1]}?="
        ),
        encoded.map(lambda payload: f"=?base64?{payload}?=\n"),
        encoded.map(lambda payload: f"=?utf-8?B?{payload}?="),  # RFC 2047, which MCP does not use
        st.sampled_from(
            ["=?base64?\u00e9?=", "=?base64??=", "=?base64?=", "=?BASE64?Z2V0X21l?=", "=?utf-8?Q?cr=C3=A9er?="]
        ),
    )


def header_values(names: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return names | base64_forms(names) | base64_forms(st.text(max_size=8)) | st.text(max_size=20) | DIGITS


def is_garbage_routing_header(value: str) -> bool:
    """What the 2026-07-28 header SEP tells servers to refuse: a value that is neither printable
    ASCII nor `=?base64?<canonical base64 of UTF-8>?=`."""
    if len(value) >= 11 and value[:9] == "=?base64?" and value[-2:] == "?=":
        payload = value[9:-2]
        try:
            decoded = base64.b64decode(payload.encode("ascii"), validate=True)
            decoded.decode("utf-8")
        except (UnicodeError, binascii.Error):
            return True
        return base64.b64encode(decoded).decode("ascii") != payload
    return any(not 0x20 <= ord(char) <= 0x7E for char in value)


def has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")  # pairs decode; a lone half does not
        except UnicodeDecodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(has_lone_surrogate(key) or has_lone_surrogate(item) for key, item in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(item) for item in value)
    return False


def json_object(draw: st.DrawFn, members: list[tuple[str, Any]]) -> tuple[str, bool]:
    """A JSON object written member by member, some of them perhaps repeated; and whether one was."""
    repeated = draw(st.lists(st.sampled_from(members), max_size=2)) if members and draw(st.integers(0, 5)) == 0 else []
    for member in repeated:
        members.insert(draw(st.integers(0, len(members))), member)
    return "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in members) + "}", bool(repeated)


@st.composite
def mcp_posts(draw: st.DrawFn) -> tuple[dict[str, str], bytes, bool]:
    """Headers and body of an MCP POST, and whether a strict reader must refuse it as malformed."""
    method = draw(st.sampled_from(METHODS) | st.text(max_size=10) | SURROGATES)
    name = draw(st.sampled_from(NAMES) | st.text(max_size=10) | SURROGATES)
    params = draw(
        st.dictionaries(
            st.sampled_from(["name", "uri", "arguments", "ref", "level"]), st.just(name) | JSON_VALUES, max_size=4
        )
    )
    params_text, params_repeated = json_object(draw, [(key, json.dumps(value)) for key, value in params.items()])
    values = {"jsonrpc": draw(st.sampled_from(["2.0"] * 5 + ["1.0"])), "id": draw(IDS), "method": method}
    values = {key: value for key, value in values.items() if draw(st.integers(0, 9))}  # a member may be missing
    text, repeated = json_object(
        draw, [(key, json.dumps(value)) for key, value in values.items()] + [("params", params_text)]
    )
    if draw(st.integers(0, 5)) == 0:
        text = f"[{text}]"
    header_names = ["mcp-name", "mcp-method", "content-length", "mcp-protocol-version", "x-envoy-auth-partial-body"]
    mirrored = [
        value for value in (name, method) if not any("\ud800" <= char <= "\udfff" for char in value)
    ]  # headers are UTF-8
    headers = draw(
        st.dictionaries(st.sampled_from(header_names), header_values(st.sampled_from([*mirrored, *NAMES])), max_size=4)
    )
    declared = headers.get("content-length")
    garbage = (
        params_repeated
        or repeated
        or has_lone_surrogate([values, params])
        or any(is_garbage_routing_header(headers[key]) for key in ("mcp-name", "mcp-method") if key in headers)
        or (declared is not None and not all("0" <= char <= "9" for char in declared or "x"))
    )
    return headers, text.encode(), garbage


@pytest.mark.parametrize("decision_cache", [0, 1000], ids=["uncached", "cached"])
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mcp_posts())
@example(({"mcp-name": "=?base64?\u00e9?="}, TOOL_CALL, True))
@example(({"content-length": "\u00b2"}, TOOL_CALL, True))
@example(({}, b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping","method":"ping"}', True))
def test_no_client_input_is_an_internal_error(
    example_policy: PolicySet,
    caplog: pytest.LogCaptureFixture,
    decision_cache: int,
    case: tuple[dict[str, str], bytes, bool],
) -> None:
    """Whatever a client sends to an MCP server, the answer is decided and says why; what a
    strict reader must refuse (a repeated key, a lone surrogate, a routing header that is not
    printable ASCII or canonical base64, a Content-Length that is not ASCII digits) is a 400."""
    headers, body, garbage = case
    caplog.clear()
    caplog.set_level(logging.ERROR)
    status, reason = outcome(send(Authorizer(example_policy, decision_cache=decision_cache), headers, body))
    assert reason != "internal_error"
    assert logged_errors(caplog) == []
    assert status in (200, 400, 403)
    if garbage:
        assert status == 400, reason
