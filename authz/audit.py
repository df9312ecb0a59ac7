"""The audit trail: one JSON line per decision (SPEC §7), through structlog with orjson.

Attribute names follow OpenTelemetry's semantic conventions where one exists
(`mcp.method.name`, `gen_ai.tool.name`, `http.request.method`, `url.path`). Tool arguments
and bodies are never logged. The recorder (record.py) hands answers over in batches, off the
request path; a batch is one write.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

import orjson
import structlog

from .record import Answered
from .verdict import Decision


# structlog's processors, composed as plain functions: its bound-logger machinery around them
# cost more than the rendering itself (8 µs a line against 3 µs), on a thread that shares the GIL.
PROCESSORS: list[Callable[[Any, str, Any], Any]] = [
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    structlog.processors.add_log_level,
    structlog.processors.JSONRenderer(serializer=orjson.dumps),
]


def render(decision: Decision, decision_id: str, latency_us: float) -> bytes:
    """One audit line (without its newline)."""
    verdict = decision.verdict
    event: Any = {
        "event": "decision",
        "decision": decision.result,
        "reason": verdict.reason,
        "message": verdict.message or None,
        "decision_id": decision_id,
        "caller": decision.caller or None,
        "profile": decision.profile or None,
        "target": decision.target or None,
        "protocol": decision.protocol or None,
        "rule": verdict.rule or None,
        "hop": verdict.hop or None,
        "status": verdict.status,
        "dry_run": decision.dry_run,
        "chain_id": decision.chain_id or None,
        "chain_depth": len(decision.hops),
        "hops": list(decision.hops) or None,
        "minted_chain_id": decision.minted_chain_id or None,
        "chain_events": decision.chain_events or None,
        "latency_us": round(latency_us, 1),
        **decision.details,
    }
    for processor in PROCESSORS:
        event = processor(None, "info", event)
    return event  # type: ignore[no-any-return]  # JSONRenderer's bytes


class AuditLog:
    """A recorder sink: renders a batch of answers and writes it to `stream` (stdout by default)."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream or sys.stdout.buffer

    def write(self, batch: Sequence[Answered]) -> None:
        lines: list[bytes] = []
        for decision, decision_id, latency_us in batch:
            try:
                lines.append(render(decision, decision_id, latency_us))
            except Exception:  # noqa: BLE001 - one bad line must not stop the others
                logging.getLogger("mandate").exception("audit line failed for %s", decision_id)
        if not lines:
            return
        lines.append(b"")
        try:
            self._stream.write(b"\n".join(lines))
            self._stream.flush()
        except (OSError, ValueError):  # stdout gone: say so on stderr, keep the recorder alive
            logging.getLogger("mandate").exception("cannot write %d audit lines", len(lines) - 1)
