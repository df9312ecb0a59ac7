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


class ConditionError(ValueError):
    pass


class Condition:
    __slots__ = ("source", "roots", "_program")

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
        if unknown:
            raise ConditionError(
                f"CEL refers to unknown variable(s) {', '.join(unknown)}; "
                f"available: {', '.join(sorted(ROOTS))}"
            )

    def holds(self, activation: dict[str, Any]) -> bool:
        """True only for a boolean true; anything else, errors included, raises."""
        result = self._program.execute(activation)
        if result is True:
            return True
        if result is False:
            return False
        raise ConditionError(f"`when` returned {type(result).__name__}, not bool")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
