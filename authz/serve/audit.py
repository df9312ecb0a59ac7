"""The audit trail: one JSON line per decision (SPEC §7), and one per list answer the response
path filtered or refused (SPEC §9), through structlog with orjson.

Attribute names follow OpenTelemetry's semantic conventions where one exists
(`mcp.method.name`, `gen_ai.tool.name`, `http.request.method`, `url.path`). Tool arguments
and bodies are never logged. The recorder (record.py) hands answers over in batches, off the
request path; a batch is one write.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import orjson
import structlog

from authz.bounded import Bounded
from authz.check.decision import Decision
from authz.check.record import Answered
from authz.listing.stream import ListAnswered

# structlog's processors, composed as plain functions: its bound-logger machinery costs more
# than the rendering, on a thread that shares the GIL (ANALYSIS.md, "The audit writer").
PROCESSORS: list[Callable[[Any, str, Any], Any]] = [
    structlog.processors.add_log_level,
    structlog.processors.JSONRenderer(serializer=orjson.dumps),
]
REMEMBERED = 10_000  # rendered bodies kept for decisions the decision cache answers again
REMEMBERED_BYTES = 16 << 20
MAX_ACTORS = 5  # `act` claims nested deeper are left out of a line
MAX_ACTOR_LENGTH = 256  # characters of an actor's `sub` a line keeps


def render_body(decision: Decision) -> bytes:
    """What an audit line says about the decision itself, as a JSON object: the same for every
    answer the decision cache gives from it."""
    verdict = decision.verdict
    event: Any = {
        "event": "decision",
        "decision": decision.result,
        "reason": verdict.reason,
        "message": verdict.message or None,
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
        "user": _user(decision),
        **decision.details,
        **_shaped(decision),
    }
    for processor in PROCESSORS:
        event = processor(None, "info", event)
    return event  # type: ignore[no-any-return]  # JSONRenderer's bytes


def _user(decision: Decision) -> dict[str, Any] | None:
    """Who the decision acted for (SPEC §10): subject and issuer, never the token or other claims;
    and when the token says someone acts for the user (RFC 8693's `act` claim, nested for each
    exchange), who did: the `sub` of each actor, the latest first, at most MAX_ACTORS."""
    user = decision.user
    if user is None:
        return None
    found: dict[str, Any] = {"sub": user.sub, "iss": user.iss}
    actors = _actors(user.claims.get("act"))
    if actors:
        found["act"] = actors
    return found


def _actors(act: Any) -> list[str]:
    actors: list[str] = []
    while isinstance(act, dict) and len(actors) < MAX_ACTORS:
        sub = act.get("sub")
        actors.append(sub[:MAX_ACTOR_LENGTH] if isinstance(sub, str) else "?")
        act = act.get("act")
    return actors


def render_list(answered: ListAnswered) -> dict[str, Any]:
    """What an audit line says about one list answer of the response path: who it went to, and
    how many entries it kept and removed (never which)."""
    counts = answered.counts
    return {
        "event": "list",
        "result": answered.result,
        "reason": answered.reason,
        "message": answered.message or None,
        "caller": answered.caller or None,
        "profile": answered.profile or None,
        "server": answered.server or None,
        "mcp.method.name": answered.method or None,
        "kept": counts.kept,
        "removed": counts.removed,
        "would_remove": counts.would_remove,
        "chain_id": answered.chain_id or None,
        "hops": list(answered.hops) or None,
    }


def _shaped(decision: Decision) -> dict[str, list[str]]:
    """Which headers letting the request through set and removed (SPEC §12), by name only: a value
    may be a credential. A dry-run `would_deny` goes through with its Target's, which this shows."""
    shaping = decision.request_headers
    if shaping is None or not decision.enforced_allow:
        return {}
    return {"headers_set": [name for name, _ in shaping.to_set], "headers_removed": list(shaping.to_remove)}


class AuditLog:
    """A recorder sink: renders a batch of answers and writes it to `stream` (stdout by default).

    A line is `time`, `decision_id` and `latency_us` of the answer, then the decision's body.
    A decision the decision cache answers again (its own id is not the one it was answered
    under) has its body rendered once and remembered: most lines under load are such repeats.
    """

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream or sys.stdout.buffer
        self._bodies: Bounded[int, tuple[Decision, bytes]] = Bounded(REMEMBERED, REMEMBERED_BYTES)
        self._second = -1
        self._second_text = b""

    def write(self, batch: Sequence[Answered]) -> None:
        wall_offset = time.time_ns() - time.perf_counter_ns()
        lines: list[bytes] = []
        for decision, decision_id, started, answered in batch:
            try:
                lines.append(self.line(decision, decision_id, (answered - started) / 1000, answered + wall_offset))
            except Exception:
                logging.getLogger("mandate").exception("audit line failed for %s", decision_id)
        self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        """One write for a batch of lines."""
        if not lines:
            return
        lines.append(b"")
        try:
            self._stream.write(b"\n".join(lines))
            self._stream.flush()
        except (OSError, ValueError):  # stdout gone: say so on stderr, keep the recorder alive
            logging.getLogger("mandate").exception("cannot write %d audit lines", len(lines) - 1)

    def write_lists(self, batch: Sequence[ListAnswered]) -> None:
        """A recorder sink for the response path: one line per list answer filtered or refused,
        with the decision id of the ext_authz answer that let its request through."""
        lines = []
        for answered in batch:
            event: Any = render_list(answered)
            for processor in PROCESSORS:
                event = processor(None, "info", event)
            head = b'{"time":"%s","decision_id":%s,"latency_us":%.1f,' % (
                self._timestamp(answered.at_ns),
                orjson.dumps(answered.decision_id),
                answered.latency_ns / 1000,
            )
            lines.append(head + event[1:])
        self._write(lines)

    def line(self, decision: Decision, decision_id: str, latency_us: float, answered_epoch_ns: int) -> bytes:
        """One audit line (without its newline) for an answer given at `answered_epoch_ns`."""
        head = b'{"time":"%s","decision_id":%s,"latency_us":%.1f,' % (
            self._timestamp(answered_epoch_ns),
            orjson.dumps(decision_id),
            latency_us,
        )
        return head + self._body(decision, decision_id)[1:]

    def _body(self, decision: Decision, decision_id: str) -> bytes:
        if decision.id == decision_id:
            return render_body(decision)  # answered once, under its own id
        remembered = self._bodies.get(id(decision))
        if remembered is not None and remembered[0] is decision:
            return remembered[1]
        body = render_body(decision)
        self._bodies.put(id(decision), (decision, body), len(body))
        return body

    def _timestamp(self, epoch_ns: int) -> bytes:
        """ISO 8601 in UTC with microseconds, as structlog's TimeStamper(fmt="iso", utc=True)."""
        second, micro = divmod(epoch_ns // 1000, 1_000_000)
        if second != self._second:
            self._second = second
            self._second_text = (
                datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
            )
        return b"%s.%06dZ" % (self._second_text, micro)
