"""Where a JSON-RPC body's top-level id stands in its bytes, for the decision cache's key.

Clients number their calls, so two calls asking for the same thing differ only in their id;
the cache keys on the rest (`decision_cache.py`). This is a byte scanner, not a parser: it
follows JSON's strings and brackets just far enough to find the top-level `"id"`, and says
nothing when in doubt. The strict reader (`protocols/jsonrpc.py`) still reads every body that
is decided.
"""

from __future__ import annotations

from typing import Final

# Bytes as Final ints, compared one by one: compiled, that is a machine comparison each.
_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_COLON: Final = 0x3A
_COMMA: Final = 0x2C
_OPEN_OBJECT: Final = 0x7B
_CLOSE_OBJECT: Final = 0x7D
_OPEN_ARRAY: Final = 0x5B
_CLOSE_ARRAY: Final = 0x5D
_MAX_ID_DIGITS: Final = 18  # always inside the 64-bit range `_message` accepts


def id_span(body: bytes) -> tuple[int, int] | None:
    """Where the value of the top-level `"id"` member of a JSON object lies in `body`, when
    that value is an integer of at most 18 digits or a string of printable ASCII without
    escapes (so its bytes are all there is to it); None otherwise.

    Clients number their requests, so two calls that ask for the same thing differ only there;
    the decision cache keys on the rest. The walk follows JSON's strings and brackets, so an
    `"id"` nested in the params or inside a string is never taken for the top-level one. It
    stops at the first top-level `"id"`; a body that repeats it is refused by the strict reader.
    """
    end = len(body)
    pos = _skip_space(body, 0)
    if pos >= end or body[pos] != _OPEN_OBJECT:  # not an object: a batch, or not JSON-RPC
        return None
    depth = 0
    while pos < end:
        byte = body[pos]
        if byte == _QUOTE:
            after = _string_end(body, pos)
            if after < 0:
                return None
            if depth == 1 and after - pos == 4 and body[pos + 1] == 0x69 and body[pos + 2] == 0x64:  # "id"
                colon = _skip_space(body, after)
                if colon < end and body[colon] == _COLON:
                    return _id_value(body, _skip_space(body, colon + 1))
            pos = after
        else:
            if byte == _OPEN_OBJECT or byte == _OPEN_ARRAY:
                depth += 1
            elif byte == _CLOSE_OBJECT or byte == _CLOSE_ARRAY:
                depth -= 1
            pos += 1
    return None


def _id_value(body: bytes, start: int) -> tuple[int, int] | None:
    end = len(body)
    pos = start
    if pos < end and body[pos] == _QUOTE:
        pos += 1
        while pos < end and 0x20 <= body[pos] <= 0x7E and body[pos] != _QUOTE and body[pos] != _BACKSLASH:
            pos += 1
        if pos >= end or body[pos] != _QUOTE:
            return None
        pos += 1
    else:
        if pos < end and body[pos] == 0x2D:  # -
            pos += 1
        digits = pos
        while pos < end and 0x30 <= body[pos] <= 0x39:
            pos += 1
        count = pos - digits
        if not 1 <= count <= _MAX_ID_DIGITS or (count > 1 and body[digits] == 0x30):
            return None
    follows = _skip_space(body, pos)
    if follows < end and (body[follows] == _COMMA or body[follows] == _CLOSE_OBJECT):  # the member ends here
        return start, pos
    return None


def _skip_space(body: bytes, pos: int) -> int:
    end = len(body)
    while pos < end and (body[pos] == 0x20 or body[pos] == 0x0A or body[pos] == 0x0D or body[pos] == 0x09):
        pos += 1
    return pos


def _string_end(body: bytes, start: int) -> int:
    """The position after the string opening at `start`; -1 when it never closes."""
    end = len(body)
    pos = start + 1
    while pos < end:
        byte = body[pos]
        if byte == _QUOTE:
            return pos + 1
        pos += 2 if byte == _BACKSLASH else 1  # an escape: the next byte is never the closing quote
    return -1
