"""The response path, one ext_proc stream at a time: what reaches the agent is the list answer
with every entry removed that a call by the same caller would be refused (SPEC §9), or an
error, never the unfiltered list."""

from __future__ import annotations

import gzip
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.chains.store import Hop
from authz.check.pipeline import Authorizer
from authz.listing.service import ListService
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import GITHUB_HOST, SUPPORT, TRIAGE
from tests.harness.ext_proc import authz_metadata, chunks_of, deliver, jsonrpc, request_headers

GITHUB_TOOLS = ["get_me", "create_issue", "list_issues", "delete_repo", "get_issue", "add_label"]
SUPPORT_TOOLS = ["get_me", "list_issues", "get_issue"]


def tools_answer(names: list[str], request_id: object = 1) -> dict[str, object]:
    tools = [{"name": name, "description": f"the {name} tool", "inputSchema": {"type": "object"}} for name in names]
    return {"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools, "nextCursor": "page-2", "_meta": {"a": 1}}}


def names(answer: dict[str, object], key: str = "tools", field: str = "name") -> list[str]:
    return [entry[field] for entry in answer["result"][key]]  # type: ignore[index]


@pytest.fixture
def service(example_policy: PolicySet) -> ListService:
    return ListService(Authorizer(example_policy))


def test_a_tools_list_keeps_only_what_the_caller_may_call_in_order_with_every_other_field(service):
    delivered = deliver(service, jsonrpc("tools/list"), orjson.dumps(tools_answer(GITHUB_TOOLS)))
    answer = delivered.json()
    assert names(answer) == SUPPORT_TOOLS  # list_issues stays: its `when` may allow some call of it
    assert answer["id"] == 1 and answer["result"]["nextCursor"] == "page-2" and answer["result"]["_meta"] == {"a": 1}
    assert answer["result"]["tools"][0] == tools_answer(["get_me"])["result"]["tools"][0]  # every field kept
    assert "content-length" not in delivered.headers  # the body changed: Envoy would answer 500 with the old one


def test_prompts_resources_and_templates_are_filtered_by_name_uri_and_literal_uri_template(service):
    prompts = {"jsonrpc": "2.0", "id": 2, "result": {"prompts": [{"name": "triage"}, {"name": "escalate"}]}}
    resources = {
        "jsonrpc": "2.0",
        "id": 3,
        "result": {"resources": [{"uri": "repo://acme/readme", "name": "r"}, {"uri": "repo://other/x", "name": "o"}]},
    }
    templates = {
        "jsonrpc": "2.0",
        "id": 4,
        "result": {
            "resourceTemplates": [
                {"uriTemplate": "repo://acme/{path}", "name": "acme"},  # read literally, `repo://acme/*` matches
                {"uriTemplate": "repo://{org}/{path}", "name": "any"},
            ]
        },
    }
    assert names(deliver(service, jsonrpc("prompts/list", 2), orjson.dumps(prompts)).json(), "prompts") == ["triage"]
    kept = deliver(service, jsonrpc("resources/list", 3), orjson.dumps(resources)).json()
    assert names(kept, "resources", "uri") == ["repo://acme/readme"]
    kept = deliver(service, jsonrpc("resources/templates/list", 4), orjson.dumps(templates)).json()
    assert names(kept, "resourceTemplates", "uriTemplate") == ["repo://acme/{path}"]


def test_a_caller_with_a_rule_for_the_server_but_no_prompts_gets_an_empty_list(write_policies):
    policy = compile_directory(
        write_policies(
            targets="""
            apiVersion: mandate.dev/v1alpha1
            kind: Target
            metadata: {name: github}
            spec: {kind: mcp, hosts: [github-mcp.tools.svc.cluster.local]}
            """,
            profiles="""
            apiVersion: mandate.dev/v1alpha1
            kind: MissionProfile
            metadata: {name: support-agent}
            spec:
              principals: [spiffe://cluster.local/ns/support/sa/support-agent]
              mission: Asks GitHub who it is.
              mcp: [{server: github, tools: [get_me]}]
            """,
        )
    )
    prompts = {"jsonrpc": "2.0", "id": 1, "result": {"prompts": [{"name": "triage"}]}}
    delivered = deliver(ListService(Authorizer(policy)), jsonrpc("prompts/list"), orjson.dumps(prompts))
    assert delivered.json() == {"jsonrpc": "2.0", "id": 1, "result": {"prompts": []}}


SSE_ANSWER = (
    b": keep-alive comment\r\n\r\n"
    b"id: prime-1\r\nretry: 3000\r\ndata: \r\n\r\n"  # a priming event: an id, no data
    b'event: message\r\nid: ev-2\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress",\r\n'
    b'data: "params":{"progressToken":1,"progress":1}}\r\n\r\n'  # a notification, its data on two lines
    b"event: message\r\nid: ev-3\r\ndata: " + orjson.dumps(tools_answer(GITHUB_TOOLS)) + b"\r\n\r\n"
)


def sse_events(body: bytes) -> list[bytes]:
    return [event for event in body.replace(b"\r\n", b"\n").split(b"\n\n") if event]


def test_an_sse_answer_passes_every_other_event_as_it_came_and_rewrites_the_list_event(service):
    delivered = deliver(service, jsonrpc("tools/list"), SSE_ANSWER, "text/event-stream")
    events = delivered.body.split(b"\r\n\r\n")
    assert delivered.body.startswith(SSE_ANSWER[: SSE_ANSWER.index(b"event: message\r\nid: ev-3")])  # unchanged
    rewritten = events[3].split(b"\r\n")
    assert rewritten[:2] == [b"event: message", b"id: ev-3"]  # its other lines kept, with their CRLF
    assert names(orjson.loads(rewritten[2].removeprefix(b"data: "))) == SUPPORT_TOOLS


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_an_sse_answer_split_anywhere_delivers_what_it_delivers_whole(service, size):
    whole = deliver(service, jsonrpc("tools/list"), SSE_ANSWER, "text/event-stream").body
    assert deliver(service, jsonrpc("tools/list"), chunks_of(SSE_ANSWER, size), "text/event-stream").body == whole


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, len(SSE_ANSWER) - 1), max_size=40, unique=True).map(sorted))
def test_an_sse_answer_cut_at_any_points_delivers_what_it_delivers_whole(example_policy, cuts):
    service = ListService(Authorizer(example_policy))
    whole = deliver(service, jsonrpc("tools/list"), SSE_ANSWER, "text/event-stream").body
    pieces = [SSE_ANSWER[a:b] for a, b in zip([0, *cuts], [*cuts, len(SSE_ANSWER)], strict=True)]
    assert deliver(service, jsonrpc("tools/list"), pieces, "text/event-stream").body == whole


def test_an_sse_batch_answer_filters_each_list_event_and_passes_the_others(service):
    asked = [jsonrpc("tools/list", 1), jsonrpc("tools/call", 2, name="get_me")]
    call = {"jsonrpc": "2.0", "id": 2, "result": {"content": [], "tools": [{"name": "create_issue"}]}}
    answer = b"".join(b"data: " + orjson.dumps(m) + b"\n\n" for m in (call, tools_answer(GITHUB_TOOLS)))
    events = sse_events(deliver(service, orjson.dumps(asked), answer, "text/event-stream").body)
    assert orjson.loads(events[0].removeprefix(b"data: ")) == call
    assert names(orjson.loads(events[1].removeprefix(b"data: "))) == SUPPORT_TOOLS


def test_a_json_answer_split_at_every_byte_is_filtered_the_same(service):
    body = orjson.dumps(tools_answer(GITHUB_TOOLS))
    assert names(deliver(service, jsonrpc("tools/list"), chunks_of(body, 1)).json()) == SUPPORT_TOOLS


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_sse_line_ending_is_read_and_kept(service, newline):
    answer = b"data: " + orjson.dumps(tools_answer(GITHUB_TOOLS)) + newline + newline
    for split in (len(answer), 1):
        body = deliver(service, jsonrpc("tools/list"), chunks_of(answer, split), "text/event-stream").body
        assert body.endswith(newline + newline) and names(orjson.loads(body[6 : -2 * len(newline)])) == SUPPORT_TOOLS


def test_a_batch_answer_filters_only_the_list_answers_in_it(service):
    asked = [jsonrpc("tools/call", 1, name="get_me"), jsonrpc("tools/list", "two"), jsonrpc("prompts/list", 3)]
    call_result = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "tools": [{"name": "create_issue"}]}}
    prompts = {"jsonrpc": "2.0", "id": 3, "result": {"prompts": [{"name": "triage"}, {"name": "secret"}]}}
    answer = [call_result, tools_answer(GITHUB_TOOLS, "two"), prompts]
    delivered = deliver(service, orjson.dumps(asked), orjson.dumps(answer)).json()
    assert delivered[0] == call_result  # a tools/call result is no list, whatever its keys
    assert names(delivered[1]) == SUPPORT_TOOLS
    assert names(delivered[2], "prompts") == ["triage"]


def test_a_filtered_answer_is_what_mandate_read_so_a_duplicate_key_cannot_show_another_entry(service):
    """A reader that takes the first of two `name`s would see delete_repo where Mandate read get_me:
    the agent gets the entry written again from Mandate's reading, with one `name`."""
    answer = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_repo","name":"get_me"}]}}'
    delivered = deliver(service, jsonrpc("tools/list"), answer)
    assert delivered.body == b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_me"}]}}'


def test_an_answer_to_a_request_without_lists_passes_byte_for_byte(service):
    answer = b'{"jsonrpc":"2.0","id":1,  "result":{"tools":[{"name":"create_issue"}]}}'
    delivered = deliver(service, jsonrpc("tools/call", name="get_me"), answer)
    assert delivered.body == answer and "content-length" in delivered.headers


def test_a_gzip_answer_is_decoded_filtered_and_sent_plain(service):
    answer = gzip.compress(orjson.dumps(tools_answer(GITHUB_TOOLS)))
    delivered = deliver(service, jsonrpc("tools/list"), chunks_of(answer, 5), headers={"content-encoding": "gzip"})
    assert "content-encoding" not in delivered.headers
    assert names(delivered.json()) == SUPPORT_TOOLS


def test_a_gzip_bomb_is_refused_once_it_decodes_past_the_limit(example_policy):
    service = ListService(Authorizer(example_policy), limit=1 << 20)
    bomb = gzip.compress(b"data: " + b" " * (64 << 20))  # 64 MiB of spaces in ~64 KiB
    delivered = deliver(service, jsonrpc("tools/list"), bomb, "text/event-stream", headers={"content-encoding": "gzip"})
    error = orjson.loads(delivered.body.removeprefix(b"event: message\ndata: "))
    assert error["id"] == 1 and error["error"]["data"]["reason"] == "list_too_large"


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip", "zstd"])
def test_an_encoding_mandate_does_not_decode_is_refused_before_the_answer_leaves(service, encoding):
    answer = orjson.dumps(tools_answer(GITHUB_TOOLS))
    delivered = deliver(service, jsonrpc("tools/list", 9), answer, headers={"content-encoding": encoding})
    assert delivered.immediate and delivered.status == 502
    assert delivered.json()["id"] == 9 and delivered.json()["error"]["data"]["reason"] == "list_unreadable"


UNREADABLE = {
    "result is not an object": {"jsonrpc": "2.0", "id": 1, "result": ["get_me"]},
    "no tools list": {"jsonrpc": "2.0", "id": 1, "result": {"tools": {"name": "delete_repo"}}},
    "an entry without a name": {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"title": "delete_repo"}]}},
    "a name that is no string": {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": ["delete_repo"]}]}},
    "not JSON-RPC": {"tools": [{"name": "delete_repo"}]},
    "an answer to another id": tools_answer(["delete_repo"], request_id=2),
}


@pytest.mark.parametrize("shape", UNREADABLE, ids=list(UNREADABLE))
@pytest.mark.parametrize("content_type", ["application/json", "text/event-stream"])
def test_an_answer_of_an_unexpected_shape_becomes_an_error_that_names_no_entry(service, shape, content_type):
    body = orjson.dumps(UNREADABLE[shape])
    answer = body if content_type == "application/json" else b"data: " + body + b"\n\n"
    delivered = deliver(service, jsonrpc("tools/list"), answer, content_type)
    assert b"delete_repo" not in delivered.body
    error = orjson.loads(delivered.body.removeprefix(b"event: message\ndata: "))
    assert error["id"] == 1 and error["error"]["data"]["reason"] == "list_unreadable"


@pytest.mark.parametrize(
    "answer",
    [b"{not json", b"data: {not json}\n\n", b"event: other\ndata: {}\n\n"],
    ids=["json", "sse data", "sse event type"],
)
def test_an_answer_that_does_not_parse_becomes_an_error(service, answer):
    content_type = "application/json" if answer.startswith(b"{") else "text/event-stream"
    body = deliver(service, jsonrpc("tools/list"), answer, content_type).body
    assert orjson.loads(body.removeprefix(b"event: message\ndata: "))["error"]["data"]["reason"] == "list_unreadable"


def test_an_sse_answer_that_ends_before_its_list_event_ends_gives_the_agent_an_error(service):
    cut = b"data: " + orjson.dumps(tools_answer(GITHUB_TOOLS))  # no blank line: a client drops the event
    body = deliver(service, jsonrpc("tools/list"), chunks_of(cut, 10), "text/event-stream").body
    assert b"delete_repo" not in body
    assert orjson.loads(body.removeprefix(b"event: message\ndata: "))["error"]["data"]["reason"] == "list_unreadable"


def test_a_2xx_answer_neither_json_nor_sse_is_refused_and_an_http_error_passes(service):
    refused = deliver(service, jsonrpc("tools/list"), b"<html>delete_repo</html>", "text/html")
    assert refused.immediate and refused.status == 502 and b"delete_repo" not in refused.body
    passed = deliver(service, jsonrpc("tools/list"), b"Not Found", "text/plain", status=404)
    assert passed.body == b"Not Found" and passed.status == 404


def test_ten_thousand_tools_are_filtered_entry_by_entry(service):
    many = [f"tool_{i}" for i in range(10_000)] + SUPPORT_TOOLS
    delivered = deliver(service, jsonrpc("tools/list"), chunks_of(orjson.dumps(tools_answer(many)), 16384))
    assert names(delivered.json()) == SUPPORT_TOOLS


def test_an_answer_over_the_limit_is_refused(example_policy):
    service = ListService(Authorizer(example_policy), limit=4096)
    body = deliver(service, jsonrpc("tools/list"), chunks_of(orjson.dumps(tools_answer(GITHUB_TOOLS * 100)), 1000))
    assert body.json()["error"]["data"]["reason"] == "list_too_large"


# --- who asks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "reason", "status"),
    [
        (request_headers(caller=None), "no_identity", 401),
        (request_headers(caller="spiffe://cluster.local/ns/x/sa/nobody"), "unknown_caller", 403),
        (request_headers(caller="spiffe://elsewhere.org/ns/support/sa/support-agent"), "untrusted_trust_domain", 401),
        (request_headers(metadata={}), "list_context_missing", 502),
        (request_headers(metadata=authz_metadata(profile="billing-agent")), "list_caller_changed", 403),
        (request_headers(host="billing-agent.billing.svc.cluster.local"), "unknown_target", 403),
    ],
    ids=["no caller", "unknown caller", "untrusted trust domain", "no metadata", "another profile", "not mcp"],
)
def test_a_caller_mandate_cannot_tell_gets_an_error_with_its_request_id_and_the_server_is_not_asked(
    service, first, reason, status
):
    delivered = deliver(service, jsonrpc("tools/list", "abc"), orjson.dumps(tools_answer(GITHUB_TOOLS)), first=first)
    assert delivered.immediate and not delivered.upstream_reached and delivered.status == status
    assert delivered.headers["content-type"] == "application/json"
    assert delivered.json()["id"] == "abc" and delivered.json()["error"]["data"]["reason"] == reason


DELEGATION = {
    "targets": """
    apiVersion: mandate.dev/v1alpha1
    kind: Target
    metadata: {name: github}
    spec: {kind: mcp, hosts: [github-mcp.tools.svc.cluster.local]}
    """,
    "profiles": """
    apiVersion: mandate.dev/v1alpha1
    kind: MissionProfile
    metadata: {name: orchestrator}
    spec:
      principals: [spiffe://cluster.local/ns/agents/sa/orchestrator]
      mission: Plans.
      agents: [{agent: support-agent, grant: {mcp: [{server: github, tools: [get_me, get_issue]}]}}]
    ---
    apiVersion: mandate.dev/v1alpha1
    kind: MissionProfile
    metadata: {name: support-agent}
    spec:
      principals: [spiffe://cluster.local/ns/support/sa/support-agent]
      hosts: [support-agent.support.svc.cluster.local]
      mission: Answers tickets.
      mcp: [{server: github, tools: [get_me, list_issues, get_issue]}]
    """,
}


def test_a_delegate_lists_only_what_every_scope_along_its_chain_allows(write_policies):
    authorizer = Authorizer(compile_directory(write_policies(**DELEGATION)))
    now = time.time()
    minted = authorizer.chains.issue((Hop("orchestrator", ""), Hop("support-agent", SUPPORT)), (), now, now + 60)
    service = ListService(authorizer)
    answer = orjson.dumps(tools_answer(GITHUB_TOOLS))
    first = request_headers(metadata=authz_metadata(chain_id=minted.record.id))
    assert names(deliver(service, jsonrpc("tools/list"), answer, first=first).json()) == ["get_me", "get_issue"]
    assert names(deliver(service, jsonrpc("tools/list"), answer).json()) == SUPPORT_TOOLS  # on its own
    authorizer.chains.store.revoke(minted.record.id)
    revoked = deliver(service, jsonrpc("tools/list"), answer, first=first)
    assert revoked.immediate and revoked.json()["error"]["data"]["reason"] == "chain_revoked"


def test_a_dry_run_caller_sees_every_entry_and_the_removals_are_only_counted(example_policy):
    recorded = []
    service = ListService(Authorizer(example_policy), recorded.append)
    first = request_headers(caller=TRIAGE, metadata=authz_metadata(profile="triage-bot"))
    delivered = deliver(service, jsonrpc("tools/list"), orjson.dumps(tools_answer(GITHUB_TOOLS)), first=first)
    assert names(delivered.json()) == GITHUB_TOOLS
    (record,) = recorded
    assert (record.counts.kept, record.counts.removed, record.counts.would_remove) == (6, 0, 4)


def test_each_list_answer_is_recorded_with_its_caller_server_counts_and_decision_id(example_policy):
    recorded = []
    service = ListService(Authorizer(example_policy), recorded.append)
    asked = [jsonrpc("tools/list", 1), jsonrpc("prompts/list", 2)]
    prompts = {"jsonrpc": "2.0", "id": 2, "result": {"prompts": [{"name": "triage"}]}}
    deliver(service, orjson.dumps(asked), orjson.dumps([tools_answer(GITHUB_TOOLS), prompts]))
    assert [
        (r.method, r.result, r.caller, r.server, r.decision_id, r.counts.kept, r.counts.removed) for r in recorded
    ] == [
        ("tools/list", "filtered", SUPPORT, "github", "0123456789abcdef", 3, 3),
        ("prompts/list", "filtered", SUPPORT, "github", "0123456789abcdef", 1, 0),
    ]


def test_streams_past_the_bound_are_refused_and_a_closed_one_frees_its_place(example_policy):
    service = ListService(Authorizer(example_policy), streams=2)
    first, second = service.open(), service.open()
    assert first is not None and second is not None and service.open() is None
    service.close(first)
    assert service.open() is not None


def test_the_filter_header_is_removed_before_the_request_reaches_the_server(service):
    stream = service.open()
    reply = stream.answer(request_headers(headers={"x-mandate-filter": "mcp-list"}))
    assert list(reply.request_headers.response.header_mutation.remove_headers) == ["x-mandate-filter"]
    assert GITHUB_HOST  # the host the example target claims
