"""Read a policy directory into validated documents, remembering where each value came from.

A large set (100,000 profiles) must load in seconds and without holding every node, so a
document is read on a fast path that keeps no positions: libyaml's composer (with the tag of each
distinct scalar resolved once per file) and a walk that builds plain values. Positions are only
needed for errors, so a document's `path -> line` map is built when an error first asks for it,
by composing its file's text again the careful way (`_FileLines`); every error, including the
compiler's cross-document ones, still points at file:line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from authz.policy.model import API_VERSION, DOCUMENT_KINDS, Document
from authz.policy.suggest import did_you_mean, keys_at

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class PolicyError:
    file: str
    line: int
    message: str
    # the document this error left out of the set, when it names one: the compiler does not call
    # references to it dangling (the error here is the one to fix)
    document: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyLoadError(Exception):
    """The set is invalid; `errors` holds every problem found, not just the first."""

    def __init__(self, errors: list[PolicyError]) -> None:
        super().__init__("\n".join(str(error) for error in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a document came from: enough to place an error, without the document itself (the
    compiler keeps these for checks that can only run once the whole set is read)."""

    file: str
    lines: Mapping[Loc, int]

    def line(self, *loc: str | int) -> int:
        """The line of the deepest known prefix of `loc`."""
        for end in range(len(loc), -1, -1):
            found = self.lines.get(loc[:end])
            if found is not None:
                return found
        return 1

    def error(self, message: str, *loc: str | int) -> PolicyError:
        return PolicyError(self.file, self.line(*loc), message)


@dataclass(frozen=True)
class SourcedDocument:
    document: Document
    file: str
    lines: Mapping[Loc, int] = field(repr=False)

    @property
    def origin(self) -> Origin:
        return Origin(self.file, self.lines)

    def line(self, *loc: str | int) -> int:
        return self.origin.line(*loc)

    def error(self, message: str, *loc: str | int) -> PolicyError:
        return self.origin.error(message, *loc)


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
    errors: list[PolicyError] = []
    documents = list(iter_directory(directory, errors))
    if errors:
        raise PolicyLoadError(errors)
    return documents


def iter_directory(directory: str | os.PathLike[str], errors: list[PolicyError]) -> Iterator[SourcedDocument]:
    """Every valid document of the directory, one at a time (the compiler keeps what it needs of
    each and drops the rest); every problem is appended to `errors`."""
    for path in policy_files(Path(directory)):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(PolicyError(str(path), 0, f"cannot read: {exc}"))
            continue
        yield from iter_text(text, str(path), errors)


def load_text(text: str, filename: str) -> tuple[list[SourcedDocument], list[PolicyError]]:
    errors: list[PolicyError] = []
    return list(iter_text(text, filename, errors)), errors


def iter_text(text: str, filename: str, errors: list[PolicyError]) -> Iterator[SourcedDocument]:
    """The file's valid documents in order. A file that is not YAML reports that error alone, as
    if none of its documents had been read (any error fails the whole set anyway)."""
    file_errors: list[PolicyError] = []
    lines = _FileLines(text)
    constructor = yaml.constructor.SafeConstructor()  # non-string scalars; no parser, so no cycle
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_Composer)):
            if node is None:  # an empty document between `---` separators
                continue
            document = _document(node, index, filename, lines, constructor, file_errors)
            if document is not None:
                yield document
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        file_errors = [PolicyError(filename, line, f"invalid YAML: {' '.join(str(exc).split())}")]  # one line
    errors.extend(file_errors)


def _document(
    node: yaml.Node,
    index: int,
    filename: str,
    lines: _FileLines,
    constructor: yaml.constructor.SafeConstructor,
    errors: list[PolicyError],
) -> SourcedDocument | None:
    where = _DocumentLines(lines, index)
    try:
        data = _value(node, constructor)
    except _DuplicateKey:
        key, line = lines.duplicate(index)
        errors.append(PolicyError(filename, line, f"duplicate key {key!r}"))
        return None
    document, problems = _validate(data, filename, where)
    errors.extend(problems)
    return None if document is None else SourcedDocument(document, filename, where)


class _Composer(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's composer when PyYAML was built with it, resolving each distinct scalar's tag once
    (the resolver is Python, called for every scalar; a large set repeats the same few values)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[tuple[str, tuple[bool, bool]], str] = {}

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]
        key = (value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)
        return tag


_STR = "tag:yaml.org,2002:str"
_SPECIAL_KEYS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")


class _DuplicateKey(Exception):
    def __init__(self, key: str = "", line: int = 0) -> None:
        self.key, self.line = key, line


def _value(node: yaml.Node, constructor: yaml.constructor.SafeConstructor) -> Any:
    """The plain value of `node`, as PyYAML's safe loader builds it; a repeated key raises."""
    kind = type(node)
    if kind is yaml.ScalarNode:
        return node.value if node.tag == _STR else constructor.construct_object(node, deep=True)
    if kind is yaml.SequenceNode:
        return [_value(item, constructor) for item in node.value]
    if any(key.tag in _SPECIAL_KEYS for key, _ in node.value):
        constructor.flatten_mapping(node)  # resolve `<<` merge keys the way PyYAML does
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        result[_value(key_node, constructor)] = _value(value_node, constructor)
    if len(result) != len(node.value):
        raise _DuplicateKey
    return result


class _FileLines:
    """The `path -> line` maps of one file's documents, built on first use from its text."""

    __slots__ = ("_documents", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._documents: list[dict[Loc, int] | _DuplicateKey] | None = None

    def of(self, index: int) -> dict[Loc, int]:
        found = self._compose()[index]
        return {} if isinstance(found, _DuplicateKey) else found

    def duplicate(self, index: int) -> tuple[str, int]:
        found = self._compose()[index]
        return (found.key, found.line) if isinstance(found, _DuplicateKey) else ("", 1)

    def _compose(self) -> list[dict[Loc, int] | _DuplicateKey]:
        if self._documents is None:
            documents: list[dict[Loc, int] | _DuplicateKey] = []
            constructor = yaml.constructor.SafeConstructor()
            for node in yaml.compose_all(self._text, Loader=_Composer):
                lines: dict[Loc, int] = {}
                try:
                    if node is not None:
                        _lines(node, (), lines, constructor)
                    documents.append(lines)
                except _DuplicateKey as exc:
                    documents.append(exc)
            self._documents = documents
        return self._documents


class _DocumentLines(Mapping[Loc, int]):
    """One document's `path -> line` map, built (for its whole file) the first time it is read."""

    __slots__ = ("_file", "_index")

    def __init__(self, file: _FileLines, index: int) -> None:
        self._file, self._index = file, index

    def __getitem__(self, loc: Loc) -> int:
        return self._file.of(self._index)[loc]

    def __iter__(self) -> Iterator[Loc]:
        return iter(self._file.of(self._index))

    def __len__(self) -> int:
        return len(self._file.of(self._index))


def _lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int], constructor: yaml.constructor.SafeConstructor) -> Any:
    """`_value` that also records the line of every path, and the first repeated key's line."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _lines(key_node, loc, {}, constructor)
            if key in result:
                raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
            result[key] = _lines(value_node, (*loc, key), lines, constructor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_lines(item, (*loc, index), lines, constructor) for index, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def _validate(data: Any, filename: str, lines: Mapping[Loc, int]) -> tuple[Document | None, list[PolicyError]]:
    if not isinstance(data, dict):
        return None, [PolicyError(filename, lines.get((), 1), "a policy document must be a mapping")]
    name = _name(data)
    if data.get("apiVersion") != API_VERSION:
        got = data.get("apiVersion")
        where = Origin(filename, lines).line("apiVersion")
        return None, [PolicyError(filename, where, f"apiVersion must be {API_VERSION!r}, got {got!r}", name)]
    model = DOCUMENT_KINDS.get(data.get("kind"))  # type: ignore[arg-type]
    if model is None:
        kinds, got = ", ".join(DOCUMENT_KINDS), data.get("kind")
        where = Origin(filename, lines).line("kind")
        hint = did_you_mean(got, DOCUMENT_KINDS) if isinstance(got, str) else ""
        return None, [PolicyError(filename, where, f"kind must be one of {kinds}, got {got!r}{hint}", name)]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [_describe(error, model, filename, lines, name) for error in exc.errors()]


def _name(data: dict[Any, Any]) -> str:
    """The document's name, if it has a usable one, for errors that leave it out of the set."""
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def _describe(error: Any, model: type[Document], filename: str, lines: Mapping[Loc, int], name: str) -> PolicyError:
    loc: Loc = tuple(error["loc"])
    where = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        message = f"unknown field {where!r}{did_you_mean(str(loc[-1]), keys_at(model, loc[:-1]))}"
    else:
        message = f"{where}: {error['msg']}"
    found = Origin(filename, lines).error(message, *loc)
    return PolicyError(found.file, found.line, found.message, name)
