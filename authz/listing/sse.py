"""A `text/event-stream` cut into events as its bytes arrive, however they are split.

Lines end in CRLF, LF or CR (a CR at the end of a chunk waits for the next, which may bring
its LF); a blank line ends an event. Each byte is scanned once and what the events took is
dropped once per chunk, so a stream split at every byte costs what it costs whole. Only the
event being read is held, and never more than `limit` bytes of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from authz.listing.answers import ListRequests, Report, parse
from authz.listing.encoding import TooLarge
from authz.listing.entries import EntryRules, Unreadable

_LINE_END = re.compile(rb"[\r\n]")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Event:
    """One event: its bytes as they came (blank line included), and its lines."""

    raw: bytes
    lines: tuple[bytes, ...]

    @property
    def newline(self) -> bytes:
        """The line ending the event was written with, for a rewrite to keep."""
        end = _LINE_END.search(self.raw)
        if end is None:
            return b"\n"
        return (
            b"\r\n" if self.raw[end.start() : end.start() + 2] == b"\r\n" else self.raw[end.start() : end.start() + 1]
        )

    def fields(self) -> tuple[bytes, bytes | None]:
        """The event's type (`message` unless named) and its data (the `data:` lines joined by LF;
        None without any), as a client reads them."""
        kind, data = b"message", None
        for line in self.lines:
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data = value if data is None else data + b"\n" + value
            elif name == b"event":
                kind = value or b"message"
        return kind, data

    def with_data(self, data: bytes) -> bytes:
        """The event rewritten: its other lines (id:, event:, retry:, comments) kept in order, its
        data lines replaced by one holding `data` (which has no line breaks: compact JSON)."""
        newline, out, placed = self.newline, [], False
        for line in self.lines:
            if line.partition(b":")[0] != b"data":
                out.append(line)
            elif not placed:
                out.append(b"data: " + data)
                placed = True
        return newline.join(out) + newline + newline


class EventReader:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._scan = 0  # where to look for the next line end
        self._line = 0  # where the current line starts
        self._event = 0  # where the current event starts
        self._lines: list[bytes] = []
        self._opening = True  # a BOM may open the stream: wait until it can be told

    def feed(self, data: bytes, final: bool = False) -> list[Event]:
        """The events `data` completes; with `final`, the stream ends after it (a last CR ends its line)."""
        buffer = self._buffer
        buffer += data
        if self._opening and not self._skip_bom(final):
            return []
        events = []
        while True:
            found = _LINE_END.search(buffer, self._scan)
            if found is None:
                self._scan = len(buffer)
                break
            end = found.start()
            if buffer[end] == 0x0D and end + 1 == len(buffer) and not final:  # its LF may come next
                self._scan = end
                break
            after = end + 2 if buffer[end : end + 2] == b"\r\n" else end + 1
            if end == self._line:
                events.append(Event(bytes(buffer[self._event : after]), tuple(self._lines)))
                self._event, self._lines = after, []
            else:
                self._lines.append(bytes(buffer[self._line : end]))
            self._line = self._scan = after
        self._drop(self._event)
        if len(buffer) > self._limit:
            raise TooLarge(f"an event of the answer is longer than {self._limit} bytes")
        return events

    @property
    def midway(self) -> bool:
        """Whether an event has begun and not ended (at the end of the stream, a client drops it)."""
        return bool(self._lines) or self._line < len(self._buffer)

    def _skip_bom(self, final: bool) -> bool:
        """Step over a UTF-8 BOM opening the stream; False while the bytes so far may still be one."""
        head = bytes(self._buffer[: len(_BOM)])
        if head == _BOM:
            self._line = self._scan = len(_BOM)
        elif _BOM.startswith(head) and not final:
            return False
        self._opening = False
        return True

    def _drop(self, count: int) -> None:
        if count:
            del self._buffer[:count]
            self._scan -= count
            self._line -= count
            self._event = 0


class SseAnswer:
    """A `text/event-stream` answer: each event passed on as soon as it is complete, the one that
    answers a list rewritten with the entries the caller may not call removed. An event without
    data (a priming event that only sets `id:` or `retry:`, a keep-alive comment) is passed on
    as it came; one with data must be an MCP message, or the answer is refused."""

    def __init__(self, requests: ListRequests, rules: EntryRules, report: Report, limit: int) -> None:
        self.requests, self.rules, self.report = requests, rules, report
        self._reader = EventReader(limit)

    def feed(self, data: bytes, final: bool) -> bytes:
        """What can be passed on after `data`. At the end, an event left unfinished is dropped, as a
        client drops it, and a list request still unanswered is refused: its agent gets an error
        rather than waiting for an answer that will not come."""
        out = b"".join(self._event(event) for event in self._reader.feed(data, final))
        if final and self.requests.unanswered_lists:
            raise Unreadable("the answer ended before it answered every list request")
        return out

    def _event(self, event: Event) -> bytes:
        kind, data = event.fields()
        if not data:
            return event.raw
        if kind != b"message":
            raise Unreadable("an event of the answer that carries data is not an MCP message")
        value = parse(data)
        changed, answers = self.requests.filter_value(value, self.rules, self.report)
        self.requests.answered |= answers
        return event.with_data(orjson.dumps(value)) if changed else event.raw


def error_event(body: bytes) -> bytes:
    """An SSE event carrying a JSON-RPC error, which a client reads as the answer to its request."""
    return b"event: message\ndata: " + body + b"\n\n"
