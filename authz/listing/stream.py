"""One ext_proc stream: what Envoy says about one list request and its answer, in order, and
what Mandate answers each time.

request headers: who asks (the refusal of a caller that cannot be told waits for the ids);
request body: which JSON-RPC requests are lists (a request with `Last-Event-ID` resumes a stream
whose replayed answers Mandate never saw asked: every list-shaped answer in it is filtered);
response headers: the answer's content type and encoding (Content-Length goes: the body changes);
response body chunks (STREAMED): held or rewritten, so what leaves is always filtered. Once an
answer's headers have gone out, a refusal becomes a JSON-RPC error in the body (an SSE event,
for a stream), and whatever the upstream sends after it is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import perf_counter_ns, time_ns
from typing import TYPE_CHECKING

from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest, ProcessingResponse

from authz.check.decision import Refusal, Verdict, refused
from authz.check.decision_ids import new_decision_id
from authz.check.protocols.jsonrpc import JsonId
from authz.check.request import RESUME_HEADER
from authz.check.response import FILTER_HEADER
from authz.listing import replies
from authz.listing.answers import JsonAnswer, ListRequests
from authz.listing.caller import ListCaller, identify
from authz.listing.encoding import Gunzip, TooLarge, decoder
from authz.listing.entries import Counts, Unreadable
from authz.listing.exchange import header_map, read_request
from authz.listing.sse import SseAnswer, error_event
from authz.reasons import ALLOWED, INTERNAL_ERROR, LIST_CALLER_BUSY, LIST_TOO_LARGE, LIST_UNREADABLE

if TYPE_CHECKING:
    from authz.listing.service import ListService

log = logging.getLogger("mandate")


@dataclass(frozen=True)
class ListAnswered:
    """One list answer filtered, or refused: what its audit line and metrics say."""

    decision_id: str  # the ext_authz decision that let the request through
    method: str  # tools/list, ...
    result: str  # filtered | refused
    reason: str
    counts: Counts
    caller: str = ""
    profile: str = ""
    server: str = ""
    chain_id: str = ""
    hops: tuple[str, ...] = ()
    message: str = ""  # why it was refused
    latency_ns: int = 0  # Mandate's own time on the stream until this list was decided
    at_ns: int = 0  # wall-clock time it was decided (time.time_ns)


class ListStream:
    def __init__(self, service: ListService) -> None:
        self.service = service
        self.decision_id = ""
        self.caller: ListCaller | None = None
        self.holder: str | None = None  # the caller this stream counts against (ListService.hold)
        self.refusal: Verdict | None = None  # the caller could not be told: said once the ids are known
        self.requests: ListRequests | None = None  # None: no list to filter, the answer passes as it is
        self._resumed = False  # the request resumes a stream: its replayed answers may hold lists
        self._asked: list[bytes] = []
        self._answer: JsonAnswer | SseAnswer | None = None
        self._decoder: Gunzip | None = None
        self._decoded = 0
        self._ended = False  # refused after the answer's headers went out: the rest is dropped
        self._spent = 0  # ns Mandate spent on the stream's earlier messages
        self._call = 0  # perf_counter_ns when the current message came in

    def answer(self, request: ProcessingRequest) -> ProcessingResponse:
        """Mandate's reply to one message of the stream; never raises (an internal error refuses)."""
        phase = request.WhichOneof("request")
        self._call = perf_counter_ns()
        try:
            if phase == "request_headers":
                return self._request_headers(request)
            if phase == "request_body":
                return self._request_body(request)
            if phase == "response_headers":
                return self._response_headers(request)
            if phase == "response_body":
                return self._response_body(request)
            return replies.trailers(phase or "request_trailers")
        except Exception:
            log.exception("response path: failed on %s of decision %s", phase, self.decision_id)
            return self._fail(phase, refused(INTERNAL_ERROR, "Mandate failed to filter the list; see its log"))
        finally:
            self._spent += perf_counter_ns() - self._call

    # --- the request ---------------------------------------------------------------------

    def _request_headers(self, request: ProcessingRequest) -> ProcessingResponse:
        seen = read_request(request)
        self.decision_id = seen.authz.get("decision_id") or new_decision_id()
        try:
            self.caller = identify(self.service.authorizer.policy, self.service.authorizer.chains, seen)
        except Refusal as refusal:
            self.refusal = refusal.verdict
        else:
            self._hold(self.caller.principal)
        self._resumed = RESUME_HEADER in seen.headers
        if request.request_headers.end_of_stream:
            if self._resumed:
                self.requests = ListRequests(b"", resumed=True)
            if self.refusal is not None:
                return self._immediate(self.refusal, ())
        return replies.go_on("request_headers", (FILTER_HEADER,))

    def _hold(self, principal: str) -> None:
        if self.service.hold(principal):
            self.holder = principal
            return
        message = f"{principal} already has {self.service.per_caller} list answers being filtered"
        self.caller, self.refusal = None, refused(LIST_CALLER_BUSY, message)

    def _request_body(self, request: ProcessingRequest) -> ProcessingResponse:
        self._asked.append(request.request_body.body)
        if sum(map(len, self._asked)) > self.service.limit:
            return self._immediate(refused(LIST_TOO_LARGE, "the list request is larger than Mandate reads"), ())
        if not request.request_body.end_of_stream:
            return replies.go_on("request_body")
        try:
            requests = ListRequests(b"".join(self._asked), self._resumed)
        except Unreadable as exc:
            return self._immediate(refused(LIST_UNREADABLE, str(exc)), ())
        self._asked = []
        if requests.lists or requests.resumed:
            self.requests = requests
            if self.refusal is not None:
                return self._immediate(self.refusal, tuple(requests.ids))
        return replies.go_on("request_body")

    # --- the answer ----------------------------------------------------------------------

    def _response_headers(self, request: ProcessingRequest) -> ProcessingResponse:
        requests, caller = self.requests, self.caller
        if requests is None or caller is None:
            return replies.go_on("response_headers")
        headers = header_map(request.response_headers.headers)
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        limit = self.service.limit
        try:
            self._decoder = decoder(headers.get("content-encoding", ""), limit)
            if content_type == "application/json":
                self._answer = JsonAnswer(requests, caller.rules, self._report)
            elif content_type == "text/event-stream":
                self._answer = SseAnswer(requests, caller.rules, self._report, limit)
            elif headers.get(":status", "").startswith("2"):
                raise Unreadable(f"the answer's content type {content_type[:60]!r} is neither JSON nor SSE")
            else:
                self.requests = None  # an HTTP error of another kind: it answers no list
                return replies.go_on("response_headers")
        except Unreadable as exc:
            return self._immediate(self._refused(refused(LIST_UNREADABLE, str(exc))), tuple(requests.ids))
        encoded = ("content-encoding",) if self._decoder is not None else ()
        return replies.go_on("response_headers", ("content-length", *encoded))

    def _response_body(self, request: ProcessingRequest) -> ProcessingResponse:
        answer = self._answer
        if answer is None or self._ended:
            return replies.body(b"") if self._ended else replies.go_on("response_body")
        chunk, final = request.response_body.body, request.response_body.end_of_stream
        try:
            data = chunk if self._decoder is None else self._decoder.feed(chunk)
            if final and self._decoder is not None:
                self._decoder.finish()
            self._decoded += len(data)
            if self._decoded > self.service.limit:
                raise TooLarge(f"the answer is longer than {self.service.limit} bytes")
            return replies.body(answer.feed(data, final))
        except Unreadable as exc:
            return replies.body(self._refuse_inline(refused(LIST_UNREADABLE, str(exc))))
        except TooLarge as exc:
            return replies.body(self._refuse_inline(refused(LIST_TOO_LARGE, f"{exc}; Mandate filters no more")))

    # --- refusing --------------------------------------------------------------------------

    def _refused(self, verdict: Verdict) -> Verdict:
        """Record the refusal of every list the request asked for, once."""
        if not self._ended:
            self._ended = True
            lists = (self.requests.unanswered_lists if self.requests is not None else []) or [""]
            for method in lists:
                self.service.record(self._record(method, "refused", verdict.reason, verdict.message, Counts()))
        return verdict

    def _immediate(self, verdict: Verdict, ids: tuple[JsonId, ...]) -> ProcessingResponse:
        return replies.immediate(self.decision_id, self._refused(verdict), ids)

    def _refuse_inline(self, verdict: Verdict) -> bytes:
        """The body that ends an answer whose headers went out: errors for the requests not yet answered."""
        self._refused(verdict)
        requests = self.requests
        if requests is None:
            return b""
        if isinstance(self._answer, JsonAnswer):
            return replies.refusal_body(self.decision_id, verdict, requests.ids)
        pending = requests.unanswered
        if not pending and not requests.resumed:
            return b""
        return error_event(replies.refusal_body(self.decision_id, verdict, pending))  # resumed: id null at worst

    def _fail(self, phase: str | None, verdict: Verdict) -> ProcessingResponse:
        """An internal error: the request ends here, or the answer's body becomes the error."""
        if phase == "response_body":
            return replies.body(self._refuse_inline(verdict))
        return self._immediate(verdict, tuple(self.requests.ids) if self.requests is not None else ())

    # --- recording -------------------------------------------------------------------------

    def _report(self, method: str, counts: Counts) -> None:
        self.service.record(self._record(method, "filtered", ALLOWED, "", counts))

    def _record(self, method: str, result: str, reason: str, message: str, counts: Counts) -> ListAnswered:
        caller = self.caller
        if caller is None:
            return ListAnswered(self.decision_id, method, result, reason, counts, message=message, at_ns=time_ns())
        latency = self._spent + perf_counter_ns() - self._call
        return ListAnswered(
            self.decision_id,
            method,
            result,
            reason,
            counts,
            caller.principal,
            caller.profile,
            caller.server,
            caller.chain.id,
            caller.chain.hops,
            message,
            latency,
            time_ns(),
        )
