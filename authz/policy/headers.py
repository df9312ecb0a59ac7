"""`requestHeaders` compiled: what an allowed request's headers become before its upstream sees them (SPEC §12).

A value is text with variables in braces: `{caller.principal}`, `{caller.namespace}`,
`{caller.serviceAccount}`, `{profile}`, `{decision_id}`, `{user.sub}`, or `{secret:PATH}` (a
file's trimmed content, authz/policy/secrets.py); `{{` and `}}` are literal braces. Values are
parsed once at load, so an unknown variable or an unreadable secret file is a load error, and an
answer only joins pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from authz.policy.secrets import SecretError, SecretFile, Secrets
from authz.policy.suggest import did_you_mean

# The variables, in the order of the facts a value is rendered from (`facts_of` in response.py).
VARIABLES: tuple[str, ...] = (
    "caller.principal",
    "caller.namespace",
    "caller.serviceAccount",
    "profile",
    "decision_id",
    "user.sub",
)
USER_SUB = VARIABLES.index("user.sub")
LITERAL, SECRET = -1, -2  # a Piece that is text as written, or a secret file's value
_SECRET_PREFIX = "secret:"
_PIECES = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]|[^{}]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # an HTTP header name (RFC 9110 token), lowercase
# What no header value may hold: line breaks (header injection), NUL and the other controls but tab.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers no policy may set or remove: the request's routing and framing, and Envoy's own.
_NOT_YOURS = {
    "host": "it routes the request",
    "content-length": "it frames the request",
    "transfer-encoding": "it frames the request",
    "connection": "it is a hop-by-hop header",
    "keep-alive": "it is a hop-by-hop header",
    "proxy-connection": "it is a hop-by-hop header",
    "te": "it is a hop-by-hop header",
    "upgrade": "it is a hop-by-hop header",
}


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of a value: literal text, a secret file's value, or a variable (an index into the facts)."""

    kind: int  # LITERAL, SECRET, or the variable's index in VARIABLES
    text: str  # the literal text; `{…}` as written for a variable or a secret
    secret: SecretFile | None

    def __init__(self, kind: int, text: str, secret: SecretFile | None = None) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "secret", secret)


@dataclass(frozen=True, slots=True)
class HeaderValue:
    """One `set` value, parsed: its pieces joined with one answer's facts give the header."""

    written: str
    pieces: tuple[Piece, ...]

    def __init__(self, written: str, pieces: tuple[Piece, ...]) -> None:
        object.__setattr__(self, "written", written)
        object.__setattr__(self, "pieces", pieces)

    def render(self, facts: Sequence[str]) -> str:
        """The header's value for one answer; `facts` holds each variable's value in VARIABLES' order."""
        parts = []
        for piece in self.pieces:
            kind = piece.kind
            if kind == LITERAL:
                parts.append(piece.text)
            elif kind == SECRET:
                secret = piece.secret
                assert secret is not None
                parts.append(secret.value)
            else:
                parts.append(facts[kind])
        return "".join(parts)

    def shown(self, facts: Sequence[str]) -> str:
        """The value as `explain` shows it: every variable filled in, every secret left as `{secret:PATH}`."""
        return "".join(piece.text if piece.kind in (LITERAL, SECRET) else facts[piece.kind] for piece in self.pieces)


@dataclass(frozen=True, eq=False, slots=True)
class RequestHeaders:
    """A Target's or a rule's `requestHeaders` (a rule's merged over its Target's): headers set, each
    replacing every copy the client sent, and headers removed. Compared by identity: each is
    compiled once per policy set, and a response template's shape holds it."""

    to_set: tuple[tuple[str, HeaderValue], ...]
    to_remove: tuple[str, ...]
    reads_user: bool  # some value reads `{user.sub}`: the answer depends on the request's user

    def __init__(self, to_set: tuple[tuple[str, HeaderValue], ...], to_remove: tuple[str, ...]) -> None:
        object.__setattr__(self, "to_set", to_set)
        object.__setattr__(self, "to_remove", to_remove)
        reads_user = any(piece.kind == USER_SUB for _, value in to_set for piece in value.pieces)
        object.__setattr__(self, "reads_user", reads_user)

    def shown(self, facts: Sequence[str]) -> dict[str, object]:
        """What `explain` reports, as an answer does it: each set header's value with its secrets as
        placeholders, and the removed (a value that comes out empty among them)."""
        values = [(name, value.shown(facts)) for name, value in self.to_set]
        emptied = [name for name, text in values if not text]
        return {"set": {name: text for name, text in values if text}, "remove": [*emptied, *self.to_remove]}


def merged(base: RequestHeaders | None, over: RequestHeaders) -> RequestHeaders:
    """`over` (a rule's) over `base` (its Target's), per header name: a name the rule sets or removes
    is the rule's alone."""
    if base is None:
        return over
    names = {name for name, _ in over.to_set} | set(over.to_remove)
    return RequestHeaders(
        tuple(entry for entry in base.to_set if entry[0] not in names) + over.to_set,
        tuple(name for name in base.to_remove if name not in names) + over.to_remove,
    )


def compile_headers(
    to_set: Mapping[str, str], to_remove: Iterable[str], secrets: Secrets
) -> tuple[RequestHeaders, list[tuple[str, tuple[str | int, ...]]]]:
    """A `requestHeaders` entry compiled, and its problems as (message, where under requestHeaders).
    Names are lowercased (HTTP's are case-insensitive); whose names they are is `name_problem`'s
    to say, once the set's chain header is known."""
    problems: list[tuple[str, tuple[str | int, ...]]] = []
    values: list[tuple[str, HeaderValue]] = []
    seen: dict[str, str] = {}
    for written_name, text in to_set.items():
        name = written_name.lower()
        if name in seen:
            problems.append((f"header {written_name!r} is set twice (also as {seen[name]!r})", ("set", written_name)))
        seen[name] = written_name
        try:
            values.append((name, parse_value(text, secrets)))
        except ValueError as exc:
            problems.append((f"header {written_name!r}: {exc}", ("set", written_name)))
    removed: list[str] = []
    for index, written_name in enumerate(to_remove):
        name = written_name.lower()
        if name in seen:
            problems.append((f"header {written_name!r} is both set and removed", ("remove", index)))
        seen[name] = written_name
        removed.append(name)
    return RequestHeaders(tuple(values), tuple(removed)), problems


def parse_value(text: str, secrets: Secrets) -> HeaderValue:
    """A value's pieces; ValueError says what is wrong (never a secret's content)."""
    pieces: list[Piece] = []
    for match in _PIECES.finditer(text):
        token, inside = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            pieces.append(Piece(LITERAL, token[0]))
        elif token in ("{", "}"):
            raise ValueError(
                f"unmatched {token!r} at character {match.start() + 1} (write {token * 2} for a literal one)"
            )
        elif inside is None:
            if _CONTROL.search(token):
                raise ValueError("a header value cannot hold a line break or control character")
            pieces.append(Piece(LITERAL, token))
        elif inside.startswith(_SECRET_PREFIX):
            try:
                pieces.append(Piece(SECRET, token, secrets.file(inside[len(_SECRET_PREFIX) :])))
            except SecretError as exc:
                raise ValueError(str(exc)) from None
        elif inside in VARIABLES:
            pieces.append(Piece(VARIABLES.index(inside), token))
        else:
            hint = did_you_mean(inside, VARIABLES) or f" (known: {', '.join(VARIABLES)}, secret:PATH)"
            raise ValueError(f"unknown variable {token!r}{hint}")
    return HeaderValue(text, tuple(pieces))


def name_problem(name: str, own: Mapping[str, str]) -> str | None:
    """Why a policy may not set or remove header `name` (lowercase), or None; `own` maps the headers
    Mandate itself sets or removes to what they are for."""
    if not _TOKEN.fullmatch(name):
        return f"{name!r} is not a header name (pseudo-headers such as :authority cannot be changed)"
    if name in own:
        return f"header {name!r} is Mandate's own ({own[name]}): a policy cannot set or remove it"
    if name in _NOT_YOURS:
        return f"header {name!r} cannot be set or removed: {_NOT_YOURS[name]}"
    if name.startswith("x-envoy-"):
        return f"header {name!r} cannot be set or removed: x-envoy-* headers are Envoy's"
    return None


def holds_control(value: str) -> bool:
    """Whether a rendered value holds what no header may (a variable's value brought it in)."""
    return _CONTROL.search(value) is not None
