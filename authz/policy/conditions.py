"""`when` conditions: CEL compiled once at load time, evaluated per request.

`common-expression-language` parses but does not type-check, so a misspelt root
(`mpc.tool.name`) would only fail at run time. We reject unknown roots at load time instead;
comprehension variables (`hops.exists(h, ...)`) are the only other names allowed.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import cel

from authz.bounded import Bounded

ROOTS = frozenset({"source", "request", "mcp", "a2a", "chain", "user"})
_COMPREHENSION_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_ROOT = re.compile(r"(?<![\w.])(" + "|".join(sorted(ROOTS)) + r")\b")
_LITERAL = r"(?:\"([^\"\\]*)\"|'([^'\\]*)')"
# One step down from a value: `.field` or `["key"]` with a plain string literal.
_STEP = re.compile(r"\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*" + _LITERAL + r"\s*\])")
_CALL = re.compile(r"\s*\(")
# `"x" in <path>` asks only for key x, when the literal is the whole left operand: nothing
# that binds tighter than `in` (`"a" + "x" in ...`, `y == "x" in ...`) may come before it.
_KEY_IN = re.compile(r"(?:^|[(\[{,?:]|&&|\|\|)\s*" + _LITERAL + r"\s+in\s*$")
_OPERAND_END = re.compile(r"\s*(?:$|\)|&&|\|\||\?|:|,|\]|\})")

# What an expression reads of the activation: for each name, None when the value is used
# whole, else the tree of the fields (or map keys) it selects from it.
Tree = dict[str, "Tree | None"]
REMEMBERED_RESULTS = 65_536  # answers kept per policy set
REMEMBERED_UNITS = 512  # an activation costing more than this is evaluated, never remembered
REMEMBERED_TOTAL = 4_194_304  # units kept per policy set (a unit is about 50 bytes: a value, or a character)


class Roots(Protocol):
    """The activation: a mapping from root name to value (decide.py builds each on demand)."""

    def __getitem__(self, name: str, /) -> Any: ...


class ConditionError(ValueError):
    pass


class Results:
    """What one policy set's `when`s answered, by the exact values each read (bounded).

    Sound because an answer is a function of the expression and the values passed alone:
    common-expression-language has no clock or randomness (no `now()`) and Mandate adds no
    functions. Values are keyed with their types (1, 1.0 and true differ; floats by their
    bits, so -0.0 is not 0.0); an error is never remembered, nor a large activation. What is
    kept is bounded in units (`_freeze`: one per value, one per character or byte of text), so
    a request of big lists or long strings is evaluated, never kept.
    Converting values into CEL is most of an evaluation, so a remembered answer saves it when
    the values repeat across requests the decision cache tells apart (the same repository,
    different issue numbers; ANALYSIS.md, "CEL").
    """

    def __init__(self, entries: int = REMEMBERED_RESULTS, units: int = REMEMBERED_TOTAL) -> None:
        self._answers: Bounded[tuple[object, object], bool] = Bounded(entries, units)

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def units(self) -> int:
        return self._answers.cost

    def get(self, key: tuple[object, object]) -> bool | None:
        return self._answers.get(key)

    def clear(self) -> None:
        self._answers.clear()

    def forget(self, count: int) -> int:
        """Drop up to `count` of the oldest answers and say how many are left: a replaced set's
        answers are let go a slice at a time (authz/serve/heap.py), not 65,536 in one pause."""
        for _ in range(count):
            oldest = self._answers.oldest()
            if oldest is None:
                break
            self._answers.pop(oldest[0])
        return len(self._answers)

    def put(self, key: tuple[object, object], answer: bool, units: int) -> None:
        self._answers.put(key, answer, units)


class Condition:
    __slots__ = ("_program", "_reads", "_results", "headers", "source")

    def __init__(self, source: str, results: Results | None = None) -> None:
        self.source = source
        self._results = results
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ConditionError(f"CEL does not compile: {_first_line(exc)}") from None
        bound = set(_COMPREHENSION_VARIABLE.findall(source))
        variables = set(self._program.variables())
        unknown = sorted(variables - ROOTS - bound)
        if unknown:
            raise ConditionError(
                f"CEL refers to unknown variable(s) {', '.join(unknown)}; available: {', '.join(sorted(ROOTS))}"
            )
        self._reads = _reads(source, tuple(sorted(variables & ROOTS)))
        self.headers = _headers(dict(self._reads))

    def holds(self, variables: Roots) -> bool:
        """True only for a boolean true; anything else, errors included, raises.

        Converting the activation into CEL values dominates evaluation, so only what the
        expression reads is passed (ANALYSIS.md, "CEL").
        """
        activation = {root: _project(variables[root], tree) for root, tree in self._reads}
        key, units = None, 0
        if self._results is not None and (frozen := _frozen(activation)) is not None:
            key, units = (self, frozen[0]), frozen[1]
            known = self._results.get(key)
            if known is not None:
                return known
        result = self._program.execute(activation)
        if result is not True and result is not False:
            raise ConditionError(f"`when` returned {type(result).__name__}, not bool")
        if key is not None:
            self._results.put(key, result, units)  # type: ignore[union-attr]  # key is set only with results
        return result


def _reads(source: str, roots: tuple[str, ...]) -> tuple[tuple[str, Tree | None], ...]:
    """For each root, what the expression reads of it, from the source text.

    Each mention of a root is followed down its `.field` / `["key"]` steps; where the steps
    stop (an operator, a call such as `.startsWith(` or `size(`, a computed index) the value
    there is used whole. A root mentioned inside a string literal only adds reads, which is
    harmless, and a root the scan does not find is passed whole: every doubt passes more.
    """
    found: Tree = {}
    for mention in _ROOT.finditer(source):
        root = mention.group(1)
        if root not in roots:
            continue
        path, position = [], mention.end()
        while (step := _STEP.match(source, position)) is not None:
            path.append(next(group for group in step.groups() if group is not None))
            position = step.end()
        if path and _CALL.match(source, position):
            path.pop()  # a method called on the value before it: that value is used whole
        elif (key := _KEY_IN.search(source, 0, mention.start())) is not None and _OPERAND_END.match(source, position):
            path.append(next(group for group in key.groups() if group is not None))
        _mark(found, root, path)
    return tuple((root, found.get(root)) for root in roots)


def _mark(tree: Tree, name: str, path: list[str]) -> None:
    for step in path:
        if name in tree and tree[name] is None:
            return  # already used whole
        tree = tree.setdefault(name, {})  # type: ignore[assignment]
        name = step
    tree[name] = None


def _project(value: Any, tree: Tree | None) -> Any:
    """`value` cut down to `tree`; a key the value lacks stays absent, so `has()` still tells."""
    if tree is None or not isinstance(value, dict):
        return value
    return {key: _project(value[key], below) for key, below in tree.items() if key in value}


def _frozen(activation: dict[str, Any]) -> tuple[object, int] | None:
    """A hashable, type-exact copy of `activation` and the units it costs; None when it holds
    a type not listed here or costs more than REMEMBERED_UNITS."""
    budget = [REMEMBERED_UNITS]
    try:
        frozen = _freeze(activation, budget)
    except _Unremembered:
        return None
    return frozen, REMEMBERED_UNITS - budget[0]


def _freeze(value: Any, budget: list[int]) -> object:
    """`budget` holds the units still allowed, shared by the whole recursion: each value costs
    one, text one more per character, an integer one per 8 bytes (a module-level function
    rather than a closure: a closure that calls itself is a reference cycle, which left one
    per request for the garbage collector to find)."""
    kind = type(value)
    budget[0] -= 1
    if budget[0] < 0:
        raise _Unremembered
    if kind is dict:
        return (dict, tuple((_freeze(key, budget), _freeze(item, budget)) for key, item in value.items()))
    if kind is list:
        return (list, tuple(_freeze(item, budget) for item in value))
    if kind is str or kind is bytes:
        budget[0] -= len(value)
    elif kind is int:
        budget[0] -= value.bit_length() >> 6
    elif kind is float:
        return (float, value.hex())
    elif kind is not bool and value is not None:
        raise _Unremembered
    if budget[0] < 0:
        raise _Unremembered
    return (kind, value)


class _Unremembered(Exception):
    pass


def _headers(reads: dict[str, Tree | None]) -> frozenset[str] | None:
    """The request headers the expression can read, or None when any header may matter
    (headers iterated, indexed by a computed name, ...). The decision cache keys on these."""
    if "request" not in reads:
        return frozenset()
    request = reads["request"]
    if request is None:
        return None
    if "headers" not in request:
        return frozenset()
    headers = request["headers"]
    return None if headers is None else frozenset(headers)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
