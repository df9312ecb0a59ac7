"""ResponseTemplates: the bytes `mandate serve` sends are the CheckResponse build_response makes."""

from __future__ import annotations

import dataclasses
import json
import os

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.check.decision import Decision, Verdict
from authz.check.response import build_response
from authz.check.templates import ResponseTemplates
from authz.reasons import BAD_REQUEST, FORBIDDEN, UNAUTHENTICATED

CHAIN_HEADER = "x-delegation-chain"
text = st.text(max_size=40)
json_ids = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), text)


def decision_id() -> str:
    return os.urandom(8).hex()


def token() -> str:
    return f"{os.urandom(18).hex()}.{os.urandom(32).hex()[:43]}"


@st.composite
def decisions(draw: st.DrawFn) -> Decision:
    """Any decision build_response may be handed: allowed or not, dry-run, chained, minting, JSON-RPC."""
    allowed = draw(st.booleans())
    verdict = Verdict(
        allowed,
        draw(st.sampled_from(["allowed", "tool_not_allowed", "invalid_json", "chain_forged"])),
        draw(text),
        draw(st.sampled_from([200, BAD_REQUEST, UNAUTHENTICATED, FORBIDDEN])),
        draw(text),
        draw(text),
    )
    minted = draw(st.booleans())
    return Decision(
        decision_id(),
        verdict,
        caller=draw(text),
        profile=draw(text),
        target=draw(text),
        protocol="mcp",
        dry_run=draw(st.booleans()),
        chain_id=draw(text),
        hops=tuple(draw(st.lists(text, max_size=3))),
        minted_token=token() if minted else "",
        minted_chain_id=os.urandom(18).hex() if minted else "",
        strip_chain_header=draw(st.booleans()),
        filter_lists=draw(st.booleans()),
        jsonrpc_ids=draw(st.none() | st.tuples(json_ids) | st.lists(json_ids, max_size=3).map(tuple)),
    )


def again(decision: Decision, **changes: str) -> Decision:
    """The same decision for another request: its own id and, when it mints, its own token and chain."""
    fresh = {"id": decision_id()}
    if decision.minted_token:
        fresh |= {"minted_token": token(), "minted_chain_id": os.urandom(18).hex()}
    return Decision(
        **{**{name: getattr(decision, name) for name in Decision.__dataclass_fields__}, **fresh, **changes}  # type: ignore[arg-type]
    )


@settings(max_examples=300, deadline=None)
@given(decisions())
def test_rendered_bytes_are_the_built_response_for_the_first_decision_of_a_shape_and_every_later_one(
    decision: Decision,
) -> None:
    templates = ResponseTemplates(CHAIN_HEADER)
    for each in (decision, again(decision), again(decision)):
        assert CheckResponse.FromString(templates.render(each)) == build_response(each, CHAIN_HEADER)


@settings(max_examples=200, deadline=None)
@given(decisions(), decisions())
def test_a_decision_differing_in_any_one_field_gets_its_own_response(decision: Decision, other: Decision) -> None:
    """Whatever the response shows must be part of the shape a template is kept under."""
    templates = ResponseTemplates(CHAIN_HEADER)
    templates.render(decision)
    variants = [
        again(decision, **{name: getattr(other, name)})
        for name in (
            "caller",
            "profile",
            "dry_run",
            "chain_id",
            "hops",
            "strip_chain_header",
            "filter_lists",
            "jsonrpc_ids",
        )
    ]
    variants += [
        again(decision, verdict=dataclasses.replace(decision.verdict, **{name: getattr(other.verdict, name)}))
        for name in ("allowed", "reason", "message", "status", "rule", "hop")
    ]
    for variant in variants:
        assert CheckResponse.FromString(templates.render(variant)) == build_response(variant, CHAIN_HEADER)


def test_text_in_the_response_that_looks_like_a_decision_id_is_not_replaced() -> None:
    """The cut is at random stand-ins, not at the id: a message quoting a former id stays as it was."""
    templates = ResponseTemplates(CHAIN_HEADER)
    first = Decision(decision_id(), Verdict(False, "tool_not_allowed", "", FORBIDDEN), caller="spiffe://td/a")
    quoting = Verdict(False, "tool_not_allowed", f"the tool echoed {first.id}", FORBIDDEN)
    templates.render(first)
    for decision in (
        Decision(first.id, quoting, caller="spiffe://td/a"),
        again(Decision(first.id, quoting, caller="spiffe://td/a")),
    ):
        response = CheckResponse.FromString(templates.render(decision))
        assert response == build_response(decision, CHAIN_HEADER)
        assert f"the tool echoed {first.id}" in response.denied_response.body


def test_a_value_of_another_length_is_built_afresh_not_spliced() -> None:
    templates = ResponseTemplates(CHAIN_HEADER)
    decision = Decision(decision_id(), Verdict(True, "allowed", rule="a.mcp[0]"), caller="spiffe://td/a", profile="a")
    templates.render(decision)
    longer = again(decision, id=decision_id() + "ff")
    assert CheckResponse.FromString(templates.render(longer)) == build_response(longer, CHAIN_HEADER)


def test_the_templates_kept_stay_bounded() -> None:
    templates = ResponseTemplates(CHAIN_HEADER, entries=4)
    for index in range(10):
        decision = Decision(decision_id(), Verdict(True, "allowed", rule=f"a.mcp[{index}]"), caller="spiffe://td/a")
        assert CheckResponse.FromString(templates.render(decision)) == build_response(decision, CHAIN_HEADER)
        assert len(templates._templates) <= 4


def test_denies_share_one_template_whatever_their_body_and_keep_no_body():
    """Red-team finding 4: a deny body echoes the request's id, as long as the client makes it.
    Templates keyed on its length compiled a regular expression as long as the body (seconds of
    CPU for a 1 MB id) and kept a copy per length. The body now follows the template as a second
    `denied_response`, which protobuf merges: one template per shape, nothing kept per body."""
    templates = ResponseTemplates(CHAIN_HEADER)
    verdict = Verdict(
        False, "tool_not_allowed", "tool delete_repo is not in mission reader", FORBIDDEN, "reader.mcp[0]"
    )
    for request_id in (*range(100, 1000, 7), "req-abc", "x" * 1_000_000, "y" * 1_000_001):
        decision = Decision(decision_id(), verdict, caller="spiffe://td/a", profile="reader", jsonrpc_ids=(request_id,))
        response = CheckResponse.FromString(templates.render(decision))
        assert response == build_response(decision, CHAIN_HEADER)
        assert f'"id":{json.dumps(request_id)}' in response.denied_response.body
    assert len(templates._templates) == 1 and templates._templates.cost < 2_000


def test_the_templates_kept_stay_bounded_in_bytes() -> None:
    """Allows echo the caller's SPIFFE ID (up to 2 KiB): the templates are bounded in bytes too."""
    templates = ResponseTemplates(CHAIN_HEADER, max_bytes=20_000)
    for index in range(50):
        caller = f"spiffe://td/{'a' * 1500}{index}"
        decision = Decision(decision_id(), Verdict(True, "allowed", rule="a.mcp[0]"), caller=caller, profile="a")
        assert CheckResponse.FromString(templates.render(decision)) == build_response(decision, CHAIN_HEADER)
        assert templates._templates.cost <= 20_000
    assert 0 < len(templates._templates) < 50


def test_a_value_too_short_for_a_stand_in_is_never_spliced_into_a_later_response() -> None:
    templates = ResponseTemplates(CHAIN_HEADER)
    verdict = Verdict(True, "allowed", rule="a.mcp[0]")
    for short_id in ("ab12", "cd34"):
        decision = Decision(short_id, verdict, caller="spiffe://td/a", profile="a")
        assert CheckResponse.FromString(templates.render(decision)) == build_response(decision, CHAIN_HEADER)


def test_an_allow_that_hands_on_no_token_is_spliced_not_rebuilt() -> None:
    """Most allows mint nothing: their empty token and chain id must not send every allow to
    build_response (that regression tripled an allowed decision's cost, and no bytes showed it)."""
    templates = ResponseTemplates(CHAIN_HEADER)
    decision = Decision(decision_id(), Verdict(True, "allowed", rule="a.mcp[0]"), caller="spiffe://td/a", profile="a")
    assert CheckResponse.FromString(templates.render(decision)) == build_response(decision, CHAIN_HEADER)
    (template,) = templates._templates._values.values()
    assert template.lengths == (16, 0, 0)
