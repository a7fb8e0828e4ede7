"""The full audit: re-check every entry and tile of a log against a signed checkpoint.

Every entry bundle of the trusted checkpoint is fetched (c2sp.org/tlog-tiles), every entry
re-validated (schema, canonical form, publisher signature) and hashed in worker processes,
and the tree recomputed from those leaf hashes (`tree`). Every hash tile the recomputation
completes must equal the log's tile, the partial tiles of the right edge too, and the
recomputed root must equal the signed one. Memory stays bounded: only the bundles in flight
and the right edge of the tree are held. Progress (the next index and the right edge) is
saved to DIR/audit-full.json every SAVE_EVERY bundles (`progress`), so an interrupted run
resumes, and a finished one makes the next run check only entries added since.

A mismatch or an invalid entry raises LogMisbehaviour, with evidence saved under
DIR/evidence/.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

from verifier.client.audit.progress import PROGRESS_FILE, progress_json, resume_point
from verifier.client.audit.tree import FULL_TILE_BYTES, Chunk, TileFeed, Tree
from verifier.client.log import LogClient
from verifier.client.scan import default_workers, map_bundles, worker_signals
from verifier.client.statedir import StateDir
from verifier.errors import LogMisbehaviour, VerificationFailed, VerifyError
from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.leaves import Fetched, check_leaves, hash_leaves
from verifier.protocol.map_replay import MapItem, MapMismatch, MapReplay, map_item
from verifier.protocol.merkle import HASH_SIZE, ProofError, leaf_hash, verify_inclusion
from verifier.protocol.package_state import map_root_entry
from verifier.protocol.receipt import format_tlog_proof
from verifier.protocol.state import Trusted, evidence, evidence_parts
from verifier.protocol.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileKey,
    TreeBuilder,
    hash_up,
    split_hashes,
    tile_path,
)

__all__ = ["PREFETCH", "SAVE_EVERY", "FullAuditResult", "Progress", "full_audit"]

SAVE_EVERY = 64  # bundles between progress saves (16,384 entries)
# ... or more when a save is slow: it writes every package's state, which grows with the log,
# so saves are spaced to take at most about 1 / SAVE_SPACING of the run.
SAVE_SPACING = 20
PREFETCH = 8  # entry bundles, and separately hash tiles, fetched ahead by threads
MAX_REPORTED_ERRORS = 5

Progress = Callable[[int, int], None]


# -- the per-bundle work of the worker processes -------------------------------------------


def _tile_hash(first: int, hashes: bytes) -> bytes | None:
    if first % TILE_WIDTH or len(hashes) != FULL_TILE_BYTES:
        return None
    return hash_up(split_hashes(hashes))


def _check_bundle(item: Fetched, validate: bool) -> Chunk:
    """The per-bundle work of the worker processes: validate (or, for measuring the tree work
    alone, only hash) the entries and hash the level-0 tile up; comparing is left to the
    process that keeps the tree, and so is gathering evidence."""
    first, leaves = item.first, item.leaves
    items: tuple[MapItem, ...] = ()
    if validate:
        checked = check_leaves(first, leaves)
        hashes = b"".join(c.leaf_hash for c in checked)
        errors = tuple((c.index, c.error) for c in checked if c.error)
        items = tuple(i for c in checked if (i := map_item(c)) is not None)
    else:
        hashes, errors = b"".join(hash_leaves(first, leaves)), ()
    return Chunk(first, hashes, _tile_hash(first, hashes), errors, item.tile, items)


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FullAuditResult:
    """One full-audit run: entries [start, size) checked now, [0, start) by earlier runs."""

    checkpoint: Checkpoint
    start: int
    tiles: int  # the log's hash tiles compared with the recomputed ones in this run
    elapsed: float  # seconds
    validated: bool  # entries were validated (schema, signature), not only hashed

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def entries(self) -> int:
        return self.size - self.start

    @property
    def rate(self) -> float:
        """Entries checked per second in this run."""
        return self.entries / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        """One line for people: what is now audited, what this run did, how fast."""
        if self.entries == 0:
            done = f"no new entries since the full audit of 0..{self.start}"
        else:
            what = "validated and hashed" if self.validated else "hashed (not validated)"
            done = f"entries {self.start}..{self.size} {what} in this run"
            if self.start:
                done += f" (0..{self.start} by earlier runs)"
        return (f"OK audited 0..{self.size} of {self.checkpoint.origin}: {done}; "
                f"{self.tiles} tile{'s' * (self.tiles != 1)} and the root match; "
                f"{self.entries:,} entries in {self.elapsed:.1f} s ({self.rate:,.0f}/s)")


def full_audit(client: LogClient, trusted: Trusted, state: StateDir | None = None, *,
               workers: int | None = None, validate: bool = True,
               progress: Progress | None = None, prefetch: int = PREFETCH,
               save_every: int = SAVE_EVERY) -> FullAuditResult:
    """Re-check every entry and tile of the log against the signed checkpoint `trusted`.

    `trusted` must already be verified (and, with state, proven to extend the stored
    checkpoint: see `incremental.audit`). With `state`, the run resumes from
    DIR/audit-full.json, saves progress there every `save_every` bundles and when stopped by
    anything but a failed check, and records the finished audit so that a later run checks
    only newer entries; evidence of misbehaviour goes to DIR/evidence/. `workers` processes
    validate and hash (default: one per core; 0: this process). `validate=False` only hashes
    (for measuring).
    `progress(done, total)` is called after each bundle with the entries of this run; an
    exception it raises stops the run, with progress saved up to that bundle.

    Raises LogMisbehaviour (an invalid entry, a tile or root that does not match), other
    VerificationFailed (a malformed response), TransportError, UsageError (bad state file).
    """
    started = time.monotonic()
    begin = resume_point(client, trusted, state)
    run = _Run(client, trusted, state, Tree(begin.next, begin.edge), begin.replay)
    run.validate = validate
    run.scan(default_workers() if workers is None else workers, validate, progress,
             prefetch, save_every)
    run.finish()
    return FullAuditResult(trusted.checkpoint, begin.next, run.compared,
                           time.monotonic() - started, validate)


class _Run:
    """One full-audit run over entries tree.size .. trusted.size - 1."""

    def __init__(self, client: LogClient, trusted: Trusted, state: StateDir | None,
                 tree: Tree, replay: MapReplay) -> None:
        self.client, self.trusted, self.state, self.tree = client, trusted, state, tree
        # The package state map recomputed from the entries (validated runs only: a run
        # that only hashes parses no entry).
        self.replay = replay
        self.start = tree.size
        self.compared = 0
        self._clean = True  # the tree is at a chunk boundary, everything in it checked
        self.validate = True
        self._save_cost = 0.0  # seconds the last save took, and when it ended
        self._saved_at = time.monotonic()

    def scan(self, workers: int, validate: bool, progress: Progress | None, prefetch: int,
             save_every: int) -> None:
        """Check every entry from tree.size on; save progress on the way and when stopped."""
        size, start = self.trusted.size, self.tree.size
        feed = TileFeed(self.client, size, start, prefetch)
        chunks = _checked(self.client, size, start, prefetch, workers, validate)
        try:
            with closing(chunks):
                for count, chunk in enumerate(chunks, 1):
                    self._step(chunk, feed)
                    if count % save_every == 0 and self._save_due():
                        # Durability: a crash before this atomic write resumes from the save
                        # before it (re-checking the entries since); after it, from here.
                        # Either file claims only entries whose checks all passed.
                        self._save()
                    if progress is not None:
                        progress(chunk.end - start, size - start)
        except VerificationFailed:
            raise  # the periodic save stands; nothing past the failure is recorded
        except BaseException:
            if self._clean:
                self._save()  # stopped (interrupt, transport): resume from here
            raise
        finally:
            feed.close()
        self._save()  # all entries checked; `finish` still checks the edge and the root

    def _step(self, chunk: Chunk, feed: TileFeed) -> None:
        """Add one chunk to the tree and check it: tiles it completes, then its entries."""
        served = feed.upto(chunk.end)  # all I/O first: if it fails, the tree is untouched
        if chunk.served is not None:
            served.insert(0, ((0, chunk.end // TILE_WIDTH - 1), chunk.served))
        self._clean = False
        computed = self.tree.add(chunk)
        if [key for key, _ in computed] != [key for key, _ in served]:
            raise RuntimeError(f"tiles {computed} completed at {chunk.end}, expected {served}")
        for (key, mine), (_, theirs) in zip(computed, served, strict=True):
            self._compare(key, mine, theirs)
        if chunk.errors:
            self._invalid_entries(chunk.errors)
        for mismatch in self.replay.feed(chunk.items):
            self._wrong_map_root(mismatch)
        self._clean = True

    def finish(self) -> None:
        """Check the partial tiles of the right edge and the root; record the audit done."""
        size = self.trusted.size
        edge = self.tree.edge()
        for level, n, _ in TreeBuilder.edge_keys(size):
            self._compare((level, n), edge[level], self.client.hash_tile(level, n, size))
        root = self.tree.root()
        if not hmac.compare_digest(root, self.trusted.root):
            self._fail(f"the entries 0..{size} the log serves hash to root {root.hex()}, but "
                       f"its signed checkpoint of size {size} has root "
                       f"{self.trusted.root.hex()}", {"computed-root": root.hex() + "\n"})
        if self.validate and not self.replay.ends_with_map_root(size):
            self._fail(f"the log's signed checkpoint of size {size} does not end with a "
                       f"map-root entry: entry {size - 1} is not one, so the checkpoint "
                       "commits to no package states", self._entry_evidence(size - 1))
        # Durability: a crash before this write leaves the last periodic save, so the next
        # run re-checks the entries after it; after it, the next run starts at `size`.
        self._save()

    def _save_due(self) -> bool:
        return time.monotonic() - self._saved_at >= SAVE_SPACING * self._save_cost

    def _save(self) -> None:
        if self.state is not None:
            started = time.monotonic()
            self.state.write_text(PROGRESS_FILE,
                                  progress_json(self.trusted, self.tree, self.replay))
            self._saved_at = time.monotonic()
            self._save_cost = self._saved_at - started

    def _compare(self, key: TileKey, mine: bytes, theirs: bytes) -> None:
        self.compared += 1
        if hmac.compare_digest(mine, theirs):
            return
        level, n = key
        path = tile_path(level, n, len(mine) // HASH_SIZE)
        files = evidence_parts(tiles={(level, n): (theirs, mine)})
        if len(mine) != len(theirs):
            self._fail(f"the log's {path} has {len(theirs)} bytes, not {len(mine)}", files)
        slot = next(i for i in range(0, len(mine), HASH_SIZE)
                    if mine[i:i + HASH_SIZE] != theirs[i:i + HASH_SIZE]) // HASH_SIZE
        first = (n * TILE_WIDTH + slot) << (TILE_HEIGHT * level)
        if level == 0:
            files.update(self._entry_evidence(first))
            self._fail(f"entry {first}: its leaf hash is not hash {slot} of the log's {path} "
                       "(the entry or the tile was rewritten)", files)
        last = first + (1 << (TILE_HEIGHT * level)) - 1
        self._fail(f"the log's {path} differs from the tree recomputed from its entries at "
                   f"hash {slot} (entries {first}..{last}): the tile was rewritten", files)

    def _wrong_map_root(self, mismatch: MapMismatch) -> NoReturn:
        """Fail on a map-root entry that is not what the entries before it make."""
        index = mismatch.index
        facts = [f"{k} {v}" for k, v in mismatch.evidence().items()]
        where, files = self._inclusion(index)
        if not files:  # the leaf is canonical: rebuilt from what it commits to
            files = evidence_parts(entries={
                index: map_root_entry(mismatch.size, mismatch.committed_root)})
        self._fail(f"{mismatch.message()} ({where} that entry)", {**files, "map-root.txt": "".join(
            f"{line}\n" for line in [f"index {index}", *facts])})

    def _invalid_entries(self, errors: tuple[tuple[int, str], ...]) -> NoReturn:
        """Report invalid entries, with what shows whether the first is in the signed tree."""
        listed = "; ".join(f"entry {i}: {why}" for i, why in errors[:MAX_REPORTED_ERRORS])
        if len(errors) > MAX_REPORTED_ERRORS:
            listed += f" (and {len(errors) - MAX_REPORTED_ERRORS} more)"
        where, files = self._inclusion(errors[0][0])
        self._fail(f"{where} entries that are not valid: {listed}", files)

    def _inclusion(self, index: int) -> tuple[str, dict[str, str | bytes]]:
        """Whether entry `index`, as served, is in the signed tree; the files that show it."""
        size = self.trusted.size
        try:
            leaf = self.client.entry(index, size)
            proof = self.client.inclusion_proof(index, size)
        except VerifyError as exc:  # the entry is bad either way: still fail with exit 1
            return f"the log serves (inclusion unproven: {exc})", {}
        files = evidence_parts(entries={index: leaf}, entry_proofs={
            index: format_tlog_proof(index, proof, self.trusted.note)})
        try:
            verify_inclusion(index, size, leaf_hash(leaf), proof, self.trusted.root)
        except ProofError:
            return f"the log serves, outside its tree of size {size},", files
        return f"the log's signed tree of size {size} includes", files

    def _entry_evidence(self, index: int) -> dict[str, str | bytes]:
        """The entry as the log serves it, if it still can: evidence is best effort."""
        try:
            return evidence_parts(entries={index: self.client.entry(index, self.trusted.size)})
        except VerifyError:
            return {}

    def _fail(self, reason: str, files: Mapping[str, str | bytes]) -> NoReturn:
        """Raise LogMisbehaviour, with the signed checkpoint and `files` saved as evidence."""
        found = {**evidence(reason, checkpoint=self.trusted.note), **files}
        if self.state is None:
            raise LogMisbehaviour(reason, found)
        where = self.state.save_evidence(reason, found)
        raise LogMisbehaviour(f"{reason}; evidence saved in {where}", found)


def _checked(client: LogClient, size: int, start: int, prefetch: int, workers: int,
             validate: bool) -> Generator[Chunk, None, None]:
    """Entries start..size-1 by bundle, validated (or only hashed) by workers, each full
    bundle with the log's level-0 tile over it."""
    return map_bundles(client, size, start, partial(_check_bundle, validate=validate),
                       workers, with_tiles=True, prefetch=prefetch,
                       initializer=worker_signals)


