"""loadtest/stream.py, the distinct traffic SPEC §8 measures Mandate on: every request of the
whole default stream carries the verdict an in-process Authorizer gives it, the mix is what the
benchmark says it is, and the same seed gives the same bytes."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.check.pipeline import Authorizer
from authz.policy.compiler import compile_directory
from loadtest.stream import DEFAULT_COUNT, Scenario, Stream, Tokens, check, generate, mint_tokens, read_frames, write
from tests.harness.example_policies import REPO

FAKE_TOKENS = Tokens("t1", "t2", "t3")


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return Authorizer(compile_directory(str(REPO / "policies")))


def body_of(payload: bytes) -> dict:
    raw = CheckRequest.FromString(payload).attributes.request.http.raw_body
    return orjson.loads(raw) if raw else {}


def test_every_request_of_the_whole_stream_gets_the_verdict_it_expects(authorizer: Authorizer) -> None:
    """All 40,000, chained calls carrying tokens this Authorizer minted: allow or deny and the reason."""
    stream = generate(tokens=mint_tokens(authorizer.check_bytes))
    assert len(stream.payloads) == DEFAULT_COUNT
    assert check(authorizer.check_bytes, stream) == []


def test_about_a_quarter_is_denied_and_every_scenario_and_kind_is_sent() -> None:
    stream = generate(8_000, tokens=FAKE_TOKENS)
    shares = stream.shares()
    assert 0.2 <= shares["denied"] <= 0.3
    assert {"mcp", "mcp-plumbing", "a2a", "chained", "egress", "http", "identity"} <= shares.keys()
    assert set(stream.index) == set(range(len(stream.scenarios)))


def test_no_two_requests_are_the_same_bytes_and_ids_and_arguments_vary() -> None:
    stream = generate(4_000, tokens=FAKE_TOKENS)
    assert len(set(stream.payloads)) == len(stream.payloads)
    calls = [body_of(p) for p in stream.payloads]
    repos = Counter(
        call["params"]["arguments"]["repo"]
        for call in calls
        if call.get("method") == "tools/call" and "repo" in call["params"]["arguments"]
    )
    # what a `when` sees: many values, some far more often than others (as an agent's repeat)
    assert len(repos) > 10 and repos.most_common(1)[0][1] > 10 * repos.most_common()[-1][1]
    plumbing = [call for call in calls if call.get("method") in ("initialize", "tools/list", "ping")]
    assert len({(call["method"], call["id"]) for call in plumbing}) > len(plumbing) / 10
    messages = {call["params"]["message"]["messageId"] for call in calls if "message" in call.get("params", {})}
    assert len(messages) > 100


def test_the_same_seed_gives_the_same_bytes_another_seed_others() -> None:
    first, again, other = generate(500, seed=5), generate(500, seed=5), generate(500, seed=6)
    assert first.payloads == again.payloads and first.index == again.index
    assert first.payloads != other.payloads


def test_without_tokens_there_are_no_chained_calls() -> None:
    stream = generate(2_000)
    assert "chained" not in stream.shares()
    assert not any(s.needs_token for s in stream.scenarios)


def test_the_files_hold_the_frames_and_each_request_s_expectation(tmp_path: Path) -> None:
    stream = generate(300, tokens=FAKE_TOKENS)
    frames = write(stream, tmp_path / "stream")
    assert read_frames(frames) == stream.payloads
    data = frames.read_bytes()
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == len(stream.payloads[0])
    meta = json.loads((tmp_path / "stream.json").read_text())
    assert meta["count"] == 300 and meta["index"] == stream.index
    expected = [(s["allow"], s["reason"]) for s in meta["scenarios"]]
    assert [expected[i] for i in meta["index"]] == [stream.expected(p) for p in range(300)]


def test_a_cut_frame_is_refused(tmp_path: Path) -> None:
    frames = write(generate(3), tmp_path / "stream")
    frames.write_bytes(frames.read_bytes()[:-1])
    with pytest.raises(ValueError, match="cut short"):
        read_frames(frames)


def test_a_wrong_verdict_is_reported_with_the_request(authorizer: Authorizer) -> None:
    stream = generate(50, tokens=mint_tokens(authorizer.check_bytes))
    flipped = Stream(stream.payloads, stream.index, tuple(_flip(s) for s in stream.scenarios), stream.seed)
    problems = check(authorizer.check_bytes, flipped)
    assert len(problems) == 50 and problems[0].startswith("#0 ")


def _flip(scenario: Scenario) -> Scenario:
    return replace(scenario, expect_allow=not scenario.expect_allow)
