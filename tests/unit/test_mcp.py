"""MCP classification for every method family and revision, and its hygiene (SPEC §4)."""

from __future__ import annotations

import base64

import orjson
import pytest

from authz.check.protocols.jsonrpc import Malformed
from authz.check.protocols.mcp import classify_mcp, decode_header_value

REVISIONS = ["", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]


def body(method: str | None = None, request_id: object = 1, **params: object) -> bytes:
    message: dict[str, object] = {"jsonrpc": "2.0"}
    if request_id is not None:
        message["id"] = request_id
    if method is not None:
        message["method"] = method
    if params:
        message["params"] = params
    return orjson.dumps(message)


def one(method: str, revision: str = "2026-07-28", headers: dict[str, str] | None = None, **params: object):
    all_headers = {"mcp-protocol-version": revision, **(headers or {})}
    actions, is_batch = classify_mcp("POST", all_headers, body(method, **params))
    assert not is_batch and len(actions) == 1
    return actions[0]


@pytest.mark.parametrize("revision", REVISIONS)
def test_subjects_of_every_revision(revision):
    tool = one("tools/call", revision, name="list_issues", arguments={"repo": "acme/x"})
    assert (tool.kind, tool.name, tool.arguments) == ("tool", "list_issues", {"repo": "acme/x"})
    assert (one("resources/read", revision, uri="repo://acme/readme").kind) == "resource"
    assert one("prompts/get", revision, name="triage").name == "triage"


@pytest.mark.parametrize(
    "method",
    [
        "initialize",
        "ping",
        "server/discover",
        "subscriptions/listen",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
    ],
)
def test_session_plumbing(method):
    assert one(method).kind == "plumbing"


def test_notification_and_posted_back_response_are_plumbing():
    actions, _ = classify_mcp("POST", {}, body("notifications/initialized", request_id=None))
    assert actions[0].kind == "plumbing" and actions[0].id is None
    actions, _ = classify_mcp("POST", {}, orjson.dumps({"jsonrpc": "2.0", "id": 9, "result": {}}))
    assert actions[0].kind == "plumbing" and actions[0].method == "response"


@pytest.mark.parametrize("http_method", ["GET", "DELETE"])
def test_stream_and_session_end_are_plumbing(http_method):
    actions, _ = classify_mcp(http_method, {}, b"")
    assert actions[0].kind == "plumbing"


@pytest.mark.parametrize(
    "method", ["logging/setLevel", "resources/subscribe", "tasks/get", "sampling/createMessage", "Tools/Call"]
)
def test_other_methods_need_a_methods_entry(method):
    action = one(method, name="x", uri="y")
    assert (action.kind, action.name) == ("method", method)


def test_completion_refers_to_prompt_or_resource():
    prompt = one(
        "completion/complete", ref={"type": "ref/prompt", "name": "triage"}, argument={"name": "a", "value": "b"}
    )
    resource = one("completion/complete", ref={"type": "ref/resource", "uri": "repo://acme/{x}"})
    assert (prompt.kind, prompt.name) == ("prompt", "triage")
    assert (resource.kind, resource.name) == ("resource", "repo://acme/{x}")
    with pytest.raises(Malformed):
        one("completion/complete", ref={"type": "ref/tool", "name": "x"})


def test_batch_in_2025_03_26():
    batch = orjson.dumps([orjson.loads(body("tools/call", 1, name="a")), orjson.loads(body("ping", 2))])
    actions, is_batch = classify_mcp("POST", {"mcp-protocol-version": "2025-03-26"}, batch)
    assert is_batch and [a.kind for a in actions] == ["tool", "plumbing"]
    actions, is_batch = classify_mcp("POST", {}, batch)  # 2025-03-26 clients sent no version header
    assert is_batch


@pytest.mark.parametrize("revision", ["2025-06-18", "2025-11-25", "2026-07-28"])
def test_batch_after_2025_03_26_is_malformed(revision):
    batch = orjson.dumps([orjson.loads(body("ping"))])
    with pytest.raises(Malformed) as caught:
        classify_mcp("POST", {"mcp-protocol-version": revision}, batch)
    assert caught.value.reason == "batch_not_allowed"


def test_empty_batch_is_malformed():
    with pytest.raises(Malformed) as caught:
        classify_mcp("POST", {}, b"[]")
    assert caught.value.reason == "empty_batch"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "missing_body"),
        (b"not json", "invalid_json"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}', "duplicate_json_key"),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1,"x":2}}}',
            "duplicate_json_key",
        ),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', "invalid_jsonrpc"),
        (b'{"id":1,"method":"ping"}', "invalid_jsonrpc"),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', "invalid_jsonrpc"),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', "invalid_jsonrpc"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}', "invalid_jsonrpc"),
        (b'{"jsonrpc":"2.0","id":1,"method":""}', "invalid_jsonrpc"),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}', "invalid_params"),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":[1]}}', "invalid_params"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":NaN}}', "invalid_json"),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\\ud800"}}', "invalid_json"),
        (b'\xff\xfe{"jsonrpc":"2.0"}', "invalid_json"),
        # a BOM some readers skip; two documents in one body
        ('\ufeff{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}'.encode(), "invalid_json"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"} {"jsonrpc":"2.0","id":2,"method":"tools/call"}', "invalid_json"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":Infinity}}', "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'"just a string"', "invalid_jsonrpc"),
    ],
)
def test_hygiene(payload, reason):
    with pytest.raises(Malformed) as caught:
        classify_mcp("POST", {}, payload)
    assert caught.value.reason == reason


def test_duplicate_key_error_keeps_an_unambiguous_id():
    with pytest.raises(Malformed) as caught:
        classify_mcp("POST", {}, b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a","name":"b"}}')
    assert (caught.value.reason, caught.value.request_id) == ("duplicate_json_key", 7)
    with pytest.raises(Malformed) as caught:
        classify_mcp("POST", {}, b'{"jsonrpc":"2.0","id":7,"id":8,"method":"ping"}')
    assert caught.value.request_id is None  # which id? neither


def test_duplicate_key_error_never_echoes_an_id_with_a_lone_surrogate():
    """The id is written into the deny body; a lone surrogate cannot be, so the deny failed to render."""
    with pytest.raises(Malformed) as caught:
        classify_mcp("POST", {}, b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping","method":"ping"}')
    assert (caught.value.reason, caught.value.request_id) == ("duplicate_json_key", None)
    with pytest.raises(Malformed) as caught:
        classify_mcp("POST", {}, b'{"jsonrpc":"2.0","id":"\\ud83d\\ude00","method":"ping","method":"ping"}')
    assert caught.value.request_id == "\U0001f600"  # a pair is one character


def test_malformed_error_keeps_the_request_id_when_known():
    with pytest.raises(Malformed) as caught:
        classify_mcp("POST", {}, b'{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{}}')
    assert caught.value.request_id == "abc"


@pytest.mark.parametrize("http_method", ["PUT", "PATCH", "OPTIONS"])
def test_other_http_methods(http_method):
    with pytest.raises(Malformed):
        classify_mcp(http_method, {}, b"")


class TestRoutingHeaders:
    def test_agreeing_headers_pass(self):
        assert (
            one("tools/call", headers={"mcp-method": "tools/call", "mcp-name": "get_me"}, name="get_me").name
            == "get_me"
        )
        assert (
            one("resources/read", headers={"mcp-method": "resources/read", "mcp-name": "repo://a"}, uri="repo://a").name
            == "repo://a"
        )

    @pytest.mark.parametrize(
        "headers",
        [
            {"mcp-method": "tools/list"},
            {"mcp-name": "get_me"},  # the body calls delete_repo
            {"mcp-method": "tools/call", "mcp-name": "GET_ME"},
            {"mcp-name": ""},
        ],
    )
    def test_disagreeing_headers_are_malformed(self, headers):
        with pytest.raises(Malformed) as caught:
            one("tools/call", headers=headers, name="delete_repo")
        assert caught.value.reason == "mcp_header_mismatch"

    def test_base64_sentinel_is_decoded(self):
        name = "créer_issue"
        wrapped = f"=?base64?{base64.b64encode(name.encode()).decode()}?="
        assert one("tools/call", headers={"mcp-name": wrapped}, name=name).name == name
        with pytest.raises(Malformed):
            one("tools/call", headers={"mcp-name": wrapped}, name="get_me")

    def test_a_value_that_only_looks_wrapped_is_compared_as_sent(self):
        with pytest.raises(Malformed) as caught:
            one("tools/call", headers={"mcp-name": "=?base64?Z2V0X21l?=x"}, name="get_me")
        assert caught.value.reason == "mcp_header_mismatch"
        assert decode_header_value("Mcp-Name", "=?base64?=") == "=?base64?="  # too short to be wrapped
        assert decode_header_value("Mcp-Name", "=?base64??=") == ""

    @pytest.mark.parametrize("header", ["mcp-name", "mcp-method"])
    @pytest.mark.parametrize(
        "value",
        [
            "=?base64?\u00e9?=",  # non-ASCII payload: base64 raised ValueError, reported as internal_error
            "=?base64?!!!?=",
            "=?base64?Z2V0X21lZQ?=",
            "=?base64?Z2V0X21l=?=",  # not base64; padding missing, misplaced
            "=?base64?Z2V=?=",  # decodes to "ge", which is written Z2U=
            "=?base64?/w==?=",  # not UTF-8
            "=?base64?Z2V0X21l\n?=",
            "=?base64?Z2V0X21l?=\n",  # a newline inside, or after the closing ?=
            "get_me\n",
            "get\x00me",
            "get\tme",
            "cr\u00e9er_issue",
            "\u0661",  # plain, but not visible ASCII
        ],
    )
    def test_malformed_values_are_invalid_headers(self, header, value):
        with pytest.raises(Malformed) as caught:
            one("tools/call", request_id=5, headers={header: value}, name="get_me")
        assert (caught.value.reason, caught.value.request_id) == ("invalid_header", 5)

    def test_headers_on_a_batch_are_a_mismatch(self):
        batch = orjson.dumps([orjson.loads(body("ping"))])
        with pytest.raises(Malformed) as caught:
            classify_mcp("POST", {"mcp-method": "ping"}, batch)
        assert caught.value.reason == "mcp_header_mismatch"
