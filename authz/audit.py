"""Step 7: one JSON line per decision (SPEC §7), through structlog with orjson.

Attribute names follow OpenTelemetry's semantic conventions where one exists
(`mcp.method.name`, `gen_ai.tool.name`, `http.request.method`, `url.path`). Tool arguments
and bodies are never logged.
"""

from __future__ import annotations

import sys
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

    def record(self, decision: Decision) -> None:
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
