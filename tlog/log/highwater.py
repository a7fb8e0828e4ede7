"""The published high-water mark: the largest checkpoint this log published, kept OUTSIDE
its database, so a database restored from an older backup is caught before it is served.

Why outside: a restore brings back the database as it was when the backup was taken; a
log that served it would sign new trees at sizes it already published with other entries
(a fork every client, witness and monitor that saw the old tree detects as misbehaviour).
Nothing inside the restored database can say it is old. A small file beside the log's key
(or --published-file) can: it holds the signed note of the largest checkpoint the log
published, exactly as served.

When it is written (tlog.log.sequencer calls `record` after each batch's COMMIT, before
any reply of that batch goes out):
- never before COMMIT, so the file never claims more than the database durably holds;
- before the replies, so every checkpoint an append reply carried is covered.
A crash between COMMIT and the write leaves the file one batch behind the database. Those
submitters got no reply (they retry and dedup gives them their index), but a reader of
GET /checkpoint (of this or another server on the database) may already have seen that
batch's checkpoint: the lag is at most the batches whose writer died in that window, and
the next start of any server with this file closes it (`check` records the database's
latest). Witnesses (tlog.log.witness, RollbackAlarm) catch a restore that lost such a batch.

The file only grows: writes happen under an exclusive lock (PATH.lock), compare with what
the file holds and are atomic (temporary file, fsync, rename, directory fsync), so several
`tlog serve` processes of one log on one machine may share it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tlog.log.proofs import consistency_proof
from tlog.log.sequencer import SelfCheckError
from tlog.store.postgres import Storage
from tlog.store.reader import StoredCheckpoint
from verifier.client.files import atomic_write
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint
from verifier.protocol.merkle import ProofError, verify_consistency
from verifier.protocol.note import Verifier

log = logging.getLogger("tlog.highwater")

MAX_FILE_BYTES = 64 * 1024  # a checkpoint note is a few hundred bytes
WHERE = ("the log keeps the largest checkpoint it published in a file outside its database: "
         "give --published-file PATH on persistent storage it may write")


class HighWaterError(RuntimeError):
    """The database is behind, or not of, what this log published; or the file is unusable."""


class BehindError(HighWaterError):
    """The database is a prefix-sized restore: smaller than the published size."""


class HighWater:
    """The published-checkpoint file `path` of the log whose key is `verifier`."""

    def __init__(self, path: Path, verifier: Verifier) -> None:
        self.path = path
        self.verifier = verifier
        self.lock_path = path.with_name(path.name + ".lock")
        self.size = -1  # the largest size known to be in the file; -1: none yet

    def read(self) -> Checkpoint | None:
        """The checkpoint the file holds (None when there is no file), verified with the
        log's key: a file of another log, or one edited by hand, is refused."""
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HighWaterError(f"couldn't read the published-checkpoint file "
                                 f"{self.path}: {exc}; {WHERE}") from exc
        try:
            if len(data) > MAX_FILE_BYTES:
                raise ValueError("the file is too large for a checkpoint")
            cp = open_checkpoint(data, self.verifier)
        except ValueError as exc:
            raise HighWaterError(
                f"the published-checkpoint file {self.path} does not hold a checkpoint of "
                f"this log ({self.verifier.name}, key {self.verifier.text()}): {exc}; each "
                "log needs its own file (--published-file)") from exc
        self.size = max(self.size, cp.size)
        return cp

    async def check(self, storage: Storage, latest: StoredCheckpoint) -> None:
        """Refuse a database behind or beside what was published; then record its latest.

        `latest` is the database's latest checkpoint, already verified by the startup
        self-check. BehindError: smaller than the published size; HighWaterError: the same
        size with another root, or a larger tree that does not extend the published one.
        """
        published = await asyncio.to_thread(self.read)
        if published is not None:
            await _compare(storage, latest, published, self.path)
        # Always through the lock, even when nothing is newer: a file the log cannot
        # write is found now, not at the first append.
        await asyncio.to_thread(self._record, latest)

    async def record(self, cp: StoredCheckpoint) -> None:
        """Make the file hold `cp` unless it holds a larger one (a thread: it fsyncs)."""
        if cp.size <= self.size:
            return
        await asyncio.to_thread(self._record, cp)

    def _record(self, cp: StoredCheckpoint) -> None:
        with self._locked():
            held = self.read()  # another process of this log may have written more
            if held is not None and held.size > cp.size:
                return
            if held is not None and held.size == cp.size:
                if held.root != cp.root:
                    raise HighWaterError(f"{self.path} holds another root for size {cp.size} "
                                         "than the database's")
                return
            # temporary file, fsync, rename, directory fsync: the old note or the new
            atomic_write(self.path, cp.note.encode(), durable=True, mode=0o644)
            self.size = cp.size

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise HighWaterError(
                f"couldn't open {self.lock_path}: {exc}; {WHERE}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


async def _compare(storage: Storage, latest: StoredCheckpoint, published: Checkpoint,
                   path: Path) -> None:
    n = published.size
    if latest.size < n:
        raise BehindError(
            f"the database's latest checkpoint has size {latest.size}, but this log "
            f"published size {n} (recorded in {path}): the database was restored from a "
            f"backup older than what the log published, and entries {latest.size}..{n - 1} "
            "are missing. Serving it would sign trees that fork the published one. Restore "
            f"a newer backup (one holding at least {n} entries); see docs/BACKUP.md")
    if latest.size == n:
        if latest.root != published.root:
            raise HighWaterError(
                f"the database's checkpoint of size {n} has another root than the one this "
                f"log published (recorded in {path}): this is another log's database")
        return
    try:
        proof = await consistency_proof(n, latest.size, storage.tiles)
        verify_consistency(n, latest.size, published.root, latest.root, proof)
    except (ProofError, ValueError) as exc:
        raise HighWaterError(
            f"the database's tree of size {latest.size} does not extend the checkpoint of "
            f"size {n} this log published (recorded in {path}): this is another log's "
            f"database ({exc})") from exc


async def record_or_stop(high: HighWater, cp: StoredCheckpoint) -> None:
    """The sequencer's post-COMMIT hook: record `cp` before its batch is answered. A file
    that cannot be written stops appends (SelfCheckError): each further batch would widen
    what readers saw beyond the file."""
    try:
        await high.record(cp)
    except (OSError, HighWaterError) as exc:
        raise SelfCheckError(f"couldn't record the published checkpoint (size {cp.size}) in "
                             f"{high.path}: {exc}") from exc
