""" "Did you mean" for policy errors: the closest known names to a misspelt one (difflib).

Only error paths call this, so a valid set never pays for it.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable

from pydantic import BaseModel


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)`, or "" when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=2, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(found) for found in close) + "?)"


def keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The YAML keys a document of `model` accepts in the mapping at `loc` (list indexes skipped)."""
    current: object = model
    for part in loc:
        if isinstance(part, int):
            continue
        found = _model(current)
        if found is None:
            return []
        field = next((f for name, f in found.model_fields.items() if (f.alias or name) == part), None)
        if field is None:
            return []
        current = field.annotation
    found = _model(current)
    return [field.alias or name for name, field in found.model_fields.items()] if found is not None else []


def _model(annotation: object) -> type[BaseModel] | None:
    """The model inside `X`, `X | None`, `list[X]`, `Annotated[list[X], ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model(typing.get_args(annotation)[0])
    if origin in (list, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            found = _model(argument)
            if found is not None:
                return found
    return None
