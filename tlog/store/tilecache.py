"""Full hash tiles and entry bundles kept on local disk, so serving one costs no query.

By C2SP tlog-tiles, a full tile (256 hashes, or a bundle of 256 entries) never changes once
published. `tlog serve --tile-cache DIR` keeps every full tile it has served in
DIR/<log>/<tile path>, where <log> names the log's key (a new log under the same DIR never
sees an old log's tiles). A file holds the tile's bytes followed by their SHA-256; it is
written to a temporary file and renamed into place (verifier.client.files.atomic_write), so
readers see a whole file or none.
A file that fails its digest (rot, a copy gone wrong) is deleted and the tile read again
from the database, which stays the only source of truth: deleting DIR at any time is safe.

The files are tied to the database they came from (tlog.store.identity): DIR/<log>/DATABASE
records its identity and an anchor, a checkpoint (size, root) whose tree holds every tile
kept, written (durably) before any tile beyond it. At startup (bind) the files are kept only
if the database is the same one and still publishes that checkpoint with that root;
otherwise (a restore from a backup, another cluster, files of unknown origin) they are all
deleted. A database swap noticed while running (Storage's guard) deletes them too, and no
file is served or kept until the next start.

The cache is best effort: a disk that is full or read-only costs speed, never an answer.
Files are read and written in the event loop: a page-cache read of at most ~17 MiB
(a bundle of 256 maximal entries), usually ~120 KiB, takes far less than a query.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from tlog.store.reader import StoredCheckpoint
from verifier.client.files import atomic_write

DIGEST_SIZE = 32
RECORD = "DATABASE"  # the database the files came from, and their anchor

log = logging.getLogger("tlog.tilecache")


class TileFiles:
    """Immutable full tiles on disk under `root`/`namespace`, checked on every read."""

    def __init__(self, root: Path, namespace: str) -> None:
        self.dir = root / namespace
        self.database: str | None = None  # None: not bound (or dropped): nothing is used
        self.anchor: tuple[int, bytes] | None = None

    async def bind(self, database: str | None,
                   checkpoint_at: Callable[[int], Awaitable[StoredCheckpoint | None]]) -> None:
        """Start using the files for `database` (tlog.store.identity), keeping those it
        still stands behind (`checkpoint_at` is its read); the record is written with the
        first tile kept (advance)."""
        record = self._record()
        keep = False
        if record is not None and record[0] == database:
            found = await checkpoint_at(record[1])
            keep = found is not None and found.root == record[2]
        if not keep and self.dir.exists():
            log.warning("deleting the tile files in %s: they did not come from this "
                        "database, or it no longer holds the tree they belong to", self.dir)
            self._delete()
        self.database, self.anchor = database, record[1:] if keep and record else None

    def covers(self, end: int) -> bool:
        """Whether a tile ending at leaf `end` is within the anchor's tree (may be kept)."""
        return self.database is not None and self.anchor is not None and end <= self.anchor[0]

    def advance(self, size: int, root: bytes) -> None:
        """Record the checkpoint (size, root) as the anchor, durably, before any tile
        beyond the old anchor is kept: a crash leaves no tile its record does not cover."""
        if self.database is None or (self.anchor is not None and size <= self.anchor[0]):
            return
        record = {"database": self.database, "size": size, "root": root.hex()}
        try:
            atomic_write(self.dir / RECORD, json.dumps(record).encode(), durable=True)
        except OSError as exc:
            log.warning("couldn't record the tile files' database: %s", exc)
            return
        self.anchor = (size, root)

    def drop(self, reason: str) -> None:
        """The database changed under the running server: no file is used again, and all
        are deleted (the record first, so that a crash midway leaves files a start deletes)."""
        self.database = self.anchor = None
        log.warning("deleting the tile files in %s: %s", self.dir, reason)
        with contextlib.suppress(OSError):
            (self.dir / RECORD).unlink()
        threading.Thread(target=self._delete, name="tlog-tilefiles-delete", daemon=True).start()

    def _record(self) -> tuple[str, int, bytes] | None:
        try:
            record = json.loads((self.dir / RECORD).read_bytes())
            return str(record["database"]), int(record["size"]), bytes.fromhex(record["root"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def get(self, path: str) -> bytes | None:
        """The tile at C2SP `path` if a sound copy is on disk; None otherwise."""
        if self.database is None:
            return None
        file = self.dir / path
        try:
            raw = file.read_bytes()
        except OSError:  # not cached yet (or unreadable: the database answers instead)
            return None
        data, digest = raw[:-DIGEST_SIZE], raw[-DIGEST_SIZE:]
        if len(raw) >= DIGEST_SIZE and hashlib.sha256(data).digest() == digest:
            return data
        log.warning("dropping %s from the tile cache: its digest does not match", path)
        with contextlib.suppress(OSError):  # a later request keeps a sound copy again
            file.unlink()
        return None

    def put(self, path: str, data: bytes, end: int) -> None:
        """Keep `data` as the tile at C2SP `path` (only ever called for full tiles), whose
        last leaf is `end` - 1, if the anchor covers it (else: advance first)."""
        if not self.covers(end):
            return
        try:
            # Durability: a crash before the rename inside leaves a stray dot-file that no
            # path names; after it, a whole file. Not durable (no fsync): a file lost or torn
            # by a power cut fails its digest or is missing, and the database answers.
            atomic_write(self.dir / path, data + hashlib.sha256(data).digest(), durable=False)
        except OSError as exc:
            log.warning("couldn't keep %s in the tile cache: %s", path, exc)


def namespace(vkey: str) -> str:
    """A directory name for the log with verifier key text `vkey`."""
    return hashlib.sha256(vkey.encode()).hexdigest()[:32]
