"""Path hygiene (SPEC §4.3): match rules on the normalised path, refuse the ambiguous.

A path is ambiguous when the upstream could reasonably read it as a different path than
we do: encoded separators (`%2F`, `%5C`), backslashes, double encoding (`%25xx` decodes to
another escape), control characters, or `..` climbing above the root.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes


class AmbiguousPath(ValueError):
    pass


# A path that is already normal: segments of unreserved and sub-delimiter characters, none
# of them `.` or `..`, no `%`, `\\`, `#`, empty segment or control character. Most are.
_PLAIN_PATH = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~!$&'()*+,;=:@-]+)*/?")


def normalize_path(raw: str) -> str:
    """The path without query, percent-decoded once, `//`, `.` and `..` resolved."""
    path = raw.split("?", 1)[0]
    if _PLAIN_PATH.fullmatch(path) and path:
        return path
    return resolve_path(path, raw)


def resolve_path(path: str, raw: str) -> str:
    """The general case of `normalize_path` (`raw` is only for messages)."""
    if not path.startswith("/"):
        raise AmbiguousPath(f"path {raw[:200]!r} is not absolute")
    if "#" in path:
        raise AmbiguousPath("path contains a fragment")
    lowered = path.lower()
    if "\\" in path or "%2f" in lowered or "%5c" in lowered:
        raise AmbiguousPath("path contains an encoded slash or a backslash")
    if "%" in path:
        path = _decode_once(path)
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        raise AmbiguousPath("path contains a control character")
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise AmbiguousPath("path climbs above the root with '..'")
            segments.pop()
        else:
            segments.append(segment)
    normalized = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        normalized += "/"
    return normalized


def _decode_once(path: str) -> str:
    index = path.find("%")
    while index != -1:
        escape = path[index + 1 : index + 3]
        if len(escape) != 2 or not all(c in "0123456789abcdefABCDEF" for c in escape):
            raise AmbiguousPath("path contains a malformed percent-escape")
        index = path.find("%", index + 3)
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise AmbiguousPath("path does not decode to UTF-8") from None
    if "%" in decoded:
        raise AmbiguousPath("path is percent-encoded twice")
    if "\\" in decoded:
        raise AmbiguousPath("path contains an encoded slash or a backslash")
    return decoded


def under_prefix(path: str, prefix: str) -> bool:
    """Segment-aware prefix test: `/mcp` covers `/mcp` and `/mcp/x`, not `/mcpx`."""
    if prefix == "/" or path == prefix:
        return True
    base = prefix.rstrip("/")
    return path.startswith(base + "/") or path == base


def host_key(host: str) -> str:
    """Hosts compare lowercase and without a port, as `:authority` is matched (SPEC §4.1)."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[: host.find("]") + 1]
    name, _, port = host.rpartition(":")
    return name if name and port.isascii() and port.isdigit() else host
