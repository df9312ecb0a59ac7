"""Undoing a list answer's Content-Encoding, bounded: a gzip bomb stops at the limit, after
work proportional to the limit, not to what it would have expanded to."""

from __future__ import annotations

import zlib

from authz.listing.entries import Unreadable

_GZIP = 16 + zlib.MAX_WBITS  # zlib's way of saying: a gzip header and trailer, not raw deflate
ENCODINGS = ("", "identity", "gzip", "x-gzip")


class TooLarge(Exception):
    """More bytes than Mandate filters in one answer."""


class Gunzip:
    """gzip members, one after another as RFC 1952 allows, decoded as they arrive; at most
    `limit` bytes come out in all."""

    def __init__(self, limit: int) -> None:
        self._left = limit
        self._member = zlib.decompressobj(_GZIP)
        self._midway = False  # the current member has begun and not ended

    def feed(self, data: bytes) -> bytes:
        pieces = []
        try:
            while data:
                piece = self._member.decompress(data, self._left + 1)  # one byte past the limit says "over"
                self._left -= len(piece)
                if self._left < 0:
                    raise TooLarge(f"the answer decodes to more than {self._left + len(piece)} more bytes")
                pieces.append(piece)
                if self._member.eof:
                    data, self._midway = self._member.unused_data, False
                    self._member = zlib.decompressobj(_GZIP)
                else:
                    data, self._midway = self._member.unconsumed_tail, True
        except zlib.error as exc:
            raise Unreadable(f"the answer's gzip encoding is corrupt: {exc}") from None
        return b"".join(pieces)

    def finish(self) -> None:
        if self._midway:
            raise Unreadable("the answer's gzip encoding ends in the middle of a member")


def decoder(encoding: str, limit: int) -> Gunzip | None:
    """None for an unencoded answer; a Gunzip; Unreadable for any other encoding (or a stack of them)."""
    name = encoding.strip().lower()
    if name not in ENCODINGS:
        raise Unreadable(f"the answer's Content-Encoding {encoding[:60]!r} is not one Mandate decodes (gzip)")
    return Gunzip(limit) if name in ("gzip", "x-gzip") else None
