"""Load errors carry file and line (SPEC §3); a good set compiles into lookups."""

from __future__ import annotations

import pytest

from authz.cli import main
from authz.policy.compiler import compile_directory
from authz.policy.loader import PolicyLoadError

TARGET = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: github}
spec:
  kind: mcp
  hosts: [github-mcp.tools.svc.cluster.local]
"""

PROFILE = """
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: support-agent}
spec:
  principals: [spiffe://cluster.local/ns/support/sa/support-agent]
  mission: reads issues
  mcp:
    - server: github
      tools: [list_issues]
"""


def errors_of(directory) -> list[str]:
    with pytest.raises(PolicyLoadError) as caught:
        compile_directory(directory)
    return [str(error) for error in caught.value.errors]


def test_example_policies_compile(example_policy):
    assert {"support-agent", "billing-agent", "orchestrator", "triage-bot"} <= set(example_policy.profiles)
    assert example_policy.targets["github"].kind == "mcp"
    assert example_policy.targets["billing-agent"].kind == "agent"


def test_unknown_field_is_reported_with_its_line(write_policies):
    directory = write_policies(
        p=PROFILE.replace("  mission: reads issues", "  mission: reads issues\n  colour: blue"), t=TARGET
    )
    (error,) = errors_of(directory)
    assert error.endswith("p.yaml:7: unknown field 'spec.colour'"), error


def test_unknown_field_inside_a_rule(write_policies):
    directory = write_policies(
        p=PROFILE.replace("tools: [list_issues]", "tools: [list_issues]\n      tool: [x]"), t=TARGET
    )
    (error,) = errors_of(directory)
    assert "p.yaml:10: unknown field 'spec.mcp.0.tool'" in error


def test_a_field_spelled_in_snake_case_is_unknown(write_policies):
    """Keys are camelCase only: a second spelling of a field would be a second way to say it."""
    directory = write_policies(
        p=PROFILE.replace("  mission: reads issues", "  mission: reads issues\n  delegation: {max_depth: 2}"), t=TARGET
    )
    (error,) = errors_of(directory)
    assert "unknown field 'spec.delegation.max_depth'" in error


def test_duplicate_name_across_kinds(write_policies):
    clash = TARGET.replace("name: github", "name: support-agent")
    directory = write_policies(p=PROFILE, t=TARGET, u=clash)
    (error,) = errors_of(directory)
    assert "u.yaml:3: duplicate name 'support-agent'" in error
    assert "p.yaml:3)" in error


def test_two_profiles_claiming_one_spiffe_id(write_policies):
    twin = PROFILE.replace("name: support-agent", "name: twin")
    directory = write_policies(p=PROFILE, q=twin, t=TARGET)
    (error,) = errors_of(directory)
    assert "q.yaml:5:" in error and "also claimed by profile 'support-agent'" in error


def test_two_targets_claiming_one_host(write_policies):
    directory = write_policies(p=PROFILE, t=TARGET, u=TARGET.replace("name: github", "name: github2"))
    (error,) = errors_of(directory)
    assert "u.yaml:6:" in error and "also claimed by target 'github'" in error


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (("server: github", "server: gitlab"), "p.yaml:8: 'gitlab' is not a Target"),
        (("  mcp:\n", "  agents: [{agent: ghost}]\n  mcp:\n"), "p.yaml:7: agent 'ghost' is not a MissionProfile"),
        (
            ("  mcp:\n", "  egress: [{host: evil.example}]\n  mcp:\n"),
            "egress host 'evil.example' is not a host of any Target of kind egress",
        ),
        (("  mcp:\n", "  delegation: {acceptFrom: [nobody]}\n  mcp:\n"), "acceptFrom names unknown profile 'nobody'"),
    ],
)
def test_dangling_references(write_policies, replace, expected):
    directory = write_policies(p=PROFILE.replace(*replace), t=TARGET)
    assert any(expected in error for error in errors_of(directory)), errors_of(directory)


def test_cel_that_does_not_compile(write_policies):
    directory = write_policies(p=PROFILE + "      when: 'mcp.tool.name =='\n", t=TARGET)
    (error,) = errors_of(directory)
    assert "p.yaml:10: when: CEL does not compile" in error


def test_cel_with_an_unknown_variable(write_policies):
    directory = write_policies(p=PROFILE + "      when: 'mpc.tool.name == \"x\"'\n", t=TARGET)
    (error,) = errors_of(directory)
    assert "unknown variable(s) mpc" in error


def test_cel_comprehension_variables_are_allowed(write_policies):
    directory = write_policies(p=PROFILE + "      when: 'chain.hops.all(h, h != \"intern\")'\n", t=TARGET)
    assert compile_directory(directory).profiles["support-agent"]


def test_duplicate_yaml_key(write_policies):
    directory = write_policies(
        p=PROFILE.replace("  mission: reads issues", "  mission: reads issues\n  mission: twice"), t=TARGET
    )
    (error,) = errors_of(directory)
    assert "p.yaml:7: duplicate key 'mission'" in error


def test_wrong_kind_and_version(write_policies):
    directory = write_policies(a=TARGET.replace("kind: Target", "kind: Tool"), b=TARGET.replace("v1alpha1", "v9"))
    errors = errors_of(directory)
    assert any("a.yaml:2: kind must be one of" in e for e in errors), errors
    assert any("b.yaml:1: apiVersion must be" in e for e in errors), errors


def test_principal_outside_trust_domain_and_bad_wildcards(write_policies):
    directory = write_policies(
        p=PROFILE.replace("spiffe://cluster.local/ns/support/sa/support-agent", "spiffe://evil.org/ns/a/sa/b"),
        q=PROFILE.replace("name: support-agent", "name: q").replace("ns/support/sa/support-agent", "ns/*/sa/x"),
        t=TARGET,
    )
    errors = errors_of(directory)
    assert any("outside the configured trustDomains" in e for e in errors)
    assert any("'*' is only allowed as the whole service account" in e for e in errors)


def test_every_error_is_reported_not_just_the_first(write_policies):
    directory = write_policies(p=PROFILE + "      colour: red\n", t=TARGET + "  colour: red\n", u="kind: Nope\n")
    assert len(errors_of(directory)) == 3


def test_reference_errors_are_all_reported(write_policies):
    directory = write_policies(p=PROFILE.replace("server: github", "server: gitlab") + "      when: '('\n", t=TARGET)
    assert len(errors_of(directory)) == 2


def test_invalid_yaml_has_a_line(write_policies):
    directory = write_policies(p="apiVersion: mandate.dev/v1alpha1\nkind: [unclosed\n")
    (error,) = errors_of(directory)
    assert "p.yaml:" in error and "invalid YAML" in error


def test_configmap_layout_reads_only_the_visible_generation(tmp_path):
    """Kubernetes mounts keys as symlinks into ..data; hidden generations must be ignored."""
    generation = tmp_path / "..2026_11_22"
    generation.mkdir()
    (generation / "t.yaml").write_text(TARGET)
    (generation / "p.yaml").write_text(PROFILE)
    (tmp_path / "..data").symlink_to(generation.name)
    for name in ("t.yaml", "p.yaml"):
        (tmp_path / name).symlink_to(f"..data/{name}")
    assert set(compile_directory(tmp_path).profiles) == {"support-agent"}


def test_validate_command(write_policies, capsys):
    good = write_policies(p=PROFILE, t=TARGET)
    assert main(["validate", str(good)]) == 0
    assert "ok: 1 profiles" in capsys.readouterr().out
    (good / "p.yaml").write_text(PROFILE.lstrip().replace("server: github", "server: gitlab"))
    assert main(["validate", str(good)]) == 1
    assert "p.yaml:8: 'gitlab' is not a Target" in capsys.readouterr().err


def test_missing_directory(tmp_path):
    assert any("does not exist" in e for e in errors_of(tmp_path / "nope"))


def a2a_profile(block: str) -> str:
    """PROFILE declaring how it is served; `block` is the YAML under `a2a:`, from line 8 of the file."""
    return PROFILE.replace("  mission: reads issues\n", "  mission: reads issues\n  a2a:\n" + block)


def test_a2a_declaration_compiles_into_the_agents_router(write_policies):
    block = "    jsonrpcPath: /a2a\n    restPrefix: /api\n    cardPath: /agent/card.json\n"
    twin = a2a_profile(block).replace("name: support-agent", "name: twin").replace("sa/support-agent", "sa/twin")
    policy = compile_directory(write_policies(p=a2a_profile(block), q=twin, t=TARGET))
    router = policy.targets["support-agent"].a2a
    assert (router.jsonrpc_path, router.rest_prefix, router.card_path) == ("/a2a", "/api", "/agent/card.json")
    assert router is policy.targets["twin"].a2a  # one router per distinct declaration
    assert policy.targets["github"].a2a is None


def test_a2a_defaults_are_the_sdks(write_policies):
    router = compile_directory(write_policies(p=PROFILE, t=TARGET)).targets["support-agent"].a2a
    assert (router.jsonrpc_path, router.rest_prefix, router.card_path) == ("/", "", "/.well-known/agent-card.json")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("    jsonrpcPath: a2a\n", "p.yaml:8: spec.a2a.jsonrpcPath: Value error, jsonrpcPath must start with '/'"),
        (
            "    jsonrpcPath: /a2a/../rpc\n",
            "p.yaml:8: spec.a2a.jsonrpcPath: Value error, jsonrpcPath must not contain a '.' or '..'",
        ),
        ("    jsonrpcPath: /./a2a\n", "jsonrpcPath must not contain a '.' or '..'"),
        (
            "    jsonrpcPath: /a2a//rpc\n",
            "p.yaml:8: spec.a2a.jsonrpcPath: Value error, jsonrpcPath must not contain '//'",
        ),
        ("    jsonrpcPath: //\n", "jsonrpcPath must not contain '//'"),
        ("    jsonrpcPath: /a%32a\n", "jsonrpcPath may hold only letters, digits"),
        ("    jsonrpcPath: /{tenant}/rpc\n", "jsonrpcPath may hold only letters, digits"),
        ("    jsonrpcPath: /rpc?x=1\n", "jsonrpcPath may hold only letters, digits"),
        ("    jsonrpcPath: /a b\n", "jsonrpcPath may hold only letters, digits"),
        ("    jsonrpcPath: /caf\u00e9\n", "jsonrpcPath may hold only letters, digits"),
        ("    jsonrpcPath: 7\n", "spec.a2a.jsonrpcPath: Input should be a valid string"),
        ("    restPrefix: /\n", "p.yaml:8: spec.a2a.restPrefix: Value error, restPrefix must not end with '/'"),
        ("    restPrefix: /api/\n", "restPrefix must not end with '/'"),
        ("    restPrefix: api\n", "restPrefix must start with '/'"),
        ("    restPrefix: /api/..\n", "restPrefix must not contain a '.' or '..'"),
        ("    restPrefix: /a%2Fb\n", "restPrefix may hold only letters, digits"),
        (
            "    cardPath: /.well-known/./agent-card.json\n",
            "p.yaml:8: spec.a2a.cardPath: Value error, cardPath must not",
        ),
        ("    cardPath: card.json\n", "cardPath must start with '/'"),
        ("    jsonRpcPath: /a2a\n", "p.yaml:8: unknown field 'spec.a2a.jsonRpcPath'"),
        ("    tenants: [a]\n", "p.yaml:8: unknown field 'spec.a2a.tenants'"),
    ],
)
def test_bad_a2a_declarations(write_policies, block, expected):
    errors = errors_of(write_policies(p=a2a_profile(block), t=TARGET))
    assert len(errors) == 1 and expected in errors[0], errors


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        # Served by both the JSON-RPC endpoint and a REST route: which runs is the app's route order.
        (
            "    jsonrpcPath: /message:send\n",
            "p.yaml:8: a2a.jsonrpcPath '/message:send' is also where the HTTP+JSON routes",
        ),
        ("    jsonrpcPath: /t1/message:send\n", "serve POST SendMessage"),  # the `/{tenant}` mount
        ("    jsonrpcPath: /v1/tasks/x:cancel\n", "serve POST CancelTask"),  # v0.3's routes
        (
            "    jsonrpcPath: /api/message:stream\n    restPrefix: /api\n",
            "(restPrefix '/api') serve POST SendStreamingMessage",
        ),
        (
            "    cardPath: /tasks\n",
            "p.yaml:8: a2a.cardPath '/tasks' is also where the HTTP+JSON routes (restPrefix '') serve GET ListTasks",
        ),
        ("    cardPath: /api/extendedAgentCard\n    restPrefix: /api\n", "serve GET GetExtendedAgentCard"),
    ],
)
def test_a2a_paths_a_rest_route_also_serves(write_policies, block, expected):
    errors = errors_of(write_policies(p=a2a_profile(block), t=TARGET))
    assert len(errors) == 1 and expected in errors[0], errors


@pytest.mark.parametrize(
    "block",
    [
        "    jsonrpcPath: /tasks/x\n",  # a GET route: a POST there is the JSON-RPC endpoint's whatever the order
        "    jsonrpcPath: /rpc/\n",
        "    restPrefix: ''\n",  # the SDK's own default, written out
        "    jsonrpcPath: /.well-known/agent-card.json\n",  # the card is GET, the endpoint POST
        "    restPrefix: /t:x/v1\n    cardPath: /v1/card.json\n",
    ],
)
def test_good_a2a_declarations(write_policies, block):
    assert compile_directory(write_policies(p=a2a_profile(block), t=TARGET)).targets["support-agent"].a2a


def test_a_grant_declares_no_a2a_serving(write_policies):
    profile = PROFILE + "  agents:\n    - agent: support-agent\n      grant: {a2a: {jsonrpcPath: /a2a}}\n"
    (error,) = errors_of(write_policies(p=profile, t=TARGET))
    assert "unknown field 'spec.agents.0.grant.a2a'" in error
