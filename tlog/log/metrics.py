"""The append path's metrics: batch sizes and times, failed batches, the tree size, the
submissions waiting and when a checkpoint was last signed.

They live here, below tlog.http, because the sequencer records them and the log layer never
imports the HTTP layer. The HTTP app creates them on its own registry (tlog.http.metrics)
and serves them at /metrics with its request metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCIES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class AppendMetrics:
    """What the sequencer records, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_size = Histogram(
            "tlog_append_batch_size", "Submissions per append batch", buckets=BATCH_SIZES,
            registry=registry)
        self.batch_seconds = Histogram(
            "tlog_append_batch_seconds", "Time to append one batch, lock to commit and proofs",
            buckets=LATENCIES, registry=registry)
        # Where a batch's time goes, for profiles and for operators: prepare (lock, edge,
        # registry, dedup), map (package states), write (entries, tiles, checkpoint),
        # commit, receipts (proofs after COMMIT).
        self.phase_seconds = Histogram(
            "tlog_append_phase_seconds", "Time of each phase of an append batch", ["phase"],
            buckets=LATENCIES, registry=registry)
        self.append_failures = Counter(
            "tlog_append_failures", "Append batches that failed and were not committed",
            registry=registry)
        self.tree_size = Gauge(
            "tlog_tree_size", "Size of the latest checkpoint this process published or saw",
            registry=registry)
        # With `waiting`, what tells a stalled log from an idle one: submissions waiting and
        # no checkpoint signed for a while (deploy/prometheus/alerts.yml). Set by the app
        # from the sequencer's count when it serves (Gauge.set_function).
        self.waiting = Gauge(
            "tlog_append_waiting", "Submissions queued and not yet in an append batch",
            registry=registry)
        self.checkpoint_time = Gauge(
            "tlog_checkpoint_timestamp_seconds", "UNIX time of the latest checkpoint this "
            "process signed and committed (0: none since it started)", registry=registry)

    def checkpoint(self, size: int) -> None:
        """A checkpoint of `size` leaves this process signed has committed."""
        self.tree_size.set(size)
        self.checkpoint_time.set_to_current_time()


class WitnessMetrics:
    """What the witness task records (tlog.log.witness): its requests by witness and
    result, each witness's cosigned size and last success, fork alarms, and the size of
    the latest checkpoint published with a quorum of cosignatures."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tlog_witness_requests", "add-checkpoint requests to witnesses by result "
            "(cosigned, conflict, fork, error)", ["witness", "result"], registry=registry)
        self.size = Gauge(
            "tlog_witness_size", "The latest tree size each witness cosigned", ["witness"],
            registry=registry)
        self.last_success = Gauge(
            "tlog_witness_last_success_timestamp_seconds",
            "UNIX time of each witness's last cosignature", ["witness"], registry=registry)
        self.fork_alarms = Counter(
            "tlog_witness_fork_alarms", "Witnesses that saw a tree this log never integrated "
            "(a split view or a leaked log key): look at once", ["witness"], registry=registry)
        self.published_size = Gauge(
            "tlog_published_tree_size", "Size of the latest checkpoint published with a "
            "quorum of cosignatures", registry=registry)
        self.publish_failures = Counter(
            "tlog_publish_self_check_failures", "Cosigned notes that failed the log's own "
            "check under its policy and were not published", registry=registry)
