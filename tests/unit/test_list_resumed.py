"""A resumed stream (MCP Streamable HTTP "Resumability and Redelivery"): a client that sends
`Last-Event-ID` gets the events the server stored replayed, list answers among them, for
requests Mandate's ext_proc never saw. ext_authz marks such a request for the response path,
and ext_proc filters every answer shaped like a list, so the agent never gets an unfiltered
list (SPEC §9, fail closed)."""

from __future__ import annotations

import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, to_check_request
from authz.check.response import build_response
from authz.listing.service import ListService
from authz.policy.compiled import PolicySet
from tests.harness.example_policies import BILLING, GITHUB_HOST, SUPPORT
from tests.harness.ext_proc import authz_metadata, chunks_of, deliver, jsonrpc, request_headers, resumed_get
from tests.harness.requests import mcp, tool

ALL_TOOLS = ["get_me", "create_issue", "list_issues", "delete_repo", "get_issue", "add_label"]
SUPPORT_TOOLS = ["get_me", "list_issues", "get_issue"]
FILTER = "x-mandate-filter"


def tools_answer(request_id: object, names: list[str] = ALL_TOOLS) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"tools": [{"name": n} for n in names], "nextCursor": "c"}}


def event(message: object, event_id: str) -> bytes:
    return b"id: " + event_id.encode() + b"\ndata: " + orjson.dumps(message) + b"\n\n"


def data_of(body: bytes) -> list[object]:
    """The JSON of each event that carries data, in order."""
    return [
        orjson.loads(line.removeprefix(b"data: "))
        for chunk in body.split(b"\n\n")
        for line in chunk.split(b"\n")
        if line.startswith(b"data: ") and line != b"data: "
    ]


@pytest.fixture
def service(example_policy: PolicySet) -> ListService:
    return ListService(Authorizer(example_policy))


def resume(service: ListService, answer: bytes | list[bytes], content_type: str = "text/event-stream", **kw):  # type: ignore[no-untyped-def]
    return deliver(service, None, answer, content_type, first=resumed_get(**kw))


# --- ext_authz: the marking -------------------------------------------------------------------


def get(headers: dict[str, str]) -> AuthzInput:
    sent = {"accept": "text/event-stream", **headers}
    return AuthzInput(method="GET", path="/mcp", host=GITHUB_HOST, headers=sent, source_principal=SUPPORT)


def marked(response: CheckResponse) -> bool:
    assert response.HasField("ok_response"), response
    ok = response.ok_response
    set_to = {o.header.key: o.header.value for o in ok.headers}.get(FILTER)
    assert (set_to == "mcp-list") != (FILTER in ok.headers_to_remove)  # set or removed, never left to the client
    return set_to == "mcp-list"


@pytest.mark.parametrize(
    "request_",
    [get({"last-event-id": "s1_4"}), tool("get_me"), mcp("initialize")],
    ids=["GET", "tools/call", "initialize"],
)
def test_a_request_resuming_a_stream_is_marked_for_the_response_path(authorizer, request_):
    request_.headers["last-event-id"] = "s1_4"
    assert marked(build_response(authorizer.decide(request_), "x-delegation-chain"))


def test_the_get_stream_without_last_event_id_is_not_marked_and_a_client_cannot_mark_it(authorizer):
    assert not marked(build_response(authorizer.decide(get({FILTER: "mcp-list"})), "x-delegation-chain"))


def test_the_decision_cache_never_answers_a_resumed_get_with_the_plain_gets_answer(authorizer):
    """Last-Event-ID is among the headers a decision reads, so the cache keys on it (both ways)."""

    def check(headers: dict[str, str]) -> CheckResponse:
        payload = to_check_request(get(headers)).SerializeToString()
        return CheckResponse.FromString(authorizer.check_bytes(payload))

    for _ in range(2):  # the second round is answered from the cache
        assert not marked(check({}))
        assert marked(check({"last-event-id": "s1_4"}))
        assert marked(check({"last-event-id": "s1_5"}))


# --- ext_proc: what a resumed stream may replay -----------------------------------------------

REPLAY = (
    b"id: s1_0\nretry: 1000\ndata: \n\n"  # the priming event
    + event({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1}}, "s1_1")
    + event({"jsonrpc": "2.0", "id": 0, "method": "roots/list"}, "s1_2")  # the server's own request
    + event(tools_answer(3), "s1_3")
    + event({"jsonrpc": "2.0", "id": 4, "error": {"code": -1, "message": "no"}}, "s1_4")
)


def test_a_replayed_list_answer_is_filtered_and_every_other_event_passes_as_it_came(service):
    delivered = resume(service, REPLAY)
    cut = REPLAY.index(b"id: s1_3")
    assert delivered.status == 200 and delivered.body[:cut] == REPLAY[:cut]
    assert delivered.body.endswith(REPLAY[REPLAY.index(b"id: s1_4") :])
    answer = data_of(delivered.body)[2]
    assert answer == {
        "jsonrpc": "2.0",
        "id": 3,
        "result": {"tools": [{"name": n} for n in SUPPORT_TOOLS], "nextCursor": "c"},
    }


@pytest.mark.parametrize("size", [1, 2, 5, 64])
def test_a_replayed_list_answer_split_anywhere_is_filtered_the_same(service, size):
    assert resume(service, chunks_of(REPLAY, size)).body == resume(service, REPLAY).body


def test_each_list_kind_is_told_by_its_top_level_key(service):
    answers = [
        {"jsonrpc": "2.0", "id": "p", "result": {"prompts": [{"name": "triage"}, {"name": "escalate"}]}},
        {"jsonrpc": "2.0", "id": "r", "result": {"resources": [{"uri": "repo://acme/readme"}, {"uri": "repo://x/y"}]}},
        {"jsonrpc": "2.0", "id": "t", "result": {"resourceTemplates": [{"uriTemplate": "repo://{o}/{p}"}]}},
    ]
    prompts, resources, templates = data_of(resume(service, b"".join(event(a, "e") for a in answers)).body)
    assert prompts["result"]["prompts"] == [{"name": "triage"}]
    assert resources["result"]["resources"] == [{"uri": "repo://acme/readme"}]
    assert templates["result"]["resourceTemplates"] == []


def test_a_list_answer_inside_a_replayed_batch_is_filtered_and_the_rest_of_the_batch_kept(service):
    call = {"jsonrpc": "2.0", "id": 5, "result": {"content": [{"type": "text", "text": "delete_repo"}]}}
    [batch] = data_of(resume(service, event([call, tools_answer(6)], "s2_1")).body)
    assert batch[0] == call and [t["name"] for t in batch[1]["result"]["tools"]] == SUPPORT_TOOLS


def test_a_call_result_holding_tools_below_its_top_level_passes_byte_for_byte(service):
    structured = {"tools": [{"name": "delete_repo"}], "resources": [{"uri": "repo://secret/keys"}]}
    call = {"jsonrpc": "2.0", "id": 5, "result": {"content": [], "structuredContent": structured}}
    replay = b"id: s3_1\ndata:  " + orjson.dumps(call) + b"\n\n"  # two spaces: rewritten, it would differ
    delivered = resume(service, replay)
    assert delivered.body == replay and "content-length" not in delivered.headers


def test_a_replayed_json_answer_is_filtered_too(service):
    delivered = resume(service, orjson.dumps(tools_answer(9)), "application/json")
    assert [t["name"] for t in delivered.json()["result"]["tools"]] == SUPPORT_TOOLS


@pytest.mark.parametrize(
    ("data", "ids"),
    [
        (b'{"jsonrpc":"2.0","id":3,"result":{"tools":{"name":"delete_repo"}}}', [3]),  # not a list
        (b'{"jsonrpc":"2.0","id":3,"result":{"tools":["delete_repo"]}}', [3]),  # entries without a name
        (b'[{"jsonrpc":"2.0","id":4,"result":{}},{"jsonrpc":"2.0","id":3,"result":{"tools":7}}]', [4, 3]),
        (b'{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"delete_repo"}]', [None]),  # cut JSON
        (b'{"id":3,"result":{"tools":[{"name":"delete_repo"}]}}', [None]),  # not JSON-RPC 2.0
    ],
    ids=["tools-object", "nameless", "batch", "cut", "no-jsonrpc"],
)
def test_a_replayed_answer_mandate_cannot_read_ends_the_stream_with_an_error_naming_no_entry(service, data, ids):
    """An error for each answer the event held (a batch answered by a batch), or id null when
    the event cannot be read far enough to tell; and nothing the server sends after it."""
    later = event(tools_answer(8, ["get_me"]), "s1_9")
    delivered = resume(service, [b"id: s1_1\ndata: " + data + b"\n\n", later])
    assert b"delete_repo" not in delivered.body and b"s1_9" not in delivered.body
    [error] = data_of(delivered.body)
    errors = error if isinstance(error, list) else [error]
    assert [e["id"] for e in errors] == ids
    assert {e["error"]["data"]["reason"] for e in errors} == {"list_unreadable"}


def test_an_event_other_than_a_message_or_another_content_type_is_refused(service):
    named = resume(service, b"event: endpoint\ndata: " + orjson.dumps(tools_answer(3)) + b"\n\n")
    assert b"delete_repo" not in named.body and data_of(named.body)[0]["error"]["data"]["reason"] == "list_unreadable"
    html = resume(service, b"<p>delete_repo</p>", "text/html")
    assert html.immediate and b"delete_repo" not in html.body and html.status == 502


def test_a_resumed_get_from_a_caller_mandate_cannot_tell_is_refused_before_it_reaches_the_server(service):
    delivered = resume(service, REPLAY, caller="spiffe://cluster.local/ns/x/sa/stranger")
    assert delivered.immediate and not delivered.upstream_reached and b"delete_repo" not in delivered.body


def test_a_post_resuming_a_stream_filters_its_own_lists_by_id_and_the_replayed_ones_by_shape(service):
    first = request_headers(headers={"last-event-id": "s1_2"})
    replay = event(tools_answer(3), "s1_3") + event(tools_answer(1), "s1_4")
    delivered = deliver(service, jsonrpc("tools/list", 1), replay, "text/event-stream", first=first)
    assert [[t["name"] for t in a["result"]["tools"]] for a in data_of(delivered.body)] == [SUPPORT_TOOLS] * 2


def test_without_last_event_id_a_result_for_an_id_never_asked_is_still_refused(service):
    delivered = deliver(service, jsonrpc("tools/list", 1), event(tools_answer(3), "x"), "text/event-stream")
    assert b"delete_repo" not in delivered.body


# --- one caller cannot hold every stream -------------------------------------------------------


def test_one_caller_holding_streams_open_cannot_take_every_other_callers_lists(example_policy: PolicySet):
    """Resumed GETs last as long as the upstream keeps them: one agent keeping `per_caller` of them
    open gets its next one refused (429 `list_caller_busy`, before it reaches the server), while
    another agent's list is still filtered; a stream that ends gives its caller one back."""
    service = ListService(Authorizer(example_policy), streams=8, per_caller=2)
    held = [service.open() for _ in range(2)]
    for stream in held:
        assert stream is not None
        assert not stream.answer(resumed_get()).HasField("immediate_response")
    busy = resume(service, REPLAY)
    assert busy.immediate and not busy.upstream_reached and busy.status == 429
    assert b"list_caller_busy" in busy.body and b"delete_repo" not in busy.body
    other = request_headers(BILLING, metadata=authz_metadata("billing-agent"))
    assert not deliver(service, jsonrpc("tools/list"), orjson.dumps(tools_answer(1)), first=other).immediate
    service.close(held.pop())
    assert data_of(resume(service, REPLAY).body)[2]["result"]["tools"] == [{"name": n} for n in SUPPORT_TOOLS]


def test_refused_and_closed_streams_leave_no_count_behind(example_policy: PolicySet):
    """The count is of streams open now: a refused one takes nothing, and every close gives back."""
    service = ListService(Authorizer(example_policy), streams=4, per_caller=1)
    for _ in range(3):
        first = service.open()
        assert first is not None and not first.answer(resumed_get()).HasField("immediate_response")
        assert resume(service, REPLAY).immediate  # refused while `first` is open
        service.close(first)
    assert not resume(service, REPLAY).immediate
    assert service._held == {}
