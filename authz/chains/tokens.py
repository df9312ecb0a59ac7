"""Chain tokens `<id>.<mac>`: an unguessable id and an HMAC-SHA256 over it.

The key file holds one key a line (at least 64 hex characters); the first key signs and
every key verifies, so keys rotate by prepending a new line and later dropping the old one.
A MAC is checked before any store lookup, so a forged token never costs a round trip.
The same keys seal the stored records, so whoever can write to Redis still cannot rewrite
a chain's hops.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path

from authz.bounded import Bounded

TOKEN_MAC = b"mandate-chain-v1\0"  # each use of a key gets its own prefix, so no MAC
RECORD_SEAL = b"mandate-record-v1\0"  # made for one purpose is valid for another
_ID_BYTES = 18  # 144 bits; hex, so an id never starts with "-" and reads as a CLI option
REMEMBERED_TOKENS = 100_000  # verified tokens kept, so a chain's later calls skip the MAC
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64,}$")
_TOKEN = re.compile(r"^([0-9a-f]{36})\.([A-Za-z0-9_-]{43})$")
MIN_KEY_HEX = 64


class KeyFileError(ValueError):
    """The key file is missing, empty, or holds a line that is not a hex key."""


class ForgedToken(ValueError):
    """The token is malformed or its MAC matches none of the keys."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ChainKeys:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise KeyFileError("no chain keys")
        # Keyed once: a copy per MAC skips the key setup and, unlike hmac.digest's one-shot,
        # never lets go of the GIL in mid-request (messages here are far below 2 KiB).
        self._keyed = tuple(hmac.new(key, digestmod=hashlib.sha256) for key in keys)
        self._genuine: Bounded[str, str] = Bounded(REMEMBERED_TOKENS, REMEMBERED_TOKENS)  # token -> chain id, verified

    @classmethod
    def from_file(cls, path: str | Path) -> ChainKeys:
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path}: cannot read chain key file: {exc}") from None
        keys = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not _HEX_KEY.match(line) or len(line) % 2:
                raise KeyFileError(
                    f"{path}:{number}: a chain key is an even number of hex characters, at least {MIN_KEY_HEX}"
                )
            keys.append(bytes.fromhex(line))
        if not keys:
            raise KeyFileError(f"{path}: no keys; write one key a line (e.g. `openssl rand -hex 32`)")
        return cls(keys)

    @classmethod
    def ephemeral(cls) -> ChainKeys:
        """A random key for a single in-process replica whose tokens die with it."""
        return cls([os.urandom(32)])

    def mac(self, purpose: bytes, data: bytes) -> str:
        """base64url HMAC-SHA256 of `purpose + data` under the signing (first) key."""
        return _b64(self._digest(self._keyed[0], purpose + data))

    def matches(self, purpose: bytes, data: bytes, mac: str) -> bool:
        """Whether `mac` was made over `purpose + data` by any of the keys."""
        return any(hmac.compare_digest(_b64(self._digest(keyed, purpose + data)), mac) for keyed in self._keyed)

    @staticmethod
    def _digest(keyed: hmac.HMAC, message: bytes) -> bytes:
        mac = keyed.copy()
        mac.update(message)
        return mac.digest()

    def new_id(self) -> str:
        return os.urandom(_ID_BYTES).hex()

    def sign(self, chain_id: str) -> str:
        return f"{chain_id}.{self.mac(TOKEN_MAC, chain_id.encode('ascii'))}"

    def verify(self, token: str) -> str:
        """The chain id of a genuine token; ForgedToken otherwise. A token found genuine is
        remembered: the same string under the same keys is genuine again."""
        chain_id = self._genuine.get(token)
        if chain_id is not None:
            return chain_id
        match = _TOKEN.fullmatch(token)  # not .match: `$` would also match before a trailing newline
        if match is None:
            raise ForgedToken("not a Mandate chain token (<id>.<mac>)")
        chain_id, mac = match.groups()
        if not self.matches(TOKEN_MAC, chain_id.encode("ascii"), mac):
            raise ForgedToken("its MAC matches none of the chain keys")
        self._genuine.put(token, chain_id, 1)
        return chain_id


def chain_id_of(text: str) -> str:
    """The id part of a token, or the text itself when it is already a bare id (CLI input)."""
    return text.split(".", 1)[0].strip()
