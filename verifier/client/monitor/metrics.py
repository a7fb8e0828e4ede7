"""The monitor's Prometheus metrics, served on 127.0.0.1 when --metrics-port is given.

    tlog_monitor_events_total{type, alert}          events written
    tlog_monitor_entries_scanned_total              log entries scanned
    tlog_monitor_tree_size                          size of the latest consistent checkpoint
    tlog_monitor_last_success_timestamp_seconds     end of the last round without error
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from verifier.client.monitor.summary import RELEASE, Event
from verifier.errors import UsageError


class Metrics:
    """Prometheus counters of one monitor process, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("tlog_monitor_events", "Events written, by type and alert code",
                              ["type", "alert"], registry=self.registry)
        self.entries = Counter("tlog_monitor_entries_scanned", "Log entries scanned",
                               registry=self.registry)
        self.tree_size = Gauge("tlog_monitor_tree_size",
                               "Size of the latest checkpoint proven consistent",
                               registry=self.registry)
        self.last_success = Gauge("tlog_monitor_last_success_timestamp_seconds",
                                  "When the last round finished without error (UNIX time)",
                                  registry=self.registry)
        self._server: Any = None

    def serve(self, port: int) -> None:
        """Serve /metrics on 127.0.0.1:port until close()."""
        try:
            self._server, _ = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        except OSError as exc:
            raise UsageError(f"couldn't serve metrics on 127.0.0.1:{port}: {exc}") from exc

    def count(self, events: Iterable[str | Event]) -> None:
        """Count events by type and alert code (a str is a release event's line)."""
        tally = collections.Counter((RELEASE, "") if isinstance(e, str) else
                                    (e["type"], e.get("alert", "")) for e in events)
        for labels, n in tally.items():
            self.events.labels(*labels).inc(n)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
