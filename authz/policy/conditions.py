"""`when` conditions: CEL compiled once at load time, evaluated per request.

`common-expression-language` parses but does not type-check, so a misspelt root
(`mpc.tool.name`) would only fail at run time. We reject unknown roots at load time instead;
comprehension variables (`hops.exists(h, ...)`) are the only other names allowed.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import cel

ROOTS = frozenset({"source", "request", "mcp", "a2a", "chain"})
_COMPREHENSION_VARIABLE = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,"
)
_ROOT = re.compile(r"(?<![\w.])(" + "|".join(sorted(ROOTS)) + r")\b")
_LITERAL = r"(?:\"([^\"\\]*)\"|'([^'\\]*)')"
# One step down from a value: `.field` or `["key"]` with a plain string literal.
_STEP = re.compile(r"\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*" + _LITERAL + r"\s*\])")
_CALL = re.compile(r"\s*\(")
_KEY_IN = re.compile(_LITERAL + r"\s+in\s*$")  # `"x" in <path>` asks only for key x
_OPERAND_END = re.compile(r"\s*(?:$|\)|&&|\|\||\?|:|,|\]|\})")

# What an expression reads of the activation: for each name, None when the value is used
# whole, else the tree of the fields (or map keys) it selects from it.
Tree = dict[str, "Tree | None"]


class Roots(Protocol):
    """The activation: a mapping from root name to value (decide.py builds each on demand)."""

    def __getitem__(self, name: str, /) -> Any: ...


class ConditionError(ValueError):
    pass


class Condition:
    __slots__ = ("source", "headers", "_reads", "_program")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ConditionError(f"CEL does not compile: {_first_line(exc)}") from None
        bound = set(_COMPREHENSION_VARIABLE.findall(source))
        variables = set(self._program.variables())
        unknown = sorted(variables - ROOTS - bound)
        if unknown:
            raise ConditionError(
                f"CEL refers to unknown variable(s) {', '.join(unknown)}; "
                f"available: {', '.join(sorted(ROOTS))}"
            )
        self._reads = _reads(source, tuple(sorted(variables & ROOTS)))
        self.headers = _headers(dict(self._reads))

    def holds(self, variables: Roots) -> bool:
        """True only for a boolean true; anything else, errors included, raises.

        Converting the activation into CEL values dominates evaluation (about 1 µs a string
        with common-expression-language 0.10), so only what the expression reads is passed.
        """
        activation = {root: _project(variables[root], tree) for root, tree in self._reads}
        result = self._program.execute(activation)
        if result is True:
            return True
        if result is False:
            return False
        raise ConditionError(f"`when` returned {type(result).__name__}, not bool")


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
