"""The secret files a policy's `requestHeaders` read (`{secret:PATH}`, SPEC §12).

A credential the agent never holds (an egress API key) is added by Mandate on the way out, so
its value lives here and nowhere else: it goes into the header it is for and into nothing that
is written down. `repr`, errors and log lines name the path, never the content.

Each file is read when the policy set loads (a missing, empty or unusable one is a load error)
and again when its signature changes (device, inode, size, mtime, through symlinks: a Kubernetes
Secret volume's `..data` swap makes a new inode). A change to nothing usable (the file gone,
emptied, unreadable) keeps the last good value and says so: a request never goes out with an
empty credential.
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger("mandate")

MAX_SECRET_BYTES = 16 << 10  # an API key or a token; a larger file is no header value
# A header value may hold visible ASCII, spaces and tabs: never a line break (header injection) or NUL.
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
APPLIED, KEPT = "applied", "kept"  # what a change of a file did: its new value is in use, or the last good one stays

Signature = tuple[int, int, int, int]


class SecretError(ValueError):
    """A secret file that gives no value; the message names the path and the problem, never content."""


class SecretFile:
    """One `{secret:PATH}`: the file's trimmed content, as last read while usable.

    `stale` says why the value in use is no longer the file's ("" while it is)."""

    __slots__ = ("_signature", "path", "stale", "value")

    def __init__(self, path: str, read: bool = True) -> None:
        """`read` False (the offline tools' `--no-secret-files`): the path is checked, the file not
        opened, and the value is empty; such a set is never served."""
        if not os.path.isabs(path):
            raise SecretError(f"secret path {path!r} must be absolute")
        self.path = path
        signature, value = _read(path) if read else (None, "")
        self._signature: Signature | None = signature
        self.value = value
        self.stale = ""

    def __repr__(self) -> str:
        return f"SecretFile({self.path!r})"

    def refresh(self) -> str:
        """Read the file again if it changed: APPLIED (a new value is in use), KEPT (it gives no
        value, the last good one stays), or "" (no change worth telling)."""
        signature = _signature(self.path)
        if signature == self._signature:
            return ""
        try:
            read_at, value = _read(self.path)
        except SecretError as exc:
            self._signature = signature  # told once per change, not at every look
            self.stale = str(exc)
            log.warning("%s; the last good value of the secret stays in use", exc)
            return KEPT
        if read_at != signature or _signature(self.path) != read_at:
            return ""  # written while read: read again at the next look
        self._signature = read_at
        if value == self.value and not self.stale:
            return ""
        self.value, self.stale = value, ""
        log.info("secret file %s changed: its value in use is the file's", self.path)
        return APPLIED


class Secrets:
    """The secret files of one policy set, one SecretFile per path however many headers read it."""

    __slots__ = ("files", "read")

    def __init__(self, read: bool = True) -> None:
        self.files: dict[str, SecretFile] = {}
        self.read = read  # False: the files are not opened (SecretFile)

    def file(self, path: str) -> SecretFile:
        """The file at `path`, read now if it is new to the set; raises SecretError."""
        found = self.files.get(path)
        if found is None:
            found = self.files[path] = SecretFile(path, self.read)
        return found

    def refresh(self) -> list[str]:
        """Look at every file again; what each change did (APPLIED or KEPT), one entry per change."""
        return [outcome for outcome in (secret.refresh() for secret in self.files.values()) if outcome]

    @property
    def stale(self) -> int:
        """How many files give no value now, their last good one in use."""
        return sum(1 for secret in self.files.values() if secret.stale)


def _signature(path: str) -> Signature | None:
    try:
        stat = os.stat(path)  # through the symlinks of a Secret volume
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _read(path: str) -> tuple[Signature, str]:
    """The file's signature when opened and its trimmed content; SecretError when it gives no value."""
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        value = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path} holds bytes that are not ASCII") from None
    if not value:
        raise SecretError(f"secret file {path} is empty")
    if _HEADER_VALUE.fullmatch(value) is None:
        raise SecretError(f"secret file {path} holds a line break or control character, which a header cannot")
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns), value
