"""The witness's state in SQLite (STATE/witness.db): per origin the last cosigned checkpoint,
and the evidence of refused requests.

Durability: WAL with synchronous=FULL, so a COMMIT has reached the disk when it returns. The
service commits before it answers, and recovery sees exactly the committed transactions:

- the process dies before COMMIT: the transaction never happened (SQLite ignores WAL frames
  without a commit record); no cosignature left the process, the log retries;
- it dies after COMMIT, before the answer: the new checkpoint is stored but the log never got
  its cosignature; its retry with the old size gets a 409 with the new size, and a request
  from that size for the same checkpoint is cosigned again (same size, same root).

The writer: one connection, used by one thread (the service's writer thread); each
check-and-store is one BEGIN IMMEDIATE transaction, which also keeps out another process on
the same file. Readers (the read endpoint, the first look at a request's old size) use their
own read-only connection (`read_only=True`), in another thread: WAL lets them read the
last commit while the writer writes, and they never queue behind it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from verifier.protocol.witness import Stored

DB_FILE = "witness.db"
MAX_EVIDENCE_ROWS = 10_000
"""Evidence kept that is not a fork (a bad consistency proof; oldest dropped first). It is
keyed by the signed checkpoint, so only the log's signatures make new rows, and bodies are
capped by the server's --max-body: a bounded amount of disk."""
MAX_FORK_ROWS = 1_000
"""Forks kept (same size, other root). Never dropped: beyond this many, later ones are not
stored (the first ones already prove the log signed two trees of one size)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,        -- the note as submitted plus the witness's cosignature line
    timestamp INTEGER NOT NULL -- of that cosignature (see protocol.witness.cosign_time)
);
-- Keyed by the signed checkpoint (origin, size, root) and kind: a replay, or the same
-- checkpoint with other junk around it, keeps the first body (an attacker cannot make new
-- keys without the log's key).
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    origin TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    fork INTEGER NOT NULL,     -- 1: same size, other root (never dropped)
    reason TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (origin, size, root, fork)
);
"""


@dataclass(frozen=True)
class Evidence:
    """One refused request whose checkpoint the log had signed."""

    id: int
    time: int
    origin: str
    reason: str
    body: bytes


class WitnessStore:
    """The database; every method must be called from the one thread that owns it."""

    def __init__(self, state: Path, *, read_only: bool = False) -> None:
        if read_only:
            # Opened after the writer made the file and its schema; mode=ro: no writes, ever.
            uri = (state / DB_FILE).resolve().as_uri() + "?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None,
                                      check_same_thread=False, timeout=30)
            return
        state.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE ones below.
        self.db = sqlite3.connect(state / DB_FILE, isolation_level=None,
                                  check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self._retire_old_evidence()
        self.db.executescript(SCHEMA)

    def _retire_old_evidence(self) -> None:
        """The first evidence table (one row per distinct body) is renamed, not read: its
        rows had no checkpoint key. It stays in the file for whoever wants to look."""
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(evidence)")}
        if "digest" in cols:
            self.db.execute("ALTER TABLE evidence RENAME TO evidence_v1")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE (the write lock, before the read that decides) ... COMMIT; any
        exception rolls back."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def latest(self, origin: str) -> Stored | None:
        row = self.db.execute("SELECT size, root, timestamp FROM checkpoints WHERE origin = ?",
                              (origin,)).fetchone()
        return Stored(int(row[0]), bytes(row[1]), int(row[2])) if row else None

    def note(self, origin: str) -> str | None:
        """The latest cosigned note of `origin` (with the cosignature), if any."""
        row = self.db.execute("SELECT note FROM checkpoints WHERE origin = ?",
                              (origin,)).fetchone()
        return str(row[0]) if row else None

    def put(self, origin: str, stored: Stored, note: str) -> None:
        self.db.execute(
            "INSERT INTO checkpoints (origin, size, root, note, timestamp) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root,"
            " note = excluded.note, timestamp = excluded.timestamp",
            (origin, stored.size, stored.root, note, stored.timestamp))

    def keep_evidence(self, time: int, origin: str, size: int, root: bytes, reason: str,
                      body: bytes, *, fork: bool) -> None:
        """Keep a refused request whose checkpoint (`size`, `root`) the log signed, once per
        checkpoint and kind (the first body). A fork is never dropped (beyond MAX_FORK_ROWS,
        new ones are not kept); other evidence beyond MAX_EVIDENCE_ROWS drops the oldest."""
        if fork:
            (forks,) = self.db.execute("SELECT count(*) FROM evidence WHERE fork = 1").fetchone()
            if forks >= MAX_FORK_ROWS:
                return
        cur = self.db.execute(
            "INSERT OR IGNORE INTO evidence (time, origin, size, root, fork, reason, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time, origin, size, root, int(fork), reason, body))
        if cur.rowcount and not fork:
            self.db.execute(
                "DELETE FROM evidence WHERE fork = 0 AND id < (SELECT id FROM evidence"
                " WHERE fork = 0 ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (MAX_EVIDENCE_ROWS - 1,))

    def evidence(self, limit: int | None = None) -> list[Evidence]:
        """Kept evidence, oldest first (the last `limit` rows if given)."""
        rows = self.db.execute(
            "SELECT id, time, origin, reason, body FROM evidence ORDER BY id DESC LIMIT ?",
            (-1 if limit is None else limit,)).fetchall()
        return [Evidence(int(r[0]), int(r[1]), str(r[2]), str(r[3]), bytes(r[4]))
                for r in reversed(rows)]
