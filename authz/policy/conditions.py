"""`when` conditions: CEL compiled once at load time, evaluated per request.

`common-expression-language` parses but does not type-check, so a misspelt root
(`mpc.tool.name`) would only fail at run time. We reject unknown roots at load time instead;
comprehension variables (`hops.exists(h, ...)`) are the only other names allowed.
"""

from __future__ import annotations

import re
from typing import Any

import cel

ROOTS = frozenset({"source", "request", "mcp", "a2a", "chain"})
_COMPREHENSION_VARIABLE = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,"
)
# A root and, when it is followed by one, its first field: `mcp.tool.arguments` -> (mcp, tool).
_ROOT_USE = re.compile(r"(?<![\w.])(" + "|".join(sorted(ROOTS)) + r")\b(?:\s*\.\s*([A-Za-z_]\w*))?")
_HEADERS_USE = re.compile(r"(?<![\w.])request\s*\.\s*headers\b")
_LITERAL = r"(?:\"([^\"\\]*)\"|'([^'\\]*)')"
# The ways a header can be named so that its name is plain: headers["x"], headers.x, "x" in headers.
_HEADER_AFTER = re.compile(r"\s*(?:\[\s*" + _LITERAL + r"\s*\]|\.\s*([A-Za-z_]\w*)\b(?!\s*\())")
_HEADER_BEFORE = re.compile(_LITERAL + r"\s+in\s*$")


class ConditionError(ValueError):
    pass


class Condition:
    __slots__ = ("source", "roots", "headers", "_fields", "_program")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ConditionError(f"CEL does not compile: {_first_line(exc)}") from None
        bound = set(_COMPREHENSION_VARIABLE.findall(source))
        variables = set(self._program.variables())
        unknown = sorted(variables - ROOTS - bound)
        # Converting the activation into CEL values dominates evaluation, so pass only these.
        self.roots = tuple(sorted(variables & ROOTS))
        self._fields = _fields_used(source, self.roots)
        self.headers = _headers_read(source, dict(self._fields).get("request", frozenset()))
        if unknown:
            raise ConditionError(
                f"CEL refers to unknown variable(s) {', '.join(unknown)}; "
                f"available: {', '.join(sorted(ROOTS))}"
            )

    def holds(self, variables: dict[str, Any]) -> bool:
        """True only for a boolean true; anything else, errors included, raises.

        Converting the activation into CEL values dominates evaluation, so only the roots,
        and of each root only the first-level fields, that the expression names are passed.
        """
        activation = {
            root: variables[root] if fields is None else {key: variables[root][key] for key in fields if key in variables[root]}
            for root, fields in self._fields
        }
        result = self._program.execute(activation)
        if result is True:
            return True
        if result is False:
            return False
        raise ConditionError(f"`when` returned {type(result).__name__}, not bool")


def _fields_used(source: str, roots: tuple[str, ...]) -> tuple[tuple[str, frozenset[str] | None], ...]:
    """For each root, the first-level fields the expression reads, or None for the whole root
    (when the root is used other than as `root.field`, e.g. indexed or passed whole).

    Read from the source text: a root mentioned inside a string literal only adds fields,
    which is harmless; anything unusual keeps the whole root, which is always correct.
    """
    used: dict[str, set[str] | None] = {root: set() for root in roots}
    for match in _ROOT_USE.finditer(source):
        root, field = match.groups()
        if root not in used:
            continue
        fields = used[root]
        if field is None or fields is None:
            used[root] = None
        else:
            fields.add(field)
    return tuple((root, None if fields is None else frozenset(fields)) for root, fields in used.items())


def _headers_read(source: str, request_fields: frozenset[str] | None) -> frozenset[str] | None:
    """The request headers the expression can read, or None when that cannot be told from the
    text (headers iterated, indexed by a computed name, ...): then any header may matter.

    The decision cache keys on these headers only, so this errs towards None.
    """
    if request_fields is None:
        return None
    if "headers" not in request_fields:
        return frozenset()
    names: set[str] = set()
    for use in _HEADERS_USE.finditer(source):
        after = _HEADER_AFTER.match(source, use.end())
        before = _HEADER_BEFORE.search(source, 0, use.start())
        if after is not None:
            names.add(next(group for group in after.groups() if group is not None))
        elif before is not None:
            names.add(next(group for group in before.groups() if group is not None))
        else:
            return None
    return frozenset(names)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
