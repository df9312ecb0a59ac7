"""`mandate explain` on chained requests: the same pipeline as serve, plus each hop's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.cli import main
from authz.explain import RequestFileError, describe, explain, read_request_file, render_text
from authz.policy.compiler import compile_directory
from authz.reasons import USER_NOT_ALLOWED, USER_REQUIRED
from tests.harness.example_policies import EXAMPLES, REPO
from tests.harness.users import ISSUER, USER_PROFILES, Idp, users_settings


def report_for(example: str) -> dict:
    return report_for_path(REPO / "examples" / example)


def report_for_path(path: Path) -> dict:
    return explain(compile_directory(EXAMPLES), read_request_file(str(path)))


def test_chained_request_names_the_refusing_hop_and_every_hops_verdict() -> None:
    report = report_for("refund-for-support.yaml")
    assert (report["decision"], report["reason"], report["refused_by_hop"]) == (
        "deny",
        "tool_not_allowed",
        "support-agent",
    )
    assert report["chain"] == ["support-agent", "billing-agent"]
    assert [(hop["hop"], hop["allows"]) for hop in report["hops"]] == [
        ("billing-agent", True),
        ("support-agent", False),
    ]
    assert report["hops"][1]["scope"] == "its grant to 'billing-agent'"
    text = render_text(report)
    assert "support-agent: its grant to 'billing-agent': REFUSES (tool_not_allowed)" in text


def test_a_grant_lets_the_delegate_act_within_it(tmp_path: Path) -> None:
    request = (
        (REPO / "examples" / "refund-for-support.yaml").read_text().replace("name: refund", "name: lookup_invoice")
    )
    path = tmp_path / "lookup.yaml"
    path.write_text(request)
    report = report_for_path(path)
    assert report["decision"] == "allow"
    assert all(hop["allows"] for hop in report["hops"])


def test_a2a_call_to_an_agent_shows_the_chain_it_mints() -> None:
    report = report_for("ask-billing.yaml")
    assert report["decision"] == "allow"
    assert report["minted_chain"] == ["support-agent", "billing-agent"]
    assert "mints:    support-agent -> billing-agent" in render_text(report)


def test_a_chain_whose_last_hop_is_not_the_caller_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stolen.yaml"
    path.write_text(
        (REPO / "examples" / "refund-for-support.yaml")
        .read_text()
        .replace("chain: [support-agent, billing-agent]", "chain: [billing-agent, support-agent]")
    )
    assert report_for_path(path)["reason"] == "chain_not_held"


def test_chain_field_must_be_a_list_of_names(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("source: spiffe://cluster.local/ns/a/sa/b\nchain: support-agent\n")
    with pytest.raises(RequestFileError, match="chain must be a list"):
        read_request_file(str(path))


def test_check_refuses_a_described_chain(capsys: pytest.CaptureFixture[str]) -> None:
    """Against a server the token is the chain; `chain:` would silently be ignored."""
    assert (
        main(["check", "--server", "127.0.0.1:1", "--request", str(REPO / "examples" / "refund-for-support.yaml")]) == 2
    )
    assert "`chain` is for explain" in capsys.readouterr().err


def users_set(tmp_path: Path) -> Path:
    keys = Idp().write_jwks(tmp_path / "jwks.json")
    (tmp_path / "policy.yaml").write_text(users_settings(keys) + "---" + USER_PROFILES)
    return tmp_path


@pytest.mark.parametrize("chain", [None, ["orchestrator", "billing-agent"]])
def test_a_described_user_is_who_the_request_acts_for(tmp_path: Path, chain) -> None:
    policy = compile_directory(users_set(tmp_path))
    request = {
        "source": "spiffe://cluster.local/ns/billing-agent/sa/billing-agent",
        "host": "billing-db.local",
        "path": "/mcp",
        "body": {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "balance"}},
        **({"chain": chain} if chain else {}),
    }
    alice = {"iss": ISSUER, "sub": "alice", "groups": ["finance"]}
    report = explain(policy, describe({**request, "user": alice}, "case"))
    assert (report["decision"], report["user"]) == ("allow", {"sub": "alice", "iss": ISSUER})
    assert "user:     alice (https://idp.example.com)" in render_text(report)
    assert explain(policy, describe({**request, "user": {**alice, "sub": "bob"}}, "case"))["reason"] == USER_NOT_ALLOWED
    assert explain(policy, describe(request, "case"))["reason"] == USER_REQUIRED


def test_a_described_user_needs_iss_and_sub() -> None:
    with pytest.raises(RequestFileError, match="user must be"):
        describe({"source": "spiffe://cluster.local/ns/a/sa/b", "user": {"sub": "alice"}}, "case")
