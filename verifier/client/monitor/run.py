"""The monitor's driver: rounds of advance, scan, judge, commit and print over one state directory.

Each run (each round with --follow) fetches the log's checkpoint, proves it consistent with
the one stored in DIR, scans every entry from where the previous run stopped (from 0 on the
first run: a backfill) up to the checkpoint's size, and writes events to stdout as JSON Lines
(see watch). Entries are validated (schema, canonical form, publisher signature) in worker
processes (summary.summarize_fetched); every scanned prefix of the log is proven to be a prefix
of the signed checkpoint before any event about it is written, so no event ever describes an
entry the log did not commit to.

Persistence (DIR/monitor.db, see db; one transaction per group of GROUP_BUNDLES bundles):
a group is committed with its events in the outbox, then the events are printed and flushed
(and fsynced when stdout is a regular file), then the outbox is cleared in a second commit; a
new run prints any outbox first. So a crash or kill
- before the first commit: the group is scanned again; its events were never printed;
- between the first commit and the printing: the next run prints them (same seq);
- between the printing and the second commit: the next run prints them again with the
  same seq. Delivery is at least once: consumers drop any event whose seq is not above the
  last one they handled. No entry is skipped and no event is lost in any case. (Evidence
  of an invalid entry is written before the first commit: a crash there may leave a second
  copy of it in DIR/evidence/.)

Failures: an entry failing validation raises VerificationFailed and a misbehaving log
LogMisbehaviour (after its alert is printed, with evidence in DIR/evidence/); transport errors
raise TransportError, except with --follow, where they are reported on stderr and retried next
round. SIGINT or SIGTERM (`Stop`) finish the current group and end the run normally.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar

from verifier.client.log import LogClient
from verifier.client.monitor.db import MonitorDB
from verifier.client.monitor.halts import (
    HALT,
    HaltConfig,
    Intent,
    check_publisher,
    intents,
    read_external,
    submit_halt,
)
from verifier.client.monitor.maproots import MapWatch
from verifier.client.monitor.metrics import Metrics
from verifier.client.monitor.summary import (
    Event,
    Seen,
    Summary,
    encode,
    lines_text,
    summarize_fetched,
)
from verifier.client.monitor.watch import (
    CHECKPOINT_INCONSISTENT,
    CHECKPOINT_STALE,
    INVALID_ENTRY,
    MAP_ROOT_MISMATCH,
    WITNESS_VIEW_DISAGREES,
    Watcher,
)
from verifier.client.monitor.witnesses import WitnessChecker
from verifier.client.scan import map_bundles, worker_signals
from verifier.client.statedir import StateDir
from verifier.client.tracking import advance
from verifier.errors import EXIT_OK, LogMisbehaviour, TransportError, UsageError, VerificationFailed
from verifier.protocol.merkle import ProofError, RightEdge, verify_consistency
from verifier.protocol.note import Verifier
from verifier.protocol.policy import AgeError
from verifier.protocol.receipt import format_tlog_proof
from verifier.protocol.registry import Registry
from verifier.protocol.state import Trusted, evidence
from verifier.protocol.trust import LogTrust
from verifier.protocol.versions import SchemeMap

GROUP_BUNDLES = 64  # bundles (of 256 entries) per commit
IN_FLIGHT = 4  # tasks (of scan.BUNDLES_PER_TASK bundles) queued per worker: they keep
# validating while a group commits

T = TypeVar("T")


class Stop:
    """SIGINT/SIGTERM handling: the signal only sets `requested`; the driver stops between
    groups. Worker processes reset it (worker_signals).
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


class Monitor:
    """One monitor over one state directory: rounds of advance, scan, commit, print."""

    def __init__(self, client: LogClient, trust: LogTrust, state: StateDir, db: MonitorDB,
                 patterns: Sequence[str], workers: int, out: TextIO, metrics: Metrics,
                 stop: Stop, admin_keys: Sequence[Verifier] | None = None,
                 witnesses: WitnessChecker | None = None,
                 schemes: SchemeMap | None = None, halts: HaltConfig | None = None) -> None:
        self.client, self.trust, self.state, self.db = client, trust, state, db
        self.halts = halts
        self._halt_error: TransportError | None = None
        self.witnesses = witnesses
        self.workers, self.out, self.metrics, self.stop = workers, out, metrics, stop
        loaded = db.load()
        self.origin = loaded.origin
        self.edge = loaded.edge
        registry = Registry(admin_keys or None, enforce=False)
        registry.load_json(loaded.registry)
        self.watcher = Watcher(patterns, next_index=loaded.next_index,
                               next_seq=loaded.next_seq, packages=loaded.packages,
                               registry=registry, schemes=schemes)
        self.maps = MapWatch(loaded.replay, loaded.next_index)
        self._unprinted = loaded.outbox
        self._stale_alerted = False
        self._last: Seen | None = None  # the last entry scanned by this run
        self._printed = 0
        self._note_changed_globs(db.swap_watched(patterns), list(patterns), loaded.next_index)

    @staticmethod
    def _note_changed_globs(before: list[str] | None, now: list[str], next_index: int) -> None:
        """Say so when the --package globs differ from the last run's: entries scanned before
        are not scanned again, so the new globs apply from entry `next_index` on."""
        if before is None or sorted(before) == sorted(now) or next_index == 0:
            return
        print(f"tlog-verify monitor: --package changed from {_globs(before)} to {_globs(now)}; "
              f"entries 0..{next_index - 1} were scanned before and are not reported again: "
              "the new globs apply from entry "
              f"{next_index} on (a new --state directory scans the whole log)",
              file=sys.stderr, flush=True)

    def run(self, follow: bool, interval: float) -> int:
        """Print what a previous run left unprinted, then scan once or until stopped."""
        if self._unprinted:
            self._print(self._unprinted)
            self.db.clear_outbox()
        while not self.stop.requested:
            try:
                self.round()
                self._stale_alerted = False
            except TransportError as exc:
                if not follow:
                    raise
                print(f"tlog-verify monitor: {exc}; retrying in {interval:g} s",
                      file=sys.stderr, flush=True)
            except VerificationFailed as exc:
                # A stale view (--max-age) while following is an alert, once per episode, and
                # the monitor goes on: the log may be frozen, or its witnesses only slow.
                if not (follow and isinstance(exc.__cause__, AgeError)):
                    raise
                if not self._stale_alerted:
                    self._alert_now([self.watcher.alert(CHECKPOINT_STALE, str(exc), None)])
                    self._stale_alerted = True
            if not follow:
                break
            self.stop.sleep(interval)
        return EXIT_OK

    def round(self) -> None:
        """Prove the log's checkpoint consistent, then scan and report up to its size."""
        try:
            trusted = advance(self.client, self.trust, self.state)
        except LogMisbehaviour as exc:
            self._report(exc)
            raise
        self._check_origin(trusted)
        if self.witnesses is not None:
            self._check_witnesses(trusted)
        self.metrics.tree_size.set(trusted.size)
        start, printed = self.watcher.next_index, self._printed
        self._scan(trusted)
        if self.watcher.next_index == trusted.size:  # not stopped half way
            self._check_map_root(trusted)
        if self.halts is not None:
            self._external_halts()
            self._run_halts()
            if self._halt_error is not None:
                error, self._halt_error = self._halt_error, None
                raise error
        self.metrics.last_success.set(time.time())
        if self._printed == printed:  # silence would read like a monitor that did nothing
            scanned = self.watcher.next_index - start
            what = (f"{scanned} new entries scanned, none to report" if scanned
                    else "no new entries")
            print(f"tlog-verify monitor: {what} (the log has {trusted.size} entries)",
                  file=sys.stderr, flush=True)

    def _check_origin(self, trusted: Trusted) -> None:
        origin = trusted.checkpoint.origin
        if self.origin is None:
            self.origin = origin
        elif origin != self.origin:
            raise UsageError(f"{self.db.path} follows {self.origin}, not {origin}")

    def _scan(self, trusted: Trusted) -> None:
        start = self.watcher.next_index
        if trusted.size < start:
            raise self._report(self._evidence(
                f"rollback: the log's checkpoint has size {trusted.size}, but this monitor "
                f"already scanned {start} entries of it", trusted, self.edge, None))
        if trusted.size == start:
            self._prove_prefix(self.edge, trusted)
            return
        results = map_bundles(self.client, trusted.size, start, summarize_fetched, self.workers,
                              in_flight=IN_FLIGHT * self.workers, initializer=worker_signals)
        with _closing(results):  # stop fetching and validating on any exit
            for group in _groups(results, GROUP_BUNDLES):
                self._process(group, trusted)
                if self.stop.requested:
                    return

    def _process(self, group: list[Summary], trusted: Trusted) -> None:
        """Prove, judge, commit, print and clear one group of consecutive entries."""
        edge = self.edge.copy()
        for part in group:
            edge.extend(part.first, len(part.entries), part.nodes)
        self._prove_prefix(edge, trusted)  # no event about an entry the log did not sign
        seen = [s for part in group for s in part.entries]
        invalid = [s for s in seen if s.error is not None]
        proofs = {s.entry_index: self.client.inclusion_proof(s.entry_index, trusted.size)
                  for s in invalid}
        # Network is done: from here on, a failure is fatal, never retried in this process.
        now = datetime.now(UTC)
        watcher = self.watcher
        watcher.preload(self.db.lookup_versions(watcher.stored_version_names(seen)))
        events: list[str | Event] = []
        for s in seen:
            events += watcher.report(s, now)
            events += self.maps.check(s, watcher, self.state, trusted)
        self._last = seen[-1]
        where = {s.entry_index: self._invalid_evidence(s, proofs[s.entry_index], trusted)
                 for s in invalid}
        lines = [e if isinstance(e, str) else _encode_alert(e, where) for e in events]
        halts = self._alert_halts(events, seen)
        # durability point 1 (with the halts decided: the intent is durable before any submission)
        self.db.save(watcher, edge, trusted.checkpoint.origin, lines, halts, self.maps.replay)
        self.edge = edge
        watcher.forget_versions()
        self.metrics.entries.inc(len(seen))
        self.metrics.count(events)
        self._print(lines)  # durability point 2: printed (a crash before this reprints them)
        self.db.clear_outbox()  # durability point 3: a crash before this prints them again
        if halts:
            self._run_halts()  # before an invalid entry ends the run
        if invalid:
            first = invalid[0]
            raise VerificationFailed(f"entry {first.entry_index} of the log fails validation: "
                                     f"{first.error}; evidence saved in {where[first.entry_index]}")
        wrong = [e for e in events if isinstance(e, dict) and e.get("alert") == MAP_ROOT_MISMATCH]
        if wrong:
            raise LogMisbehaviour(str(wrong[0]["message"]), {})

    def _check_map_root(self, trusted: Trusted) -> None:
        """Alert map_root_missing, and raise LogMisbehaviour, when the scanned checkpoint
        does not end with a map-root entry."""
        alert = self.maps.missing(trusted, self._last, self.watcher, self.state)
        if alert is not None:
            self._alert_now([alert])
            raise LogMisbehaviour(str(alert["message"]), {})

    def _alert_halts(self, events: list[str | Event], seen: list[Seen]) -> list[Intent]:
        """The halt intents the group's alerts call for (--halt-on), not decided before."""
        if self.halts is None:
            return []
        found = intents(events, seen, self.halts.rules)
        for intent in found:
            check_publisher(self.halts, intent, self.watcher.packages.get(intent.package))
        done = self.db.halted([i.name for i in found])
        return [i for i in found if i.name not in done]

    def _external_halts(self) -> None:
        """Record an intent for each version an external signal file names whose release the
        monitor has seen logged (the others wait for it)."""
        assert self.halts is not None
        for path in self.halts.external:
            found = read_external(path)
            names = [i.name for i in found]
            logged, done = self.db.lookup_versions(names), self.db.halted(names)
            new = [i for i in found if i.name in logged and i.name not in done]
            for intent in new:
                check_publisher(self.halts, intent, self.watcher.packages.get(intent.package))
            if new:
                self.db.add_halts(new)

    def _run_halts(self) -> None:
        """Submit every pending halt intent, record the log's answer and print it as a halt
        event. A refusal is final (printed, never retried); a transport error leaves the
        intent pending for the next round or run; LogMisbehaviour ends the run (exit 1)."""
        assert self.halts is not None
        for intent in self.db.pending_halts():
            try:
                result = submit_halt(self.halts, self.trust, intent)
            except TransportError as exc:
                # Raised by round() once the scan is done: exit 3, or with --follow a retry
                # next round (an invalid entry's exit 1 takes precedence).
                self._halt_error = TransportError(f"halt of {intent.name} not submitted, "
                                                  f"still pending: {exc}")
                return
            event: Event = {"type": HALT, "seq": self.watcher.next_seq, **result}
            self.watcher.next_seq += 1
            line = encode(event)
            self.db.finish_halt(intent, result, self.watcher.next_seq, line)  # point 1
            self._print([line])  # point 2
            self.db.clear_outbox()  # point 3

    def _prove_prefix(self, edge: RightEdge, trusted: Trusted) -> None:
        """The leaves scanned so far must be the first edge.size leaves of the signed tree."""
        size = trusted.size
        proof = self.client.consistency_proof(edge.size, size) if 0 < edge.size < size else []
        try:
            verify_consistency(edge.size, size, edge.root(), trusted.root, proof)
        except ProofError as exc:
            raise self._report(self._evidence(
                f"the log's entries 0..{edge.size - 1} do not hash to a prefix of its "
                f"checkpoint of size {size}: {exc}", trusted, edge, proof)) from exc

    def _evidence(self, reason: str, trusted: Trusted, edge: RightEdge,
                  proof: Sequence[bytes] | None) -> LogMisbehaviour:
        files = evidence(reason, checkpoint=trusted.note, computed_root=(edge.size, edge.root()),
                         proof=None if proof is None else (edge.size, trusted.size, proof))
        where = self.state.save_evidence(reason, files)
        return LogMisbehaviour(f"{reason}; evidence saved in {where}", files)

    def _invalid_evidence(self, seen: Seen, proof: list[bytes], trusted: Trusted) -> Path:
        index = seen.entry_index
        reason = f"entry {index} fails validation: {seen.error}"
        files = evidence(reason, entries={index: seen.leaf or b""}, entry_proofs={
            index: format_tlog_proof(index, proof, trusted.note)})
        return self.state.save_evidence(f"invalid entry {index}", files)

    def _check_witnesses(self, trusted: Trusted) -> None:
        """Alert (witness_view_disagrees, evidence saved) and raise LogMisbehaviour when a
        witness's cosigned view of the log and the log's checkpoint are not consistent."""
        assert self.witnesses is not None
        found = self.witnesses.check(self.client, trusted, _warn)
        if not found:
            return
        events = []
        for d in found:
            where = self.state.save_evidence(f"witness {d.witness} disagrees", d.evidence)
            events.append(self.watcher.alert(WITNESS_VIEW_DISAGREES,
                                             f"{d.message}; evidence saved in {where}", None,
                                             witness=d.witness, evidence=str(where)))
        self._alert_now(events)
        raise LogMisbehaviour(str(events[0]["message"]), found[0].evidence)

    def _report(self, exc: LogMisbehaviour) -> LogMisbehaviour:
        """Commit and print a checkpoint_inconsistent alert for `exc`; return `exc`."""
        self._alert_now([self.watcher.alert(CHECKPOINT_INCONSISTENT, str(exc), None)])
        return exc

    def _alert_now(self, events: Sequence[Event]) -> None:
        """Commit and print alerts that concern no entry."""
        lines = [encode(e) for e in events]
        self.db.save_alerts(self.watcher.next_seq, lines)  # durability point 1
        self.metrics.count(list(events))
        self._print(lines)  # point 2
        self.db.clear_outbox()  # point 3

    def _print(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        self._printed += len(lines)
        self.out.write(lines_text(lines))
        self.out.flush()
        _sync_if_file(self.out)


def _warn(message: str) -> None:
    """A witness that could not be asked: said on stderr, not alerted (not the log's fault)."""
    print(f"tlog-verify monitor: warning: {message}", file=sys.stderr, flush=True)


def _sync_if_file(out: TextIO) -> None:
    """fsync stdout when it is a regular file, so printed events survive a power loss."""
    try:
        fd = out.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    except (OSError, ValueError, AttributeError):
        return  # a pipe, a terminal or an in-memory stream: nothing to sync


@contextlib.contextmanager
def _closing(it: Iterator[T]) -> Iterator[Iterator[T]]:
    """Close a generator on leaving the block, so its pools and threads stop now."""
    try:
        yield it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _encode_alert(event: Event, evidence: dict[int, Path]) -> str:
    """An alert's line; an invalid entry's names the directory holding its evidence."""
    if event["alert"] == INVALID_ENTRY:
        event["evidence"] = str(evidence[event["index"]])
    return encode(event)


def _globs(patterns: Sequence[str]) -> str:
    return " ".join(patterns) if patterns else "(all packages)"


def _groups(results: Iterable[Summary], size: int) -> Iterator[list[Summary]]:
    """`size` consecutive non-empty chunk results at a time."""
    group: list[Summary] = []
    for chunk in results:
        if not chunk.entries:
            continue
        group.append(chunk)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
