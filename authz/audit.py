"""Step 7: one JSON line per decision (SPEC §7), through structlog with orjson.

Attribute names follow OpenTelemetry's semantic conventions where one exists
(`mcp.method.name`, `gen_ai.tool.name`, `http.request.method`, `url.path`). Tool arguments
and bodies are never logged.

Lines are rendered and written by a background thread, so the answer to Envoy never waits
for stdout; `close()` drains the queue, so no decision goes unrecorded at shutdown.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import IO, Any

import orjson
import structlog

from .verdict import Decision


def make_logger(stream: IO[bytes] | None = None) -> Any:
    """A structlog logger that writes one orjson line per event to `stream` (stdout)."""
    return structlog.wrap_logger(
        structlog.BytesLogger(stream or sys.stdout.buffer),
        processors=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        cache_logger_on_first_use=True,
    )


class AuditLog:
    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._queue: queue.SimpleQueue[Decision | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_all, name="audit", daemon=True)
        self._writer.start()

    def record(self, decision: Decision) -> None:
        """Queue the decision's line; it is written shortly after, in order."""
        self._queue.put(decision)

    def close(self, timeout: float = 10.0) -> None:
        """Write every queued line, then stop the writer."""
        self._queue.put(None)
        self._writer.join(timeout)

    def _write_all(self) -> None:
        while (decision := self._queue.get()) is not None:
            try:
                self.write(decision)
            except Exception:  # noqa: BLE001 - one bad line must not stop the others
                logging.getLogger("mandate").exception("audit write failed for %s", decision.id)

    def write(self, decision: Decision) -> None:
        verdict = decision.verdict
        self._logger.info(
            "decision",
            decision=decision.result,
            reason=verdict.reason,
            message=verdict.message or None,
            decision_id=decision.id,
            caller=decision.caller or None,
            profile=decision.profile or None,
            target=decision.target or None,
            protocol=decision.protocol or None,
            rule=verdict.rule or None,
            hop=verdict.hop or None,
            status=verdict.status,
            dry_run=decision.dry_run,
            chain_id=decision.chain_id or None,
            chain_depth=len(decision.hops),
            hops=list(decision.hops) or None,
            minted_chain_id=decision.minted_chain_id or None,
            chain_events=decision.chain_events or None,
            latency_us=round(decision.latency_us, 1),
            **decision.details,
        )
