"""Protobuf wire bytes by hand: for tests that send CheckRequests Envoy would never encode."""

from __future__ import annotations

from typing import Any


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """One field of wire type 2 (length-delimited)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def number_of(message: Any, name: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[name].number)


def inject(message: Any, path: tuple[str, ...], extra: bytes) -> bytes:
    """`message` serialized with `extra` appended inside the submessage at `path`, which stays
    one field (a second copy of a submessage is another test: the walk refuses it)."""
    if not path:
        return message.SerializeToString() + extra
    inner = inject(getattr(message, path[0]), path[1:], extra)
    rest = type(message)()
    rest.CopyFrom(message)
    rest.ClearField(path[0])
    return rest.SerializeToString() + field(number_of(message, path[0]), inner)
