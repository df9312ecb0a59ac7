"""A shortcut around steps 1–6: a request whose decision-relevant fields were seen before gets
the answer decided then, with a fresh decision id, instead of being decided again (SPEC §8).

Why this is sound: a decision is a function of the policy set, the request fields in
`decision_key` (principals, method, path, host, body, the headers that classification,
identity, the chain and some `when` read) and, for chained or delegating
calls, the chain records it relied on. The cache belongs to one policy set (a reload starts
an empty one); an answer that relied on chain records is re-used only while the store is
reachable, has not reconnected since (it may have lost them), none of them is revoked or
expired, and a token it hands on is still within the mint-reuse window. Answers that came
from a broken chain token, an unreadable request or an internal error are never kept.

The response is kept serialized and cut where its decision id goes (a fresh random id, which
no request can have guessed, so nothing echoed from the request is cut); joining the pieces
with another id of the same length gives a valid protobuf.

MCP and A2A clients number their JSON-RPC requests, so a repeated call is never a repeat of
its bytes: the key leaves out the value of the body's top-level `id` (`jsonrpc_id.id_span`), and
`Content-Length` as far as it only tells whether the body was cut. An answer is given to
another id only when it is an allow (the id appears in deny bodies alone) and its
classification read exactly that id as the request's one JSON-RPC id; any other answer is
kept under the key and the id, for the same id only.

Invariants (each has a test in tests/unit/test_decision_cache.py or test_cache_equivalence.py):
1. An answer is given again only for a request protobuf parsed (`pipeline.check_bytes`) whose
   walk (`wire.py`) found a source principal, so identity never comes from a header here.
2. The key holds every field a decision may read; `KEY_HEADERS` and the headers a `when`
   names are the only headers, and the only ones the steps are given (`visible`, enforced
   in `request.from_wire`). `x-forwarded-client-cert` is not among them: it is read only
   when the request has no source principal, and such a request is never looked up (1).
3. An answer to a request that presented a chain token is kept only when the decision noted
   the verified record behind it, so revocation and expiry reach every answer that relied on it.
4. The cache is bounded in entries and in bytes (keys and responses), evicting the oldest;
   a request whose key alone exceeds MAX_KEY_BYTES is decided afresh, never kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from authz.bounded import Bounded
from authz.chains.store import ChainStore
from authz.check.decision import Decision
from authz.check.delegation import MINT_REUSE_SECONDS
from authz.check.jsonrpc_id import id_span
from authz.check.protocols.jsonrpc import JsonId
from authz.check.request import DECIDING_HEADERS
from authz.check.wire import WireRequest
from authz.policy.compiled import PolicySet
from authz.reasons import INTERNAL_ERROR, INVALID_CHECK_REQUEST, TOKEN_REFUSALS
from authz.users.verify import LEEWAY

MAX_BODY = 4096  # bigger bodies are decided afresh: they rarely repeat and would bloat the cache
MAX_KEY_BYTES = 16_384  # a key holding more (long headers) is decided afresh
DEFAULT_ENTRIES = 10_000
MAX_BYTES = 64 << 20  # keys and responses kept, per policy set
_ENTRY_OVERHEAD = 3072  # bytes an entry costs besides its keys and pieces: its Decision, slices, dict slots (measured)
# What a decision reads besides a `when`'s headers and the chain header (invariant 2).
KEY_HEADERS = tuple(name for name in DECIDING_HEADERS if name != "x-forwarded-client-cert")
# Every key holds the pseudo-headers: they stand in for method, path and host when Envoy leaves those empty.
PSEUDO_HEADERS = (":method", ":path", ":authority")
_TRUSTED_CHAIN_EVENTS = frozenset({"verified", "minted", "reused"})
# Answers that say Mandate could not decide: kept, they would outlive the fix (or the fluke) behind them.
# And refused user tokens: whether a key is known or a token still valid changes with time and fetches.
_NEVER_KEPT = frozenset({INTERNAL_ERROR, INVALID_CHECK_REQUEST, *TOKEN_REFUSALS})


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    pieces: tuple[bytes, ...]  # the serialized CheckResponse, cut where its decision id goes
    decision: Decision  # what the audit line and metrics say when it is re-used
    expires: float  # on the chain step's clock; inf when no chain record is involved
    generation: int  # the chain store's generation when decided

    def __init__(self, pieces: tuple[bytes, ...], decision: Decision, expires: float, generation: int) -> None:
        object.__setattr__(self, "pieces", pieces)
        object.__setattr__(self, "decision", decision)
        object.__setattr__(self, "expires", expires)
        object.__setattr__(self, "generation", generation)


class Lookup:
    """One request's place in the cache: its key, the JSON-RPC id the key leaves out, whether it
    presented a chain token, and the answer kept for it (None: decide afresh)."""

    __slots__ = ("answer", "chained", "jsonrpc_id", "key")

    def __init__(
        self, key: tuple[object, ...], jsonrpc_id: bytes | None, chained: bool, answer: CachedAnswer | None
    ) -> None:
        self.key, self.jsonrpc_id, self.chained, self.answer = key, jsonrpc_id, chained, answer


class DecisionCache:
    def __init__(
        self,
        policy: PolicySet,
        store: ChainStore,
        clock: Callable[[], float],
        entries: int = DEFAULT_ENTRIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        chain_header = policy.settings.chain_header
        named = policy.condition_headers
        users = policy.settings.users
        own = (chain_header,) if users is None else (chain_header, users.header)  # the user's token (SPEC §10)
        deciding = {*KEY_HEADERS, *PSEUDO_HEADERS, *own}  # the pseudo-headers are in every key
        self.headers: tuple[bytes, ...] | None = (
            None if named is None else tuple(name.encode() for name in (*KEY_HEADERS, *own, *sorted(named - deciding)))
        )
        self._users = users
        self.chain_header = chain_header.encode()
        # The headers the steps see (`request.from_wire`): the key's, and the pseudo-headers.
        self.visible = None if self.headers is None else (*self.headers, *(name.encode() for name in PSEUDO_HEADERS))
        # Content-Length only tells whether the body was cut, unless some `when` reads it.
        self.length_at = (
            None if self.headers is None or "content-length" in (named or ()) else self.headers.index(b"content-length")
        )
        self.entries = entries
        self._store = store
        self._clock = clock
        self._answers: Bounded[tuple[object, ...], CachedAnswer] = Bounded(entries, max_bytes)

    def look_up(self, wire: WireRequest | None) -> Lookup | None:
        """The request's place in the cache; None when it is not to be cached, or caching is off."""
        if not self.entries or wire is None:
            return None
        key, jsonrpc_id = decision_key(wire, self.headers, MAX_BODY, self.length_at)
        if key is None:
            return None
        chained = wire.headers.get(self.chain_header) is not None
        found = key
        answer = self._answers.get(key)  # an answer for any id
        if answer is None and jsonrpc_id is not None:
            found = (*key, jsonrpc_id)
            answer = self._answers.get(found)  # an answer for this id only
        if (
            answer is not None
            and (answer.decision.records or answer.expires != math.inf)
            and not self._still_valid(answer)
        ):
            self._answers.pop(found)
            answer = None
        return Lookup(key, jsonrpc_id, chained, answer)

    def put(self, found: Lookup, decision: Decision, response: bytes, generation: int) -> None:
        """Keep `response` (just sent for `decision`) for requests with the same key."""
        if decision.verdict.reason in _NEVER_KEPT or not _TRUSTED_CHAIN_EVENTS.issuperset(decision.chain_events):
            return
        if found.chained and not decision.records:
            return  # invariant 3: nothing would tell this answer that its chain was revoked
        pieces = tuple(response.split(decision.id.encode()))
        if len(pieces) < 2:
            return  # an answer without its decision id cannot be given under another one
        key, jsonrpc_id = found.key, found.jsonrpc_id
        if jsonrpc_id is not None and not (decision.enforced_allow and decision.jsonrpc_ids == (_json_id(jsonrpc_id),)):
            key = (*key, jsonrpc_id)  # only an allow that read the left-out id as the request's id is for any id
        cost = _ENTRY_OVERHEAD + len(response) + key_bytes(key)
        self._answers.put(key, CachedAnswer(pieces, decision.repeated(""), self._expires(decision), generation), cost)

    def _expires(self, decision: Decision) -> float:
        """When the answer stops being the one deciding afresh gives: its chain records expire, a
        token it handed on leaves its reuse window, the request's user token (or verified claims) expire."""
        user = decision.presented_user
        expires = math.inf if user is None else user.expires + LEEWAY
        for record in decision.records:
            expires = min(expires, record.expires)
            if record.id == decision.minted_chain_id:
                expires = min(expires, record.created + MINT_REUSE_SECONDS)
        return expires

    def _still_valid(self, answer: CachedAnswer) -> bool:
        decision = answer.decision
        if self._clock() >= answer.expires:
            return False
        user = decision.presented_user
        if user is not None and self._users is not None and not self._users.still_trusted(user):
            return False  # the issuer withdrew the key that verified the user's token
        if not decision.records:
            return True
        store = self._store
        return (
            store.available()
            and store.generation == answer.generation
            and not any(store.is_revoked(record) for record in decision.records)
        )


def decision_key(
    wire: WireRequest, headers: tuple[bytes, ...] | None, max_body: int, length_at: int | None
) -> tuple[tuple[object, ...] | None, bytes | None]:
    """Every field a decision can depend on, as the request's bytes: principals, method, path,
    host, both bodies, the pseudo-headers and `headers` (the names that matter; None: every
    header); and the JSON-RPC id it leaves out of the body, if any. `length_at`: where
    Content-Length is among `headers`, kept then only as far as it exceeds the body's length
    (None: kept as sent). None for a body over `max_body` bytes."""
    raw_body, body = wire.raw_body, wire.body
    if len(raw_body) > max_body or len(body) > max_body:
        return None, None
    read = raw_body or body  # the body Mandate reads (`request.from_wire`)
    span = id_span(read) if read.find(b'"jsonrpc"') >= 0 else None  # find: half the time `in` takes on bytes
    fields = wire.headers
    chosen: list[object] = [fields.get(name) for name in headers] if headers is not None else [*sorted(fields.items())]
    if span is None:
        jsonrpc_id = None
    else:
        start, end = span
        jsonrpc_id = read[start:end]
        cut = read[:start] + read[end:]
        raw_body, body = (cut, body) if raw_body else (raw_body, cut)
        declared = chosen[length_at] if length_at is not None else None
        digits = declared.lstrip(b"0") if isinstance(declared, bytes) and declared.isdigit() else None
        if digits is not None and len(digits) <= 18:  # longer: kept as sent (`int` refuses 4,300 digits)
            chosen[length_at] = int(digits or b"0") - len(read)  # type: ignore[index]  # an int: never equal to a header's bytes
    key = (
        wire.source_principal,
        wire.destination_principal,
        wire.jwt_authn,
        wire.method,
        wire.path,
        wire.host,
        raw_body,
        body,
        span is not None,
        fields.get(b":method"),
        fields.get(b":path"),
        fields.get(b":authority"),
        *chosen,
    )
    if key_bytes(key) > MAX_KEY_BYTES:
        return None, None
    return key, jsonrpc_id


def key_bytes(key: tuple[object, ...]) -> int:
    """The bytes a key holds: its byte strings' lengths (its other parts are small constants)."""
    return sum(len(part) for part in key if isinstance(part, bytes))


def _json_id(text: bytes) -> JsonId:
    """The id `jsonrpc_id.id_span` found: an integer, or a string without escapes."""
    return text[1:-1].decode() if text[:1] == b'"' else int(text)
