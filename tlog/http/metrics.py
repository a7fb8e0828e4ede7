"""Every Prometheus metric of the service, on a registry of its own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCIES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batch_size = Histogram(
            "tlog_append_batch_size", "Submissions per append batch", buckets=BATCH_SIZES,
            registry=self.registry)
        self.batch_seconds = Histogram(
            "tlog_append_batch_seconds", "Time to append one batch, lock to commit and proofs",
            buckets=LATENCIES, registry=self.registry)
        self.append_failures = Counter(
            "tlog_append_failures", "Append batches that failed and were not committed",
            registry=self.registry)
        self.tree_size = Gauge(
            "tlog_tree_size", "Size of the latest checkpoint this process published or saw",
            registry=self.registry)
        self.requests = Counter(
            "tlog_http_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry)
        self.refusals = Counter(
            "tlog_refusals", "Error answers by error code (quota, token, registry, input...)",
            ["code"], registry=self.registry)
        self.request_seconds = Histogram(
            "tlog_http_request_seconds", "HTTP request latency by route", ["route"],
            buckets=LATENCIES, registry=self.registry)
