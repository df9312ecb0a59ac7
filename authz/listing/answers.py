"""The JSON-RPC side of a list answer: which requests await a list, and each message of the
answer filtered when it answers one of them.

A filtered message is written again from what was parsed (compact JSON, the same values and
key order), so the agent reads exactly what the entries were decided on: no duplicate key or
other parser disagreement can show it an entry Mandate read otherwise. Messages that answer no
list (notifications, server requests, other answers in a batch) are passed on as they came.

A resumed stream (a request with `Last-Event-ID`) replays answers to requests made earlier, whose
ids Mandate never saw: there, every answer whose `result` holds a list's entries at its top level
(`tools`, `prompts`, `resources`, `resourceTemplates`) is filtered as that list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from authz.check.protocols.jsonrpc import JsonId, Malformed, parse_messages
from authz.listing.entries import LISTS, SHAPES, Counts, EntryRules, Unreadable

IdKey = tuple[bool, int | str]
Report = Callable[[str, Counts], None]  # (list method, what filtering it did)


def id_key(value: object) -> IdKey | None:
    """A JSON-RPC id as a key that tells 1 from "1" (and refuses true, 1.0 and the like)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return isinstance(value, str), value


class ListRequests:
    """What one request asked: the list requests by id, and every request id (a refusal answers
    each); on a resumed stream, also the ids of the replayed answers seen so far."""

    def __init__(self, body: bytes, resumed: bool = False) -> None:
        try:
            messages, _ = parse_messages(body) if body.strip() or not resumed else ([], None)
        except Malformed as exc:
            raise Unreadable(f"the request does not parse as JSON-RPC: {exc}") from None
        self.resumed = resumed
        self.ids: list[JsonId] = [m.id for m in messages if m.id is not None and not m.is_response]
        self.lists: dict[IdKey, str] = {}
        for message in messages:
            key = id_key(message.id)
            if message.method in LISTS and key is not None:
                self.lists[key] = message.method
        self._asked = {key for key in map(id_key, self.ids) if key is not None}
        self.answered: set[IdKey] = set()

    @property
    def unanswered(self) -> tuple[JsonId, ...]:
        return tuple(i for i in self.ids if id_key(i) not in self.answered)

    @property
    def unanswered_lists(self) -> list[str]:
        """The methods of the list requests no answer passed on has answered yet."""
        return [method for key, method in self.lists.items() if key not in self.answered]

    def filter_value(self, value: Any, rules: EntryRules, report: Report) -> tuple[bool, set[IdKey]]:
        """Filter, in place, every message of a parsed answer (one message or a batch) that answers a
        list request: whether one did, and the ids it answers (answered once it is passed on).
        Anything but JSON-RPC messages, or a result for an id the request did not send (unless the
        stream is resumed), is refused."""
        changed, answers = False, set()
        for message in value if isinstance(value, list) else (value,):
            if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                raise Unreadable("the answer holds something other than JSON-RPC 2.0 messages")
            if "method" in message:
                continue  # the server's own request or notification
            key = id_key(message.get("id"))
            if "result" not in message:
                if key is not None:
                    answers.add(key)  # an error answers its request, and lists nothing
                continue
            self._expect(key, message.get("id"))
            answers.add(key)
            for method in self._lists_in(key, message["result"]):
                message["result"], counts = rules.filter(method, message["result"])
                report(method, counts)
                changed = True
        return changed, answers

    def _expect(self, key: IdKey | None, request_id: JsonId) -> None:
        """Hold a result to the ids asked; a resumed stream's replayed answer adds its id, so a
        refusal answers it too."""
        if key is not None and key in self._asked:
            return
        if key is None or not self.resumed:
            raise Unreadable("the answer carries a result for a request it was not asked")
        self._asked.add(key)
        self.ids.append(request_id)

    def _lists_in(self, key: IdKey, result: Any) -> tuple[str, ...]:
        """The lists a result answers: its request's, or on a resumed stream any list it has the shape of."""
        method = self.lists.get(key)
        if method is not None:
            return (method,)
        if not self.resumed or not isinstance(result, dict):
            return ()
        return tuple(method for entries, method in SHAPES.items() if entries in result)


def parse(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Unreadable(f"the answer is not JSON: {str(exc)[:200]}") from None


class JsonAnswer:
    """An `application/json` answer: held whole (a JSON text cannot be judged before it ends), then
    filtered; passed on as it came when it answers no list."""

    def __init__(self, requests: ListRequests, rules: EntryRules, report: Report) -> None:
        self.requests, self.rules, self.report = requests, rules, report
        self._pieces: list[bytes] = []

    def feed(self, data: bytes, final: bool) -> bytes:
        self._pieces.append(data)
        if not final:
            return b""
        body = b"".join(self._pieces)
        if not body.strip():
            return body
        value = parse(body)
        changed, answers = self.requests.filter_value(value, self.rules, self.report)
        self.requests.answered |= answers
        return orjson.dumps(value) if changed else body
