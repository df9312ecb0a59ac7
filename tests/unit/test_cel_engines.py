"""`when` conditions: the request-path engine agrees with cel-python where both answer."""

from __future__ import annotations

import cel
import celpy
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.policy.conditions import Condition

EXPRESSIONS = [
    'mcp.tool.name == "list_issues"',
    'mcp.tool.arguments.repo.startsWith("acme/")',
    'mcp.tool.arguments.repo.endsWith("/web") || mcp.tool.arguments.count > 3',
    'size(chain.hops) <= 2 && chain.depth < 3',
    'chain.hops.all(h, h != "intern")',
    'chain.hops.exists(h, h == "orchestrator")',
    'source.identity.namespace in ["support", "billing"]',
    'request.method == "POST" && request.path.startsWith("/mcp")',
    'has(mcp.tool.arguments.repo) && mcp.tool.arguments.repo.matches("^acme/[a-z]+$")',
    '!(a2a.method in ["CancelTask"]) && a2a.agent != ""',
    'mcp.tool.arguments.count * 2 >= 10',
    # only the fields an expression names are passed to the engine: index syntax, whole
    # roots and field-presence tests must still see everything they ask for
    'mcp["tool"]["name"] == "list_issues"',
    'has(mcp.resource) && mcp.resource.uri == "" && !has(mcp.nothing)',
    'size(chain) == 3 && chain.root != ""',
    'request.headers.size() == 0 && "mcp.tool" != mcp.tool.name',
    # deeper: only the leaves named are passed, so presence, whole uses and keys must survive
    'size(mcp.tool.arguments) == 1 && mcp.tool.arguments.repo == "acme/web"',
    'has(mcp.tool.arguments.count) ? mcp.tool.arguments.count > 2 : mcp.tool.arguments.repo != ""',
    '"x-tenant" in request.headers && request.headers["x-tenant"] == "acme/web"',
    '!("x-tenant" in request.headers) || request["headers"]["x-tenant"].startsWith("acme")',
    'request.headers.exists(k, k == "a") || request.headers.all(k, k.size() > 1)',
    '"support" in chain.hops && chain.hops[0] == chain.root',
    'mcp.tool.arguments == {"repo": "acme/web"} || mcp.tool == {"name": "x", "arguments": {}}',
]

NAMES = st.sampled_from(["support", "billing", "intern", "orchestrator", "acme/web", "acme/", "evil/x", "", "ACME/web"])


@st.composite
def activations(draw) -> dict:
    arguments = {}
    if draw(st.booleans()):
        arguments["repo"] = draw(NAMES | st.text(max_size=8))
    if draw(st.booleans()):
        arguments["count"] = draw(st.integers(-5, 20))
    hops = draw(st.lists(NAMES, min_size=1, max_size=4))
    return {
        "source": {"principal": "spiffe://cluster.local/ns/x/sa/y", "identity": {"trustDomain": "cluster.local", "namespace": draw(NAMES), "serviceAccount": "y"}},
        "request": {"method": draw(st.sampled_from(["GET", "POST"])), "path": draw(st.sampled_from(["/mcp", "/x"])), "host": "h",
                    "headers": draw(st.dictionaries(st.sampled_from(["a", "x-tenant", "b"]), NAMES, max_size=3))},
        "mcp": {"method": "tools/call", "server": "github", "tool": {"name": draw(NAMES | st.just("list_issues")), "arguments": arguments},
                "resource": {"uri": ""}, "prompt": {"name": ""}},
        "a2a": {"method": draw(st.sampled_from(["", "SendMessage", "CancelTask"])), "agent": draw(st.sampled_from(["", "billing-agent"]))},
        "chain": {"depth": len(hops), "root": hops[0], "hops": hops},
    }


_environment = celpy.Environment()
_reference = {source: _environment.program(_environment.compile(source)) for source in EXPRESSIONS}
_fast = {source: Condition(source) for source in EXPRESSIONS}


def reference(source: str, activation: dict):
    try:
        result = _reference[source].evaluate(celpy.json_to_cel(activation))
    except Exception:  # noqa: BLE001 - an error is "no value" for the comparison
        return None
    return bool(result) if isinstance(result, celpy.celtypes.BoolType) else None


def fast(source: str, activation: dict):
    try:
        return _fast[source].holds(activation)
    except Exception:  # noqa: BLE001
        return None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXPRESSIONS), activations())
def test_engines_agree_where_both_answer(source, activation):
    ours, theirs = fast(source, activation), reference(source, activation)
    if ours is not None and theirs is not None:
        assert ours == theirs, (source, activation)


def test_both_engines_answer_the_common_cases():
    """Guard against the property passing vacuously because one engine always errors."""
    sample = {
        "source": {"principal": "p", "identity": {"trustDomain": "cluster.local", "namespace": "support", "serviceAccount": "s"}},
        "request": {"method": "POST", "path": "/mcp", "host": "h", "headers": {}},
        "mcp": {"method": "tools/call", "server": "github", "tool": {"name": "list_issues", "arguments": {"repo": "acme/web", "count": 7}},
                "resource": {"uri": ""}, "prompt": {"name": ""}},
        "a2a": {"method": "SendMessage", "agent": "billing-agent"},
        "chain": {"depth": 2, "root": "orchestrator", "hops": ["orchestrator", "support"]},
    }
    for source in EXPRESSIONS:
        assert fast(source, sample) is not None and fast(source, sample) == reference(source, sample), source


def _outcome(evaluate) -> object:
    try:
        result = evaluate()
    except Exception:  # noqa: BLE001 - any error, compared as such
        return "error"
    return result if isinstance(result, bool) else "error"


_whole = {source: cel.compile(source) for source in EXPRESSIONS}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(EXPRESSIONS), activations())
def test_passing_only_what_an_expression_reads_changes_nothing(source, activation):
    """Same engine, whole activation against the cut-down one: same value, or both an error."""
    assert _outcome(lambda: _fast[source].holds(activation)) == _outcome(lambda: _whole[source].execute(activation)), (source, activation)
