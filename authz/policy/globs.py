"""Name lists where `*` matches any run of characters and nothing else is special (SPEC §3)."""

from __future__ import annotations

import re
from collections.abc import Iterable


class GlobSet:
    """A compiled name list: exact names in a frozenset, patterns in one anchored regex."""

    __slots__ = ("_exact", "_pattern", "matches_all", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._exact = frozenset(p for p in self.patterns if "*" not in p)
        wild = [p for p in self.patterns if "*" in p]
        self.matches_all = "*" in wild
        self._pattern = re.compile("|".join(_to_regex(p) for p in wild), re.DOTALL) if wild else None

    def __contains__(self, name: str) -> bool:
        if name in self._exact:
            return True
        return self._pattern is not None and self._pattern.fullmatch(name) is not None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r})"


def _to_regex(pattern: str) -> str:
    return "(?:" + ".*".join(re.escape(part) for part in pattern.split("*")) + ")"
