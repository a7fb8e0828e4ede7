"""`tlog-verify audit`: prove a log only ever grew, and (--full) re-check everything in it.

Incremental audit (every run, `audit`): the log's current checkpoint must verify with the
pinned key and be proven consistent (RFC 9162 §2.1.4) with every checkpoint trusted before:
the one this state directory stored on its last run, and the one the user pins with --trust.
The first run without --trust trusts the current checkpoint. A rollback, a fork (two roots for
one size) or a failed proof is misbehaviour: both signed checkpoints and the proof are kept
under DIR/evidence/ and the stored checkpoint is not replaced.

Full audit (--full, `full_audit`): every entry bundle of the trusted checkpoint is fetched
(c2sp.org/tlog-tiles), every entry re-validated (schema, canonical form, publisher signature)
and hashed in worker processes, and the tree recomputed from those leaf hashes. Every hash
tile the recomputation completes must equal the log's tile, the partial tiles of the right
edge too, and the recomputed root must equal the signed one. Memory stays bounded: only the
bundles in flight and the right edge of the tree are held. Progress (the next index and the
right edge) is saved to DIR/audit-full.json every SAVE_EVERY bundles, so an interrupted run
resumes, and a finished one makes the next run check only entries added since.

Exit codes are those of verifier.errors: 0 verified, 1 failed or misbehaved, 2 usage, 3 transport.
"""

from __future__ import annotations

import argparse
import hmac
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TextIO

from verifier.client.log import LogClient
from verifier.client.scan import Fetched, check_leaves, default_workers, hash_leaves, map_bundles
from verifier.client.statedir import StateDir, load_vkey
from verifier.client.tracking import prove_extends
from verifier.errors import (
    EXIT_OK,
    LogMisbehaviour,
    UsageError,
    VerificationFailed,
    VerifyError,
)
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint
from verifier.protocol.merkle import HASH_SIZE, ProofError, leaf_hash, verify_inclusion
from verifier.protocol.note import MAX_NOTE_SIZE, Verifier, b64encode, parse_note
from verifier.protocol.state import Trusted
from verifier.protocol.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileKey,
    TreeBuilder,
    hash_up,
    split_hashes,
    tile_path,
)
from verifier.protocol.trust import KeyTrust

__all__ = [
    "PROGRESS_FILE",
    "FullAuditResult",
    "ProgressLine",
    "audit",
    "full_audit",
    "load_trust",
    "register",
]

PROGRESS_FILE = "audit-full.json"
PROGRESS_FORMAT = "tlog-verify audit-full v1"
SAVE_EVERY = 64  # bundles between progress saves (16,384 entries)
PREFETCH = 8  # entry bundles, and separately hash tiles, fetched ahead by threads
FULL_TILE_BYTES = HASH_SIZE * TILE_WIDTH
MAX_REPORTED_ERRORS = 5

Progress = Callable[[int, int], None]


# -- incremental audit ---------------------------------------------------------------------


def load_trust(path: Path, key: Verifier) -> Trusted:
    """A checkpoint file the user trusts, which must verify with the pinned log key.

    Both are the user's own pinned inputs, so a file that does not verify with the key is a
    usage error (exit 2): nothing the log served is involved yet.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"couldn't read --trust {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_NOTE_SIZE:
        raise UsageError(f"--trust {path} is larger than a checkpoint can be")
    try:
        text = data.decode("utf-8")
        return Trusted(open_checkpoint(text, key), text)
    except ValueError as exc:
        raise UsageError(f"--trust {path} is not a checkpoint signed by the pinned log key "
                         f"{key.name}: {exc}") from exc


def audit(client: LogClient, key: Verifier, state: StateDir,
          trust: Trusted | None = None) -> Trusted:
    """Verify the log's current checkpoint and prove it extends everything trusted before.

    Trusted before: `trust` (pinned by the caller) and the checkpoint stored in `state`; with
    neither, the current checkpoint is trusted on first use. Each is checked against the
    current one by a consistency proof built from the log's tiles (RFC 9162 §2.1.4.2). On
    success the current checkpoint atomically replaces the stored one and is returned. On a
    rollback, fork or failed proof, LogMisbehaviour is raised once the evidence (both signed
    checkpoints, the proof) is saved under state/evidence/; the stored checkpoint stays.
    """
    cp, note = client.checkpoint(KeyTrust(key))
    current = Trusted(cp, note)
    for old in (trust, state.load_trusted(KeyTrust(key))):
        if old is not None:
            prove_extends(client, old, current, state)
    # A crash before this atomic write leaves the old checkpoint, so the next run proves
    # consistency from it again; after it, the next run proves from `current`.
    state.save_trusted(current)
    return current


# -- full audit: the per-bundle work of the worker processes -------------------------------


class _Chunk(NamedTuple):
    """Checked entries of one entry bundle: one small object per 256 entries."""

    first: int  # index of the first entry
    hashes: bytes  # their leaf hashes, concatenated
    tile_hash: bytes | None  # hash_up of `hashes` when they are exactly one level-0 tile
    errors: tuple[tuple[int, str], ...]  # (index, reason) of each invalid entry
    served: bytes | None  # the log's level-0 tile that these entries complete, if they do

    @property
    def end(self) -> int:
        return self.first + len(self.hashes) // HASH_SIZE


def _tile_hash(first: int, hashes: bytes) -> bytes | None:
    if first % TILE_WIDTH or len(hashes) != FULL_TILE_BYTES:
        return None
    return hash_up(split_hashes(hashes))


def _check_bundle(item: Fetched, validate: bool) -> _Chunk:
    """The per-bundle work of the worker processes: validate (or, for measuring the tree work
    alone, only hash) the entries and hash the level-0 tile up; comparing is left to the
    process that keeps the tree, and so is gathering evidence."""
    first, leaves = item.first, item.leaves
    if validate:
        checked = check_leaves(first, leaves)
        hashes = b"".join(c.leaf_hash for c in checked)
        errors = tuple((c.index, c.error) for c in checked if c.error)
    else:
        hashes, errors = b"".join(hash_leaves(first, leaves)), ()
    return _Chunk(first, hashes, _tile_hash(first, hashes), errors, item.tile)


# -- full audit: recomputing the tree ------------------------------------------------------


class _Tree:
    """The right edge of the tree being recomputed, in TreeBuilder's edge format.

    Level-0 tiles are whole bundles, hashed up by the workers, so this process only appends
    one hash per 256 entries: to a TreeBuilder over the level-8 hashes, whose level-L tiles
    are the log's level-(L+1) tiles. The leaf hashes of the last, partial tile are kept apart.
    """

    def __init__(self, size: int, edge: Mapping[int, bytes]) -> None:
        TreeBuilder(size, edge)  # checks the edge fits a tree of `size` (ValueError)
        self.size = size
        self._low = bytearray(edge.get(0, b""))
        self._high = {level - 1: data for level, data in edge.items() if level > 0}
        self._upper = TreeBuilder(size >> TILE_HEIGHT, self._high)

    def add(self, chunk: _Chunk) -> list[tuple[TileKey, bytes]]:
        """Append a chunk's hashes; return the full tiles it completes, lowest level first."""
        if chunk.first != self.size:
            raise RuntimeError(f"chunk at {chunk.first} does not continue size {self.size}")
        if not self._low and chunk.tile_hash is not None:
            data, tile_hash = chunk.hashes, chunk.tile_hash
        else:
            self._low += chunk.hashes
            if len(self._low) > FULL_TILE_BYTES:
                raise RuntimeError(f"chunk at {chunk.first} crosses a tile boundary")
            if len(self._low) < FULL_TILE_BYTES:
                self.size = chunk.end
                return []
            data, tile_hash = bytes(self._low), None
            self._low.clear()
        self.size = chunk.end
        self._upper.append(tile_hash or hash_up(split_hashes(data)))
        return [((0, (self.size >> TILE_HEIGHT) - 1), data), *self._take_upper()]

    def _take_upper(self) -> list[tuple[TileKey, bytes]]:
        changed = self._upper.take_changed()
        live = {level: n for level, n, _ in TreeBuilder.edge_keys(self._upper.size)}
        self._high = {level: changed.get((level, n)) or self._high[level]
                      for level, n in live.items()}
        return [((level + 1, n), data) for (level, n), data in sorted(changed.items())
                if len(data) == FULL_TILE_BYTES]

    def edge(self) -> dict[int, bytes]:
        """The partial tiles of the right edge: level -> data (TreeBuilder's edge format)."""
        edge = {level + 1: data for level, data in self._high.items()}
        if self._low:
            edge[0] = bytes(self._low)
        return edge

    def root(self) -> bytes:
        return TreeBuilder(self.size, self.edge()).root()


def _completed_tiles(start: int, size: int) -> Iterator[TileKey]:
    """The full tiles above level 0 completed while leaves start..size-1 are appended, in
    that order (level-0 tiles come with their entry bundles)."""
    for bundle in range(start // TILE_WIDTH, size // TILE_WIDTH):
        end, level = (bundle + 1) * TILE_WIDTH, 1
        while end % (1 << (TILE_HEIGHT * (level + 1))) == 0:
            yield level, (end >> (TILE_HEIGHT * (level + 1))) - 1
            level += 1


def _completed_at(key: TileKey) -> int:
    """The tree size at which tile `key` becomes full."""
    level, n = key
    return (n + 1) << (TILE_HEIGHT * (level + 1))


class _TileFeed:
    """The log's full tiles above level 0 that the recomputation completes, fetched ahead
    by threads.

    Threads start on first use, after the worker processes were forked (forking a process
    whose other threads hold locks can deadlock the child).
    """

    def __init__(self, client: LogClient, size: int, start: int, ahead: int) -> None:
        self._client, self._size, self._ahead = client, size, max(1, ahead)
        self._keys = _completed_tiles(start, size)
        self._pending: deque[tuple[TileKey, Future[bytes]]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def upto(self, end: int) -> list[tuple[TileKey, bytes]]:
        """The log's tiles completed at tree sizes up to `end`, in order (TransportError...)."""
        out: list[tuple[TileKey, bytes]] = []
        while True:
            self._fill()
            if not self._pending or _completed_at(self._pending[0][0]) > end:
                return out
            key, future = self._pending.popleft()
            out.append((key, future.result()))

    def _fill(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._ahead)
        while len(self._pending) < self._ahead:
            key = next(self._keys, None)
            if key is None:
                return
            self._pending.append((key, self._pool.submit(self._client.hash_tile, *key,
                                                         self._size)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# -- full audit: progress that survives a stop ---------------------------------------------


@dataclass(frozen=True)
class _Saved:
    """DIR/audit-full.json: entries [0, next) of `target` are audited; `edge` continues it."""

    target: Trusted
    next: int
    edge: dict[int, bytes]


def _progress_json(target: Trusted, tree: _Tree) -> dict[str, Any]:
    return {
        "format": PROGRESS_FORMAT,
        "checkpoint": target.note,
        "size": target.size,
        "root": target.root.hex(),
        "next": tree.size,
        "edge": {str(level): data.hex() for level, data in sorted(tree.edge().items())},
    }


def _parse_progress(raw: Any) -> _Saved:
    """Strictly parse the progress file (ValueError, KeyError, TypeError on any problem).

    The checkpoint's signature is not re-verified: like the edge, the file is this
    verifier's own state, written only after what it records was checked.
    """
    if not isinstance(raw, dict) or raw.get("format") != PROGRESS_FORMAT:
        raise ValueError(f"format is not {PROGRESS_FORMAT!r}")
    note = raw["checkpoint"]
    cp = parse_checkpoint(parse_note(note).text)
    if raw["size"] != cp.size or raw["root"] != cp.root.hex():
        raise ValueError("size and root disagree with the checkpoint")
    nxt = raw["next"]
    if not isinstance(nxt, int) or not 0 <= nxt <= cp.size:
        raise ValueError(f"next index {nxt!r} is outside the checkpoint")
    edge = {int(level): bytes.fromhex(data) for level, data in raw["edge"].items()}
    TreeBuilder(nxt, edge)  # the edge must fit a tree of `next` leaves
    return _Saved(Trusted(cp, note), nxt, edge)


def _load_progress(state: StateDir | None) -> _Saved | None:
    if state is None:
        return None
    raw = state.read_json(PROGRESS_FILE, None)
    if raw is None:
        return None
    try:
        return _parse_progress(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{state.path / PROGRESS_FILE} is not full-audit progress ({exc}); "
                         "remove it to audit from the start") from exc


def _resume_point(client: LogClient, trusted: Trusted, state: StateDir | None) -> _Saved:
    """Where to start: after the saved progress if `trusted` extends its checkpoint.

    A consistency proof from the saved checkpoint to `trusted` shows the audited prefix is
    part of `trusted`'s tree, so its edge continues that tree (misbehaviour otherwise, with
    evidence).
    """
    saved = _load_progress(state)
    if saved is None:
        return _Saved(trusted, 0, {})
    if saved.target.size > trusted.size:
        raise UsageError(f"the saved full audit reached size {saved.target.size}, beyond the "
                         f"checkpoint of size {trusted.size} given to audit")
    prove_extends(client, saved.target, trusted, state)
    return saved


# -- full audit: the run -------------------------------------------------------------------


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
    checkpoint: see `audit`). With `state`, the run resumes from DIR/audit-full.json, saves
    progress there every `save_every` bundles and when stopped by anything but a failed
    check, and records the finished audit so that a later run checks only newer entries;
    evidence of misbehaviour goes to DIR/evidence/. `workers` processes validate and hash
    (default: one per core; 0: this process). `validate=False` only hashes (for measuring).
    `progress(done, total)` is called after each bundle with the entries of this run; an
    exception it raises stops the run, with progress saved up to that bundle.

    Raises LogMisbehaviour (an invalid entry, a tile or root that does not match), other
    VerificationFailed (a malformed response), TransportError, UsageError (bad state file).
    """
    started = time.monotonic()
    begin = _resume_point(client, trusted, state)
    run = _Run(client, trusted, state, _Tree(begin.next, begin.edge))
    run.scan(default_workers() if workers is None else workers, validate, progress,
             prefetch, save_every)
    run.finish()
    return FullAuditResult(trusted.checkpoint, begin.next, run.compared,
                           time.monotonic() - started, validate)


class _Run:
    """One full-audit run over entries tree.size .. trusted.size - 1."""

    def __init__(self, client: LogClient, trusted: Trusted, state: StateDir | None,
                 tree: _Tree) -> None:
        self.client, self.trusted, self.state, self.tree = client, trusted, state, tree
        self.start = tree.size
        self.compared = 0
        self._clean = True  # the tree is at a chunk boundary, everything in it checked

    def scan(self, workers: int, validate: bool, progress: Progress | None, prefetch: int,
             save_every: int) -> None:
        """Check every entry from tree.size on; save progress on the way and when stopped."""
        size, start = self.trusted.size, self.tree.size
        feed = _TileFeed(self.client, size, start, prefetch)
        chunks = _checked(self.client, size, start, prefetch, workers, validate)
        try:
            with closing(chunks):
                for count, chunk in enumerate(chunks, 1):
                    self._step(chunk, feed)
                    if count % save_every == 0:
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

    def _step(self, chunk: _Chunk, feed: _TileFeed) -> None:
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
        # Durability: a crash before this write leaves the last periodic save, so the next
        # run re-checks the entries after it; after it, the next run starts at `size`.
        self._save()

    def _save(self) -> None:
        if self.state is not None:
            self.state.write_json(PROGRESS_FILE, _progress_json(self.trusted, self.tree))

    def _compare(self, key: TileKey, mine: bytes, theirs: bytes) -> None:
        self.compared += 1
        if hmac.compare_digest(mine, theirs):
            return
        level, n = key
        path = tile_path(level, n, len(mine) // HASH_SIZE)
        files: dict[str, str | bytes] = {f"log-tile-{level}-{n}": theirs,
                                         f"computed-tile-{level}-{n}": mine}
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
        files: dict[str, str | bytes] = {
            f"entry-{index}": leaf,
            "inclusion-proof": f"inclusion {index} {size}\n"
                               + "".join(b64encode(h) + "\n" for h in proof)}
        try:
            verify_inclusion(index, size, leaf_hash(leaf), proof, self.trusted.root)
        except ProofError:
            return f"the log serves, outside its tree of size {size},", files
        return f"the log's signed tree of size {size} includes", files

    def _entry_evidence(self, index: int) -> dict[str, str | bytes]:
        """The entry as the log serves it, if it still can: evidence is best effort."""
        try:
            return {f"entry-{index}": self.client.entry(index, self.trusted.size)}
        except VerifyError:
            return {}

    def _fail(self, reason: str, files: Mapping[str, str | bytes]) -> NoReturn:
        """Raise LogMisbehaviour, with the signed checkpoint and `files` saved as evidence."""
        evidence: dict[str, str | bytes] = {"reason.txt": reason + "\n",
                                            "checkpoint": self.trusted.note, **files}
        if self.state is None:
            raise LogMisbehaviour(reason, evidence)
        where = self.state.save_evidence(reason, evidence)
        raise LogMisbehaviour(f"{reason}; evidence saved in {where}", evidence)


def _checked(client: LogClient, size: int, start: int, prefetch: int, workers: int,
             validate: bool) -> Generator[_Chunk, None, None]:
    """Entries start..size-1 by bundle, validated (or only hashed) by workers, each full
    bundle with the log's level-0 tile over it."""
    return map_bundles(client, size, start, partial(_check_bundle, validate=validate),
                       workers, with_tiles=True, prefetch=prefetch,
                       initializer=_worker_signals)


def _worker_signals() -> None:
    """In a worker: ignore SIGINT. Ctrl-C reaches the whole process group; this process
    alone stops the run (saving progress) and lets the workers finish their chunk."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# -- progress display ----------------------------------------------------------------------


class ProgressLine:
    """A `Progress` for people: a bar redrawn in place on a terminal, at most 5 times a
    second; otherwise (a log file, CI) one line a minute. `close` ends the bar's line."""

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = 0.2 if self.tty else 60.0
        self.started = time.monotonic()
        self._last = self.started
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        final = self.tty and done >= total  # a bar ends full; a log gets the summary instead
        if now - self._last < self.interval and not final:
            return
        self._last = now
        text = self.render(done, total, now - self.started)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"tlog-verify: audit {text}\n")
        self.stream.flush()

    @staticmethod
    def render(done: int, total: int, elapsed: float) -> str:
        fraction = done / total if total else 1.0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _duration((total - done) / rate) if rate > 0 else "?"
        bar = "#" * int(30 * fraction)
        return (f"[{bar:<30}] {100 * fraction:5.1f}% {done:,}/{total:,} entries "
                f"{rate:,.0f}/s ETA {eta}")

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# -- the command ---------------------------------------------------------------------------


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a number of workers (0 or more): {text!r}")
    return value


_DESCRIPTION = """\
Prove the log only ever grew: its current checkpoint must verify with --key and be proven
consistent with the checkpoint the last run stored in --state (and with --trust). The first
run without --trust trusts the current checkpoint. A rollback, a fork or a failed proof exits
1 and keeps both signed checkpoints and the proof in DIR/evidence/.

--full also fetches every entry bundle and hash tile, re-validates every entry (schema,
publisher signature), recomputes every leaf hash, tile and the root, and compares them with
what the log signed and serves. Progress is kept in DIR/audit-full.json: a stopped run
resumes, and a later run checks only the entries added since.

Exit codes: 0 verified; 1 verification failed or the log misbehaved; 2 usage or malformed
input (including a --trust file that does not verify with --key); 3 transport failure.
"""


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `tlog-verify audit` to the subcommands `sub`; `common` adds --log, --key, ..."""
    p = sub.add_parser(
        "audit", help="prove the log only grew since the last run (--full: re-check it all)",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.add_argument("--state", required=True, metavar="DIR",
                   help="directory keeping the trusted checkpoint, progress and evidence")
    p.add_argument("--full", action="store_true",
                   help="also re-check every entry, tile and the root (resumable)")
    p.add_argument("--trust", metavar="CHECKPOINT_FILE",
                   help="a signed checkpoint you trust; it must verify with --key (else exit "
                        "2) and the log must prove its current checkpoint extends it")
    p.add_argument("--workers", type=_workers, metavar="N",
                   help="processes for --full (default: one per core; 0: no extra process)")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from verifier.cli.main import client_for  # verifier.cli imports this module

    key = load_vkey(args.key)
    trust = load_trust(Path(args.trust), key) if args.trust else None
    with StateDir(Path(args.state)) as state:
        before = state.load_trusted(KeyTrust(key))
        trusted = audit(client_for(args, state), key, state, trust)
        print(_describe(trusted, before, trust))
        if args.full:
            # Not the state's tile cache: check what the log serves now, and don't keep a
            # second copy of the whole log on disk.
            client = LogClient(args.log, timeout=args.timeout, retries=args.retries)
            shown = ProgressLine(sys.stderr)
            try:
                result = full_audit(client, trusted, state, workers=args.workers,
                                    progress=shown)
            finally:
                shown.close()
            print(result.summary())
    return EXIT_OK


def _describe(now: Trusted, before: Trusted | None, trust: Trusted | None) -> str:
    head = f"{now.checkpoint.origin} size {now.size} root {b64encode(now.root)}"
    proven = [f"{what} size {t.size}" for what, t in (("--trust", trust), ("stored", before))
              if t is not None]
    if not proven:
        return f"OK {head}: trusted on first use (no stored checkpoint, no --trust)"
    return f"OK {head}: consistent with the {' and the '.join(proven)} checkpoint"

