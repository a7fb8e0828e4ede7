"""Full hash tiles and entry bundles kept on local disk, so serving one costs no query.

By C2SP tlog-tiles, a full tile (256 hashes, or a bundle of 256 entries) never changes once
published. `tlog serve --tile-cache DIR` keeps every full tile it has served in
DIR/<log>/<tile path>, where <log> names the log's key (a new log under the same DIR never
sees an old log's tiles). A file holds the tile's bytes followed by their SHA-256; it is
written to a temporary file and renamed into place (verifier.client.files.atomic_write), so
readers see a whole file or none.
A file that fails its digest (rot, a copy gone wrong) is deleted and the tile read again
from the database, which stays the only source of truth: deleting DIR at any time is safe,
and after restoring the database from a backup, DIR must be deleted.

The cache is best effort: a disk that is full or read-only costs speed, never an answer.
Files are read and written in the event loop: a page-cache read of at most ~17 MiB
(a bundle of 256 maximal entries), usually ~120 KiB, takes far less than a query.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

from verifier.client.files import atomic_write

DIGEST_SIZE = 32

log = logging.getLogger("tlog.tilecache")


class TileFiles:
    """Immutable full tiles on disk under `root`/`namespace`, checked on every read."""

    def __init__(self, root: Path, namespace: str) -> None:
        self.dir = root / namespace

    def get(self, path: str) -> bytes | None:
        """The tile at C2SP `path` if a sound copy is on disk; None otherwise."""
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

    def put(self, path: str, data: bytes) -> None:
        """Keep `data` as the tile at C2SP `path` (only ever called for full tiles)."""
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
