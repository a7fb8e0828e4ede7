"""Every Prometheus metric of the service, on a registry of its own per app.

The append path's metrics are tlog.log.metrics.AppendMetrics (the sequencer records them);
they are registered first, so /metrics lists them before the request metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from tlog.log.metrics import LATENCIES, AppendMetrics, WitnessMetrics


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.append = AppendMetrics(self.registry)
        self.witness = WitnessMetrics(self.registry)
        self.requests = Counter(
            "tlog_http_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry)
        self.refusals = Counter(
            "tlog_refusals", "Error answers by error code (quota, token, registry, input...)",
            ["code"], registry=self.registry)
        self.request_seconds = Histogram(
            "tlog_http_request_seconds", "HTTP request latency by route", ["route"],
            buckets=LATENCIES, registry=self.registry)
