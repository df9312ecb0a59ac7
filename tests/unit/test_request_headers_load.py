"""`requestHeaders` at load (SPEC §12): values parsed once, rules merged over their Target per header
name, and every mistake a load error with file:line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from authz.policy.loader import PolicyLoadError

TARGETS = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: tools}
spec:
  kind: mcp
  hosts: [tools.local]
  requestHeaders:
    set: {X-Caller: "{caller.principal}", x-team: shared}
    remove: [x-debug, x-trace-me]
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: openai}
spec:
  kind: egress
  hosts: [api.openai.com]
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: status}
spec: {kind: http, hosts: [status.local]}
"""

PROFILE = """
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: alice}
spec:
  mission: reads issues
  principals: [spiffe://cluster.local/ns/alice/sa/alice]
  mcp:
    - server: tools
      tools: [read]
      requestHeaders:
        set: {x-team: alice, x-debug: "on"}
        remove: [X-Caller]
    - server: tools
      tools: [write]
  egress:
    - host: api.openai.com
      requestHeaders:
        set: {authorization: "Bearer {secret:%(key)s}"}
  http:
    - target: status
      requestHeaders:
        set: {x-who: "{profile}/{caller.namespace}/{caller.serviceAccount}", x-id: "{decision_id}"}
"""


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "openai.key"
    path.write_text("sk-team-alice\n")
    return path


def load(write_policies: Callable[..., Path], profile: str = PROFILE, **values: str) -> PolicySet:
    return compile_directory(write_policies(targets=TARGETS, profile=profile % values))


def load_errors(write_policies: Callable[..., Path], profile: str, **values: str) -> list[str]:
    with pytest.raises(PolicyLoadError) as raised:
        load(write_policies, profile, **values)
    return [str(error) for error in raised.value.errors]


def shown(headers: object, **facts: str) -> dict[str, object]:
    """What explain shows of compiled requestHeaders, with every variable named by itself."""
    values = [facts.get(name, "{" + name + "}") for name in ("principal", "ns", "sa", "profile", "id", "sub")]
    return headers.shown(values)  # type: ignore[attr-defined]


def test_a_rule_wins_over_its_target_per_header_name(write_policies, key: Path) -> None:
    policy = load(write_policies, key=key)
    read_rule = policy.rule_headers["alice.mcp[0]"]
    assert shown(read_rule, principal="spiffe://cluster.local/ns/alice/sa/alice") == {
        "set": {"x-team": "alice", "x-debug": "on"},
        "remove": ["x-trace-me", "x-caller"],
    }


def test_a_rule_without_headers_of_its_own_gets_its_targets(write_policies, key: Path) -> None:
    policy = load(write_policies, key=key)
    tools = policy.targets["tools"]
    assert "alice.mcp[1]" not in policy.rule_headers
    assert policy.request_headers(tools, "alice.mcp[1]") is tools.request_headers
    assert shown(tools.request_headers, principal="P") == {
        "set": {"x-caller": "P", "x-team": "shared"},
        "remove": ["x-debug", "x-trace-me"],
    }


def test_a_request_no_rule_allowed_gets_its_targets_headers(write_policies, key: Path) -> None:
    """A dry-run profile's would_deny is let through: only the Target's headers apply to it."""
    policy = load(write_policies, key=key)
    assert policy.request_headers(policy.targets["tools"], "") is policy.targets["tools"].request_headers
    assert policy.request_headers(policy.targets["status"], "") is None


def test_secrets_show_as_placeholders_and_variables_as_their_values(write_policies, key: Path) -> None:
    policy = load(write_policies, key=key)
    egress = policy.rule_headers["alice.egress[0]"]
    assert shown(egress) == {"set": {"authorization": f"Bearer {{secret:{key}}}"}, "remove": []}
    http = policy.rule_headers["alice.http[0]"]
    assert shown(http, profile="alice", ns="alice", sa="alice", id="d1") == {
        "set": {"x-who": "alice/alice/alice", "x-id": "d1"},
        "remove": [],
    }


def test_the_set_holds_each_secret_file_once(write_policies, key: Path) -> None:
    policy = load(write_policies, key=key)
    assert list(policy.secrets.files) == [str(key)]
    assert policy.secrets.files[str(key)].value == "sk-team-alice"


def test_literal_braces_are_doubled(write_policies, key: Path) -> None:
    profile = PROFILE.replace('"{profile}/', '"{{{profile}}}/{{x}}/')
    policy = load(write_policies, profile, key=key)
    assert shown(policy.rule_headers["alice.http[0]"], profile="alice", ns="n", sa="s")["set"] == {
        "x-who": "{alice}/{x}/n/s",
        "x-id": "{id}",
    }


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{caller.name}", "unknown variable '{caller.name}' (did you mean 'caller.namespace'"),
        ("{user.email}", "unknown variable '{user.email}'"),
        ("{secret:keys/openai}", "secret path 'keys/openai' must be absolute"),
        ("{secret:/nonexistent/openai.key}", "cannot read secret file /nonexistent/openai.key: No such file"),
        ("open {brace", "unmatched '{' at character 6 (write {{ for a literal one)"),
        ("close} brace", "unmatched '}'"),
        ("two\\nlines", "line break or control character"),
    ],
)
def test_a_bad_value_is_a_load_error_at_its_line(write_policies, key: Path, value: str, message: str) -> None:
    profile = PROFILE.replace('"{decision_id}"', f'"{value}"')
    errors = load_errors(write_policies, profile, key=key)
    line = line_of(PROFILE.lstrip(), "x-id:")
    assert len(errors) == 1 and message in errors[0]
    assert errors[0].startswith(f"{write_policies()}/profile.yaml:{line}: header 'x-id': ")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("x-caller-identity", "is Mandate's own (the caller's verified SPIFFE ID)"),
        ("X-Delegation-Chain", "is Mandate's own (the chain header"),
        ("x-mandate-decision-id", "is Mandate's own (the decision id)"),
        ("x-mandate-filter", "is Mandate's own (it sends MCP list answers"),
        ("host", "it routes the request"),
        ("content-length", "it frames the request"),
        ("x-envoy-original-path", "x-envoy-* headers are Envoy's"),
        ("bad header", "is not a header name"),
    ],
)
@pytest.mark.parametrize("how", ["set", "remove"])
def test_headers_that_are_not_the_policys_are_load_errors_to_set_or_remove(
    write_policies, key: Path, header: str, message: str, how: str
) -> None:
    if how == "set":
        profile, needle = PROFILE.replace("x-debug: ", f"{header!r}: "), "x-debug:"
    else:
        profile, needle = PROFILE.replace("remove: [X-Caller]", f"remove: [{header!r}]"), "remove: [X-Caller]"
    errors = load_errors(write_policies, profile, key=key)
    assert len(errors) == 1 and message in errors[0]
    assert errors[0].startswith(f"{write_policies()}/profile.yaml:{line_of(PROFILE.lstrip(), needle)}:")


def test_the_chain_header_is_the_settings_one(write_policies, key: Path) -> None:
    settings = """
    apiVersion: mandate.dev/v1alpha1
    kind: Settings
    metadata: {name: default}
    spec: {chainHeader: x-my-chain}
    """
    profile = PROFILE.replace("x-debug: ", "x-my-chain: ")
    with pytest.raises(PolicyLoadError, match="header 'x-my-chain' is Mandate's own"):
        compile_directory(write_policies(a_settings=settings, targets=TARGETS, profile=profile % {"key": key}))
    allowed = PROFILE.replace("x-debug: ", "x-delegation-chain: ")
    compile_directory(write_policies(a_settings=settings, targets=TARGETS, profile=allowed % {"key": key}))


def test_a_header_set_twice_or_set_and_removed_is_a_load_error(write_policies, key: Path) -> None:
    twice = PROFILE.replace("x-team: alice,", "x-team: alice, X-Team: again,")
    assert any(
        "header 'X-Team' is set twice (also as 'x-team')" in error
        for error in load_errors(write_policies, twice, key=key)
    )
    both = PROFILE.replace("remove: [X-Caller]", "remove: [X-Debug]")
    assert any(
        "header 'X-Debug' is both set and removed" in error for error in load_errors(write_policies, both, key=key)
    )


# A profile that calls alice over A2A; each test adds what its rule says.
BOSS = """
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: boss}
spec:
  mission: delegates
  principals: [spiffe://cluster.local/ns/boss/sa/boss]
  agents:
    - agent: alice
"""


def test_headers_in_a_grant_are_a_load_error(write_policies, key: Path) -> None:
    granting = (
        PROFILE
        + BOSS
        + """      grant:
        mcp:
          - server: tools
            tools: [read]
            requestHeaders: {set: {x-from: boss}}
"""
    )
    errors = load_errors(write_policies, granting, key=key)
    assert len(errors) == 1 and "requestHeaders never apply in a grant" in errors[0]


def test_an_agents_rule_may_shape_its_a2a_requests(write_policies, key: Path) -> None:
    calling = (
        PROFILE
        + BOSS
        + """      requestHeaders: {set: {x-from: "{profile}"}}
"""
    )
    policy = load(write_policies, calling, key=key)
    assert shown(policy.rule_headers["boss.agents[0]"], profile="boss") == {"set": {"x-from": "boss"}, "remove": []}
