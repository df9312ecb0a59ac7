"""`when` conditions: the request-path engine agrees with cel-python where both answer."""

from __future__ import annotations

import cel
import celpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.policy.conditions import Condition, Results

EXPRESSIONS = [
    'mcp.tool.name == "list_issues"',
    'mcp.tool.arguments.repo.startsWith("acme/")',
    'mcp.tool.arguments.repo.endsWith("/web") || mcp.tool.arguments.count > 3',
    "size(chain.hops) <= 2 && chain.depth < 3",
    'chain.hops.all(h, h != "intern")',
    'chain.hops.exists(h, h == "orchestrator")',
    'source.identity.namespace in ["support", "billing"]',
    'request.method == "POST" && request.path.startsWith("/mcp")',
    'has(mcp.tool.arguments.repo) && mcp.tool.arguments.repo.matches("^acme/[a-z]+$")',
    '!(a2a.method in ["CancelTask"]) && a2a.agent != ""',
    "mcp.tool.arguments.count * 2 >= 10",
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
    '"a" + "b" in request.headers || "x-" + "tenant" in request.headers',
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
        "source": {
            "principal": "spiffe://cluster.local/ns/x/sa/y",
            "identity": {"trustDomain": "cluster.local", "namespace": draw(NAMES), "serviceAccount": "y"},
        },
        "request": {
            "method": draw(st.sampled_from(["GET", "POST"])),
            "path": draw(st.sampled_from(["/mcp", "/x"])),
            "host": "h",
            "headers": draw(st.dictionaries(st.sampled_from(["a", "x-tenant", "b", "ab"]), NAMES, max_size=3)),
        },
        "mcp": {
            "method": "tools/call",
            "server": "github",
            "tool": {"name": draw(NAMES | st.just("list_issues")), "arguments": arguments},
            "resource": {"uri": ""},
            "prompt": {"name": ""},
        },
        "a2a": {
            "method": draw(st.sampled_from(["", "SendMessage", "CancelTask"])),
            "agent": draw(st.sampled_from(["", "billing-agent"])),
        },
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
        "source": {
            "principal": "p",
            "identity": {"trustDomain": "cluster.local", "namespace": "support", "serviceAccount": "s"},
        },
        "request": {"method": "POST", "path": "/mcp", "host": "h", "headers": {}},
        "mcp": {
            "method": "tools/call",
            "server": "github",
            "tool": {"name": "list_issues", "arguments": {"repo": "acme/web", "count": 7}},
            "resource": {"uri": ""},
            "prompt": {"name": ""},
        },
        "a2a": {"method": "SendMessage", "agent": "billing-agent"},
        "chain": {"depth": 2, "root": "orchestrator", "hops": ["orchestrator", "support"]},
    }
    for source in EXPRESSIONS:
        assert fast(source, sample) is not None and fast(source, sample) == reference(source, sample), source


def _outcome(evaluate, *arguments) -> object:
    try:
        result = evaluate(*arguments)
    except Exception:  # noqa: BLE001 - any error, compared as such
        return "error"
    return result if isinstance(result, bool) else "error"


_whole = {source: cel.compile(source) for source in EXPRESSIONS}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(EXPRESSIONS), activations())
def test_passing_only_what_an_expression_reads_changes_nothing(source, activation):
    """Same engine, whole activation against the cut-down one: same value, or both an error."""
    assert _outcome(_fast[source].holds, activation) == _outcome(_whole[source].execute, activation), (
        source,
        activation,
    )


# --- remembered answers (conditions.Results) -----------------------------------------------

TRICKY = st.sampled_from([0, 1, -1, 0.0, -0.0, 1.0, True, False, None, "1", "", "true", [1], {"1": 1}, 2**63, 1e300])


@st.composite
def tricky_activations(draw) -> dict:
    activation = draw(activations())
    for key in draw(st.lists(st.sampled_from(["repo", "count", "x"]), max_size=3)):
        activation["mcp"]["tool"]["arguments"][key] = draw(TRICKY)
    return activation


TRICKY_EXPRESSIONS = [
    *EXPRESSIONS,
    "mcp.tool.arguments.x == 1",
    "mcp.tool.arguments.x == 1.0",
    "mcp.tool.arguments.x == true",
    'string(mcp.tool.arguments.x) == "-0"',
    "1.0 / mcp.tool.arguments.x < 0.0",
    "type(mcp.tool.arguments.x) == type(1)",
    "has(mcp.tool.arguments.x) && mcp.tool.arguments.x == null",
    "size(mcp.tool.arguments) == 2",
]
_shared_results = Results(entries=64)  # small, so it also starts afresh under the test
_remembering = {source: Condition(source, _shared_results) for source in TRICKY_EXPRESSIONS}
_forgetting = {source: Condition(source) for source in TRICKY_EXPRESSIONS}


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TRICKY_EXPRESSIONS), tricky_activations()), min_size=1, max_size=6))
def test_a_remembered_answer_is_the_answer(calls):
    """Any sequence of evaluations answers exactly as evaluating each afresh: no two
    activations that CEL tells apart (1, 1.0 and true; 0.0 and -0.0; null and absent) share an answer."""
    for source, activation in calls:
        assert _outcome(_remembering[source].holds, activation) == _outcome(_forgetting[source].holds, activation), (
            source,
            activation,
        )


def test_values_cel_tells_apart_are_never_conflated():
    results = Results()
    cases = [
        ('string(mcp.tool.arguments.x) == "0"', [0.0, -0.0, 0, False]),
        ("mcp.tool.arguments.x == 1", [1, 1.0, True, "1"]),
        ("has(mcp.tool.arguments.x)", [None, ...]),
    ]
    for source, values in cases:
        remembering, fresh = Condition(source, results), Condition(source)
        for value in values * 2:  # the second pass is answered from memory
            arguments = {} if value is ... else {"x": value}
            activation = {"mcp": {"tool": {"arguments": arguments}}}
            assert _outcome(remembering.holds, activation) == _outcome(fresh.holds, activation), (source, value)


def test_errors_and_large_activations_are_evaluated_every_time():
    results = Results()
    condition = Condition("10 / mcp.tool.arguments.count > 1", results)
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):  # CEL division by zero, which denies
            condition.holds({"mcp": {"tool": {"arguments": {"count": 0}}}})
    big = Condition('mcp.tool.arguments.repo.startsWith("a")', results)
    assert big.holds({"mcp": {"tool": {"arguments": {"repo": "a" * 10_000}}}}) is True
    assert big.holds({"mcp": {"tool": {"arguments": {"repo": "b" * 10_000}}}}) is False
    assert results.get((big, ("anything",))) is None and len(results._answers) == 0


def test_remembered_answers_stay_bounded():
    results = Results(entries=8)
    condition = Condition("mcp.tool.arguments.count > 3", results)
    for count in range(100):
        assert condition.holds({"mcp": {"tool": {"arguments": {"count": count}}}}) is (count > 3)
    assert len(results._answers) <= 8


def test_large_lists_and_big_integers_are_evaluated_never_kept():
    """Red-team finding 5: the budget counted only text, so a 1 MiB list of integers was kept
    whole (~12 MB per request). Every value now costs a unit, an integer one per 64 bits."""
    results = Results()
    condition = Condition("size(mcp.tool.arguments.xs) > 0", results)
    for start in range(20):
        assert condition.holds({"mcp": {"tool": {"arguments": {"xs": list(range(start, start + 100_000))}}}}) is True
    huge = Condition("mcp.tool.arguments.n > 0", results)
    with pytest.raises(ValueError):  # CEL has no such integer: a `when` error, which denies
        huge.holds({"mcp": {"tool": {"arguments": {"n": 1 << 40_000}}}})
    assert len(results) == 0 and results.units == 0


def test_what_is_kept_stays_within_its_units():
    results = Results(units=2_000)
    condition = Condition("size(mcp.tool.arguments.tags) < 100", results)
    for index in range(200):
        tags = [f"{index}-{position}" for position in range(20)]
        assert condition.holds({"mcp": {"tool": {"arguments": {"tags": tags}}}}) is True
        assert results.units <= 2_000
    assert 0 < len(results) < 200
