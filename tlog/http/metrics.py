"""Every Prometheus metric of the service, on a registry of its own per app.

The append path's metrics are tlog.log.metrics.AppendMetrics (the sequencer records them);
they are registered first, so /metrics lists them before the request metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        # With --read-database-url (tlog.store.routing): reads the standby answered, reads
        # sent to the primary by reason (behind: about a size it has not replayed;
        # unavailable: it is marked down; error: it failed this read), and its lag.
        self.standby_reads = Counter(
            "tlog_standby_reads", "Reads answered by the hot standby", registry=self.registry)
        self.standby_fallbacks = Counter(
            "tlog_standby_fallbacks", "Reads sent to the primary instead of the standby",
            ["reason"], registry=self.registry)
        # The periodic check that the database is the same one (tlog.http.app, every few
        # seconds): 1 when it answered, 0 when it was unavailable.
        self.database_up = Gauge(
            "tlog_database_up", "Whether the database answered the last periodic check",
            registry=self.registry)
        self.standby_lag = Gauge(
            "tlog_standby_lag_entries", "Tree sizes the standby's replay is behind the "
            "largest published size this process knows", registry=self.registry)

    def count_standby(self, where: str) -> None:
        """Count one routed read: "standby", or the reason it went to the primary."""
        if where == "standby":
            self.standby_reads.inc()
        else:
            self.standby_fallbacks.labels(where).inc()
