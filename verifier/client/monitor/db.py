"""The monitor's state directory file, DIR/monitor.db: one SQLite database.

It holds the position (the log's origin, the next entry to scan, the next seq and the tree's
right edge over the entries scanned), the per-package knowledge (watch.PackageState), the
artifact digest and first index of every (package, version), the replayed publisher registry,
the package states recomputed from the entries (maproots.MapWatch: a snapshot of the states
now and then, the records applied since in a journal; the states are rebuilt from both and
the map from their hashes on load), and an outbox of event lines committed but maybe not
printed yet.
Every save is one durable transaction (synchronous=FULL, WAL): run.Monitor commits a group's
knowledge together with its events, prints them, then clears the outbox, which is what makes
delivery at least once.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.client.monitor.halts import Intent
from verifier.client.monitor.summary import lines_text
from verifier.client.monitor.watch import PackageState, Watcher
from verifier.errors import UsageError
from verifier.protocol.map_replay import MapReplay, record_from_json, record_json
from verifier.protocol.merkle import RightEdge

DB_FILE = "monitor.db"
DB_FORMAT = 1

# Each new file keeps this text in its sqlite_master: it stays byte for byte as first released
# (its "Edge" is merkle.RightEdge).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS position (
    onerow     INTEGER PRIMARY KEY CHECK (onerow = 1),
    format     INTEGER NOT NULL,   -- DB_FORMAT of the code that created it
    origin     TEXT,               -- the log's origin, set on the first round
    next_index INTEGER NOT NULL,   -- first entry not yet scanned
    next_seq   INTEGER NOT NULL,   -- seq of the next event
    edge       TEXT NOT NULL       -- JSON list of the hex hashes of Edge(next_index)
);
CREATE TABLE IF NOT EXISTS packages (
    name      TEXT PRIMARY KEY,
    knowledge TEXT NOT NULL        -- PackageState.to_json()
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    name   TEXT PRIMARY KEY,       -- "package version"
    digest TEXT NOT NULL,          -- artifacts_digest of its first entry
    idx    INTEGER NOT NULL        -- that entry's index
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry (
    onerow INTEGER PRIMARY KEY CHECK (onerow = 1),
    state  TEXT NOT NULL           -- Registry.to_json(): the publisher registry replayed so far
);
CREATE TABLE IF NOT EXISTS outbox (
    first_seq INTEGER PRIMARY KEY, -- events committed but maybe not printed yet:
    lines     TEXT NOT NULL        -- their JSON lines, seq first_seq, first_seq + 1, ...
);
"""
# Added later, apart from _SCHEMA (which stays as first released): the --package globs of the
# last run, so a run with other globs can say that they apply to new entries only.
_SCHEMA_WATCHED = """
CREATE TABLE IF NOT EXISTS watched (
    onerow   INTEGER PRIMARY KEY CHECK (onerow = 1),
    patterns TEXT NOT NULL         -- JSON list of the --package globs of the last run
);
"""
# Added with --halt-on: the halts the monitor decided (halts.Intent), one per version ever.
_SCHEMA_HALTS = """
CREATE TABLE IF NOT EXISTS halts (
    name    TEXT PRIMARY KEY,      -- "package version"
    package TEXT NOT NULL,
    version TEXT NOT NULL,
    reason  TEXT NOT NULL,         -- the signed reason: a resubmission is the same entry
    result  TEXT                   -- NULL until the log answered; then the halt event's
) WITHOUT ROWID;                   -- members (logged or refused), as JSON
"""
# Added with the package state map (maproots): each package's state over the entries scanned
# up to the last map-root entry, the records scanned since it, and whether the states are
# known at all (a file that had scanned entries before this table existed does not know them).
_SCHEMA_MAP = """
CREATE TABLE IF NOT EXISTS map_states (
    package TEXT PRIMARY KEY,
    state   TEXT NOT NULL          -- the package state (package_state), JSON
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS map_position (
    onerow    INTEGER PRIMARY KEY CHECK (onerow = 1),
    known     INTEGER NOT NULL,    -- 1: the states cover every entry scanned
    last_root INTEGER,             -- index of the last map-root entry scanned
    pending   TEXT NOT NULL        -- JSON list of map_replay.record_json since it
);
INSERT OR IGNORE INTO map_position SELECT 1, next_index = 0, NULL, '[]' FROM position;
"""
# Added later: every package's state is rewritten only now and then (a snapshot in
# map_states), since a state lists every release of its package; the records applied since
# the snapshot are kept here instead, and a run that loads the state applies them again.
_SCHEMA_MAP_JOURNAL = """
CREATE TABLE IF NOT EXISTS map_journal (
    idx    INTEGER PRIMARY KEY,    -- entry index of the record
    record TEXT NOT NULL           -- map_replay.record_json
);
"""
# Snapshots of the states are spaced so that writing them takes at most about 1 / this of
# the time (a snapshot writes all of a busy log's states: it grows with the log).
SNAPSHOT_SPACING = 20


@dataclass
class Loaded:
    """What MonitorDB.load reads back: everything a run resumes from."""

    origin: str | None
    next_index: int
    next_seq: int
    edge: RightEdge
    packages: dict[str, PackageState]
    outbox: list[str]
    registry: dict[str, Any]
    replay: MapReplay | None = None  # None: the package states are not known (see _SCHEMA_MAP)


class MonitorDB:
    """The monitor's state in one SQLite file; every save is one durable transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._snapshot_cost = 0.0  # seconds the last snapshot of the states took, and when
        self._snapshot_at = time.monotonic()
        try:
            self.conn = sqlite3.connect(path, isolation_level=None)
            # For a new file only (no-op otherwise): a group's commit writes some 10 MB of
            # pages to the WAL, one write per page; bigger pages cut its time by a third.
            self.conn.execute("PRAGMA page_size=16384")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            # Each commit dirties pages all over the versions index: keep them cached, and
            # let the WAL grow to ~40 MB before copying it back into the database.
            self.conn.execute("PRAGMA cache_size=-32768")
            self.conn.execute("PRAGMA wal_autocheckpoint=10000")
            # The state is public log data: deleting the outbox need not overwrite its pages
            # with zeros (a build default of some SQLite packages), which doubled its cost.
            self.conn.execute("PRAGMA secure_delete=OFF")
            self.conn.executescript(_SCHEMA)
            self.conn.executescript(_SCHEMA_WATCHED)
            self.conn.executescript(_SCHEMA_HALTS)
            self.conn.execute("INSERT OR IGNORE INTO position VALUES (1, ?, NULL, 0, 1, '[]')",
                              (DB_FORMAT,))
            self.conn.executescript(_SCHEMA_MAP)
            self.conn.executescript(_SCHEMA_MAP_JOURNAL)
        except sqlite3.Error as exc:
            raise UsageError(f"couldn't open the monitor state {path}: {exc}") from exc

    def __enter__(self) -> MonitorDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def load(self) -> Loaded:
        try:
            fmt, origin, next_index, next_seq, edge = self.conn.execute(
                "SELECT format, origin, next_index, next_seq, edge FROM position").fetchone()
            if fmt != DB_FORMAT:
                raise UsageError(f"{self.path} has format {fmt}; this monitor reads {DB_FORMAT}")
            packages = {name: PackageState.from_json(json.loads(text)) for name, text in
                        self.conn.execute("SELECT name, knowledge FROM packages")}
            outbox = [line for (lines,) in
                      self.conn.execute("SELECT lines FROM outbox ORDER BY first_seq")
                      for line in lines.splitlines()]
            row = self.conn.execute("SELECT state FROM registry").fetchone()
            return Loaded(origin, next_index, next_seq,
                          RightEdge(next_index, [bytes.fromhex(h) for h in json.loads(edge)]),
                          packages, outbox, json.loads(row[0]) if row else {},
                          self._load_map())
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{self.path} is not a usable monitor state: {exc}") from exc

    def _load_map(self) -> MapReplay | None:
        known, last_root, pending = self.conn.execute(
            "SELECT known, last_root, pending FROM map_position").fetchone()
        if not known:
            return None
        states = {p: json.loads(text) for p, text in
                  self.conn.execute("SELECT package, state FROM map_states")}
        journal = [record_from_json(json.loads(text)) for (text,) in
                   self.conn.execute("SELECT record FROM map_journal ORDER BY idx")]
        return MapReplay.restore(
            states, [*journal, *(record_from_json(r) for r in json.loads(pending))], last_root)

    def swap_watched(self, patterns: Sequence[str]) -> list[str] | None:
        """Store the run's --package globs; return the previous run's (None on the first)."""
        with self._transaction() as c:
            row = c.execute("SELECT patterns FROM watched").fetchone()
            c.execute("INSERT OR REPLACE INTO watched VALUES (1, ?)", (json.dumps(list(patterns)),))
        return None if row is None else [str(p) for p in json.loads(row[0])]

    def lookup_versions(self, names: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Stored (digest, first index) of those of `names` seen before."""
        if not names:
            return {}
        rows = self.conn.execute(
            "SELECT name, digest, idx FROM versions WHERE name IN "
            "(SELECT value FROM json_each(?))", (json.dumps(names),))
        return {name: (digest, idx) for name, digest, idx in rows}

    def save(self, watcher: Watcher, edge: RightEdge, origin: str, lines: Sequence[str],
             halts: Sequence[Intent] = (), replay: MapReplay | None = None) -> None:
        """Commit the watcher's changes, the position, the next seq, `lines` to the outbox and
        the halt intents the alerts call for (in the same transaction: an alert's halt is
        decided exactly when the alert is)."""
        packages, versions = watcher.take_changes()
        started, snapshot = time.monotonic(), False
        with self._transaction() as c:
            self._add_halts(c, halts)
            # Sorted: neighbouring inserts then share index pages (about a fifth faster).
            c.executemany("INSERT INTO versions VALUES (?, ?, ?)",
                          sorted((name, d, i) for name, (d, i) in versions.items()))
            c.executemany("INSERT OR REPLACE INTO packages VALUES (?, ?)",
                          [(name, json.dumps(p.to_json())) for name, p in packages.items()])
            if watcher.registry_changed:
                c.execute("INSERT OR REPLACE INTO registry VALUES (1, ?)",
                          (json.dumps(watcher.registry.to_json()),))
                watcher.registry_changed = False
            if replay is not None:
                snapshot = self._save_map(c, replay)
            c.execute("UPDATE position SET origin = ?, next_index = ?, next_seq = ?, edge = ?",
                      (origin, watcher.next_index, watcher.next_seq,
                       json.dumps([h.hex() for h in edge.hashes])))
            self._add_outbox(c, watcher.next_seq, lines)
        if snapshot:  # its cost is mostly the commit's: the states written to the WAL
            self._snapshot_at = time.monotonic()
            self._snapshot_cost = self._snapshot_at - started

    def _save_map(self, c: sqlite3.Connection, replay: MapReplay) -> bool:
        """Store the records applied since the last snapshot of the states (the journal), or
        a new snapshot when one is due (returned: True); then the position in the map and
        its pending records."""
        snapshot = time.monotonic() - self._snapshot_at >= SNAPSHOT_SPACING * self._snapshot_cost
        if snapshot:
            # The JCS text the replay keeps from hashing: not every release encoded again.
            c.executemany("INSERT OR REPLACE INTO map_states VALUES (?, ?)",
                          [(p, replay.state_json(p)) for p in replay.take_changed()])
            c.execute("DELETE FROM map_journal")
        else:
            # OR REPLACE: a run that restored from the journal applies its records again.
            c.executemany("INSERT OR REPLACE INTO map_journal VALUES (?, ?)",
                          [(r.index, json.dumps(record_json(r))) for r in replay.take_journal()])
        c.execute("UPDATE map_position SET last_root = ?, pending = ?",
                  (replay.last_root, json.dumps([record_json(r) for r in replay.pending])))
        return snapshot

    def save_alerts(self, next_seq: int, lines: Sequence[str]) -> None:
        """Commit events that change no knowledge (checkpoint alerts) and the next seq."""
        with self._transaction() as c:
            c.execute("UPDATE position SET next_seq = ?", (next_seq,))
            self._add_outbox(c, next_seq, lines)

    @staticmethod
    def _add_outbox(c: sqlite3.Connection, next_seq: int, lines: Sequence[str]) -> None:
        if lines:
            c.execute("INSERT INTO outbox VALUES (?, ?)",
                      (next_seq - len(lines), lines_text(lines)))

    def add_halts(self, halts: Sequence[Intent]) -> None:
        """Commit halt intents (versions that already have one keep it)."""
        with self._transaction() as c:
            self._add_halts(c, halts)

    @staticmethod
    def _add_halts(c: sqlite3.Connection, halts: Sequence[Intent]) -> None:
        c.executemany("INSERT OR IGNORE INTO halts VALUES (?, ?, ?, ?, NULL)",
                      [(h.name, h.package, h.version, h.reason) for h in halts])

    def halted(self, names: Sequence[str]) -> set[str]:
        """Those of `names` ("package version") that have a halt intent."""
        rows = self.conn.execute("SELECT name FROM halts WHERE name IN "
                                 "(SELECT value FROM json_each(?))", (json.dumps(list(names)),))
        return {name for (name,) in rows}

    def pending_halts(self) -> list[Intent]:
        """Halt intents the log has not answered yet, in the order of their names."""
        rows = self.conn.execute("SELECT package, version, reason FROM halts "
                                 "WHERE result IS NULL ORDER BY name")
        return [Intent(p, v, r) for p, v, r in rows]

    def finish_halt(self, intent: Intent, result: dict[str, Any], next_seq: int,
                    line: str) -> None:
        """Record the log's answer to a halt, with its event in the outbox and the next seq."""
        with self._transaction() as c:
            c.execute("UPDATE halts SET result = ? WHERE name = ?",
                      (json.dumps(result, sort_keys=True), intent.name))
            c.execute("UPDATE position SET next_seq = ?", (next_seq,))
            self._add_outbox(c, next_seq, [line])

    def clear_outbox(self) -> None:
        with self._transaction() as c:
            c.execute("DELETE FROM outbox")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
