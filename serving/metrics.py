"""Prometheus metrics of the lookup server (a private registry, rendered on GET /metrics).

``skewless_requests_total{endpoint,code}``, ``skewless_request_seconds{endpoint}``,
``skewless_redis_errors_total``, ``skewless_feature_values_total{status}`` (the missing-key
rate is ``NOT_FOUND / sum``), ``skewless_entities_total`` and the feature log's
``skewless_log_rows_total`` / ``skewless_log_dropped_total``. With ``--workers > 1`` each
worker process exposes its own counters (scrape per worker or sum).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_STATUS_LABELS = ("INVALID", "PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE")


class Metrics:
    """Counters and histograms; per-label children are bound once, off the request path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "skewless_requests", "HTTP requests", ["endpoint", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "skewless_request_seconds",
            "Request latency (seconds)",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "skewless_redis_errors", "Redis reads that failed or timed out", registry=self.registry
        )
        self.values = Counter(
            "skewless_feature_values",
            "Feature values returned, by status",
            ["status"],
            registry=self.registry,
        )
        self.entities = Counter("skewless_entities", "Entities looked up", registry=self.registry)
        self.log_rows = Counter(
            "skewless_log_rows", "Rows written to feature logs", registry=self.registry
        )
        self.log_dropped = Counter(
            "skewless_log_dropped",
            "Sampled requests dropped because the log queue was full or writing failed",
            registry=self.registry,
        )
        self._status = [self.values.labels(s) for s in _STATUS_LABELS]
        self._pending = [0] * len(_STATUS_LABELS)
        self._pending_entities = 0
        self._requests: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        key = (endpoint, code)
        c = self._requests.get(key)
        if c is None:
            c = self._requests[key] = self.requests.labels(endpoint, str(code))
        c.inc()
        h = self._latency.get(endpoint)
        if h is None:
            h = self._latency[endpoint] = self.latency.labels(endpoint)
        h.observe(seconds)

    def count_statuses(self, statuses: Sequence[list[int]], n_entities: int) -> None:
        """Tally statuses in plain ints (the Prometheus counters take a lock per ``inc``);
        :meth:`render` moves the tallies into the counters."""
        counts = self._pending
        for col in statuses:
            present = col.count(1)  # the usual case, counted in C
            counts[1] += present
            if present != len(col):
                for s in col:
                    if s != 1:
                        counts[s] += 1
        self._pending_entities += n_entities

    def _flush(self) -> None:
        counts = self._pending
        for s, c in enumerate(counts):
            if c:
                self._status[s].inc(c)
                counts[s] = 0
        if self._pending_entities:
            self.entities.inc(self._pending_entities)
            self._pending_entities = 0

    def render(self) -> bytes:
        self._flush()
        return generate_latest(self.registry)
