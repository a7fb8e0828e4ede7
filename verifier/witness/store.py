"""The witness's state in SQLite (STATE/witness.db): per origin the last cosigned checkpoint,
and the evidence of refused requests.

Durability: WAL with synchronous=FULL, so a COMMIT has reached the disk when it returns. The
service commits before it answers, and recovery sees exactly the committed transactions:

- the process dies before COMMIT: the transaction never happened (SQLite ignores WAL frames
  without a commit record); no cosignature left the process, the log retries;
- it dies after COMMIT, before the answer: the new checkpoint is stored but the log never got
  its cosignature; its retry with the old size gets a 409 with the new size, and a request
  from that size for the same checkpoint is cosigned again (same size, same root).

One connection, used by one thread (the service's writer thread); each check-and-store is one
BEGIN IMMEDIATE transaction, which also keeps out another process on the same file.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from verifier.protocol.witness import Stored

DB_FILE = "witness.db"
MAX_EVIDENCE_ROWS = 10_000
"""Evidence kept (oldest dropped first): with bodies capped by the server's --max-body, a
flood of refused requests costs a bounded amount of disk."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,        -- the note as submitted plus the witness's cosignature line
    timestamp INTEGER NOT NULL -- of that cosignature: the next one is never earlier
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE, -- SHA-256 of the body: a replayed request is kept once
    body BLOB NOT NULL
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

    def __init__(self, state: Path) -> None:
        state.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE ones below.
        self.db = sqlite3.connect(state / DB_FILE, isolation_level=None,
                                  check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

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

    def keep_evidence(self, time: int, origin: str, reason: str, body: bytes) -> None:
        """Keep a refused request (once per distinct body), dropping the oldest beyond
        MAX_EVIDENCE_ROWS."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO evidence (time, origin, reason, digest, body)"
            " VALUES (?, ?, ?, ?, ?)",
            (time, origin, reason, hashlib.sha256(body).digest(), body))
        if cur.rowcount and cur.lastrowid is not None:
            self.db.execute("DELETE FROM evidence WHERE id <= ?",
                            (cur.lastrowid - MAX_EVIDENCE_ROWS,))

    def evidence(self, limit: int | None = None) -> list[Evidence]:
        """Kept evidence, oldest first (the last `limit` rows if given)."""
        rows = self.db.execute(
            "SELECT id, time, origin, reason, body FROM evidence ORDER BY id DESC LIMIT ?",
            (-1 if limit is None else limit,)).fetchall()
        return [Evidence(int(r[0]), int(r[1]), str(r[2]), str(r[3]), bytes(r[4]))
                for r in reversed(rows)]
