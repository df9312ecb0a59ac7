"""Prometheus metrics: decisions, check duration, chains, reloads, secret files, policy version, and the response
path's streams, lists and removed entries (`http.py` serves them).

With `--workers N` each worker records into prometheus_client's multiprocess files and the
supervising process serves their sum (`multiprocess_registry`); gauges say how to combine.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)

from authz.check.record import Answered
from authz.listing.stream import ListAnswered

CHECK_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 250e-3)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "mandate_decisions", "Decisions by result and reason.", ["result", "reason"], registry=self.registry
        )
        self.check_duration = Histogram(
            "mandate_check_duration_seconds",
            "Mandate's own time per Check, from bytes in to response out.",
            buckets=CHECK_BUCKETS,
            registry=self.registry,
        )
        self.chain_store_errors = Counter(
            "mandate_chain_store_errors", "Failed chain store operations.", registry=self.registry
        )
        self.chain_outcomes = Counter(
            "mandate_chain_outcomes", "Delegation chain outcomes.", ["outcome"], registry=self.registry
        )
        self.cache_answers = Counter(
            "mandate_decision_cache_answers",
            "Answers given from the decision cache (the other decisions were made afresh).",
            registry=self.registry,
        )
        self.reloads = Counter(
            "mandate_policy_reloads", "Policy reloads by result.", ["result"], registry=self.registry
        )
        self.policy_errors = Gauge(
            "mandate_policy_errors",
            "Errors in the last rejected policy set (0 when the last load succeeded).",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.ext_proc_streams = Counter(
            "mandate_ext_proc_streams",
            "ext_proc streams Envoy opened: the exported filters open one per list request, none for any other.",
            registry=self.registry,
        )
        self.list_answers = Counter(
            "mandate_list_answers",
            "MCP list answers by list method and result (filtered, refused) and reason.",
            ["method", "result", "reason"],
            registry=self.registry,
        )
        self.list_entries_removed = Counter(
            "mandate_list_entries_removed",
            "Entries removed from MCP list answers, by list method.",
            ["method"],
            registry=self.registry,
        )
        self.secret_reloads = Counter(
            "mandate_secret_reloads",
            "Changes of requestHeaders' secret files: applied (the new value is in use) or kept (the file gives "
            "no value, the last good one stays).",
            ["result"],
            registry=self.registry,
        )
        self.secrets_stale = Gauge(
            "mandate_secrets_stale",
            "Secret files that are gone, empty or unreadable now: their last good value is in use.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.policy_info = Gauge(
            "mandate_policy_info",
            "The policy version being served (value 1).",
            ["version"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self._version: str | None = None
        self._children: dict[tuple[object, ...], Any] = {}  # labelled series, found once each

    def count(self, batch: Sequence[Answered]) -> None:
        """A recorder sink: count a batch of answers, each labelled series once per batch."""
        by_reason: collections.Counter[tuple[str, str]] = collections.Counter()
        outcomes: collections.Counter[str] = collections.Counter()
        observe = self.check_duration.observe
        cached = 0
        for decision, answer_id, started, answered in batch:
            by_reason[decision.result, decision.verdict.reason] += 1
            outcomes.update(decision.chain_events)
            observe((answered - started) / 1e9)
            cached += decision.id != answer_id  # the cache answers under a new id (pipeline.py)
        if cached:
            self.cache_answers.inc(cached)
        for (result, reason), count in by_reason.items():
            self._child(self.decisions, result, reason).inc(count)
        for outcome, count in outcomes.items():
            self._child(self.chain_outcomes, outcome).inc(count)
        if outcomes["store_unavailable"]:
            self.chain_store_errors.inc(outcomes["store_unavailable"])

    def count_lists(self, batch: Sequence[ListAnswered]) -> None:
        """A recorder sink for the response path: lists filtered or refused, entries removed."""
        for answered in batch:
            self._child(self.list_answers, answered.method, answered.result, answered.reason).inc()
            if answered.counts.removed:
                self._child(self.list_entries_removed, answered.method).inc(answered.counts.removed)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`labels()` takes a lock and builds a key: each series is looked up once."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def serving(self, version: str) -> None:
        if self._version is not None and self._version != version:
            self.policy_info.labels(version=self._version).set(0)  # multiprocess files keep values
            self.policy_info.remove(self._version)
        self._version = version
        self.policy_info.labels(version=version).set(1)


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """The sum of the metrics the workers write into `directory` (their PROMETHEUS_MULTIPROC_DIR)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return registry
