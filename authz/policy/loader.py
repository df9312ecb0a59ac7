"""Read a policy directory into validated documents, remembering where each value came from.

PyYAML's composer gives every node a line; we keep a `path -> line` map per document so
that every error, including the compiler's cross-document ones, points at file:line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from authz.policy.model import API_VERSION, DOCUMENT_KINDS, Document

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class PolicyError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyLoadError(Exception):
    """The set is invalid; `errors` holds every problem found, not just the first."""

    def __init__(self, errors: list[PolicyError]) -> None:
        super().__init__("\n".join(str(error) for error in errors))
        self.errors = errors


@dataclass(frozen=True)
class SourcedDocument:
    document: Document
    file: str
    lines: dict[Loc, int] = field(repr=False)

    def line(self, *loc: str | int) -> int:
        """The line of the deepest known prefix of `loc`."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1

    def error(self, message: str, *loc: str | int) -> PolicyError:
        return PolicyError(self.file, self.line(*loc), message)


def policy_files(directory: Path) -> list[Path]:
    """YAML files directly in `directory`, sorted; hidden entries (a ConfigMap's `..data`) skipped.

    Kubernetes mounts each key as a symlink into `..data/`, so following the visible
    top-level names reads exactly the current generation of a ConfigMap.
    """
    if not directory.is_dir():
        raise PolicyLoadError([PolicyError(str(directory), 0, "policy directory does not exist")])
    return sorted(
        path
        for path in directory.iterdir()
        if not path.name.startswith(".") and path.suffix in (".yaml", ".yml") and path.is_file()
    )


def load_directory(directory: str | os.PathLike[str]) -> list[SourcedDocument]:
    documents: list[SourcedDocument] = []
    errors: list[PolicyError] = []
    for path in policy_files(Path(directory)):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(PolicyError(str(path), 0, f"cannot read: {exc}"))
            continue
        file_documents, file_errors = load_text(text, str(path))
        documents.extend(file_documents)
        errors.extend(file_errors)
    if errors:
        raise PolicyLoadError(errors)
    return documents


def load_text(text: str, filename: str) -> tuple[list[SourcedDocument], list[PolicyError]]:
    documents: list[SourcedDocument] = []
    errors: list[PolicyError] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=_COMPOSER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        return [], [PolicyError(filename, line, f"invalid YAML: {exc}")]
    # A loader of our own per file: PyYAML's constructor remembers every node it built, so a
    # shared one would keep every policy ever loaded alive (and is not thread-safe).
    scalars = yaml.SafeLoader("")
    for node in nodes:
        if node is None:  # an empty document between `---` separators
            continue
        lines: dict[Loc, int] = {}
        try:
            data = _to_python(node, (), lines, scalars)
        except _DuplicateKey as exc:
            errors.append(PolicyError(filename, exc.line, f"duplicate key {exc.key!r}"))
            continue
        document, problems = _validate(data, filename, lines)
        errors.extend(problems)
        if document is not None:
            documents.append(SourcedDocument(document, filename, lines))
    return documents, errors


# libyaml's composer when PyYAML was built with it (several times faster on large sets).
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int) -> None:
        self.key, self.line = key, line


def _to_python(node: yaml.Node, loc: Loc, lines: dict[Loc, int], scalars: yaml.SafeLoader) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        scalars.flatten_mapping(node)  # resolve `<<` merge keys the way PyYAML does
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _to_python(key_node, loc, {}, scalars)
            if key in result:
                raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
            result[key] = _to_python(value_node, (*loc, key), lines, scalars)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*loc, index), lines, scalars) for index, item in enumerate(node.value)]
    return scalars.construct_object(node, deep=True)


def _validate(data: Any, filename: str, lines: dict[Loc, int]) -> tuple[Document | None, list[PolicyError]]:
    line = lines.get((), 1)
    if not isinstance(data, dict):
        return None, [PolicyError(filename, line, "a policy document must be a mapping")]
    if data.get("apiVersion") != API_VERSION:
        got = data.get("apiVersion")
        where = lines.get(("apiVersion",), line)
        return None, [PolicyError(filename, where, f"apiVersion must be {API_VERSION!r}, got {got!r}")]
    model = DOCUMENT_KINDS.get(data.get("kind"))  # type: ignore[arg-type]
    if model is None:
        kinds = ", ".join(DOCUMENT_KINDS)
        where = lines.get(("kind",), line)
        return None, [PolicyError(filename, where, f"kind must be one of {kinds}, got {data.get('kind')!r}")]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [_describe(error, filename, lines) for error in exc.errors()]


def _describe(error: Any, filename: str, lines: dict[Loc, int]) -> PolicyError:
    loc: Loc = tuple(error["loc"])
    where = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        message = f"unknown field {where!r}"
    else:
        message = f"{where}: {error['msg']}"
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return PolicyError(filename, lines[loc[:end]], message)
    return PolicyError(filename, 1, message)
