"""`tlog mirror`: keep a verified static copy of a log that any web server can serve.

The copy in --out DIR holds exactly the C2SP tlog-tiles paths of the log (DIR/checkpoint,
DIR/tile/<L>/<N>[.p/<W>], DIR/tile/entries/<N>[.p/<W>]) with the bytes the log served, so
nginx or a CDN serving DIR is a read-only replica clients verify like the log itself
(`tlog-verify ... --log MIRROR_URL`). Nothing is written that was not verified, with the
verifier's own code: the log's checkpoint verifies under --key or the --policy quorum
(LogClient.checkpoint), it extends the checkpoint already in DIR (a consistency proof,
tracking.prove_extends), and the new entries and tiles are checked by the full audit's
machinery (audit.full.full_audit, hashing only): every full tile equals the tree recomputed
from the entry bundles, the partial tiles of the right edge too, and the root the signed one.

Durability, in the order a crash can interrupt it:
1. Full tiles and bundles are written (temporary file, fsync, rename) when the audit saves its
   progress in the --state directory, and before that save: a saved progress never claims
   files DIR lacks, so a rerun continues from it (after proving the log's newer checkpoint
   extends the one the progress is about) and writes only what is missing. Without the
   state directory a run starts over: it fetches and checks everything, and only compares
   what DIR already holds.
2. Partial tiles of the new size, once the root matched.
3. DIR/checkpoint last: a reader never sees a checkpoint whose tiles are missing. Files beyond
   DIR/checkpoint (from a run interrupted before 3) are unreferenced until a later run ends.
4. The partial tiles that full tiles now replace are removed (their .p/ directories): a
   client holding an older checkpoint falls back to the full tile (C2SP tlog-tiles).
A file already in DIR is never replaced by different bytes: the run stops (exit 1), saving
both versions as evidence in the state directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verifier.cli.common import add_common, trust_for
from verifier.cli.progress import ProgressLine
from verifier.client.audit.full import full_audit
from verifier.client.audit.progress import PROGRESS_FILE
from verifier.client.fetch import Fetcher
from verifier.client.files import atomic_write
from verifier.client.log import LogClient, open_source
from verifier.client.statedir import StateDir
from verifier.client.tracking import prove_extends
from verifier.errors import (
    EXIT_OK,
    LogMisbehaviour,
    TransportError,
    UsageError,
    VerificationFailed,
    VerifyError,
)
from verifier.protocol.duration import parse_duration
from verifier.protocol.note import MAX_NOTE_SIZE
from verifier.protocol.state import Trusted, evidence
from verifier.protocol.tiles import (
    ENTRIES_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    TreeBuilder,
    decode_bundle,
    encode_bundle,
    parse_tile_path,
    tile_path,
    tile_width,
)
from verifier.protocol.trust import LogTrust

__all__ = ["MirrorResult", "add_mirror_command", "mirror_once"]

CHECKPOINT = "checkpoint"
FILE_MODE = 0o644  # served by a web server running as another user
SAVE_EVERY = 16  # entry bundles between progress saves: bounds what waits in memory


def _end(level: int, n: int) -> int:
    """The tree size at which tile (level, n) is full (level -1: entry bundle n)."""
    return (n + 1) * TILE_WIDTH << (TILE_HEIGHT * max(level, 0))


class Recorder:
    """A Fetcher that keeps the bytes of every tile and bundle fetched through it, for the
    mirror to write once the audit has checked them (fetching happens in threads)."""

    def __init__(self, upstream: Fetcher) -> None:
        self.upstream = upstream
        self.got: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def where(self, path: str) -> str:
        return self.upstream.where(path)

    def fetch(self, path: str, limit: int) -> bytes:
        data = self.upstream.fetch(path, limit)
        if path.startswith("tile/"):
            with self._lock:
                self.got[path] = data  # the last fetch of a path is the one checked
        return data

    def copy(self) -> Recorder:
        return self  # one process only: the mirror's audit runs without worker processes

    def take_full(self, upto: int) -> dict[str, bytes]:
        """Remove and return the full tiles and bundles that are complete at size `upto`."""
        with self._lock:
            done = {}
            for path in list(self.got):
                level, n, width = parse_tile_path(path)
                if width == TILE_WIDTH and _end(level, n) <= upto:
                    done[path] = self.got.pop(path)
            return done


class MirrorDir:
    """The static copy: files put at most once, atomically and durably."""

    def __init__(self, root: Path, state: StateDir) -> None:
        self.root, self.state = root, state
        self.written = self.present = 0

    def put(self, path: str, data: bytes) -> None:
        """Write `path` unless it exists; if it exists with other bytes, refuse (evidence)."""
        target = self.root / path
        try:
            ours = target.read_bytes()
        except FileNotFoundError:
            atomic_write(target, data, durable=True, mode=FILE_MODE)
            self.written += 1
            return
        if ours == data:
            self.present += 1
            return
        reason = (f"the log served {path} with bytes other than the copy in {self.root} "
                  "(a tile or bundle was rewritten, or the copy was altered); not replaced")
        files = evidence(reason) | {"ours/" + path: ours, "theirs/" + path: data}
        where = self.state.save_evidence(reason, files)
        raise LogMisbehaviour(f"{reason}; evidence saved in {where}", files)

    def checkpoint(self, trust: LogTrust) -> Trusted | None:
        """DIR/checkpoint, verified as `trust` requires (it was when written); None if absent."""
        path = self.root / CHECKPOINT
        try:
            data = path.read_bytes()[:MAX_NOTE_SIZE + 1]
        except FileNotFoundError:
            return None
        try:
            text = data.decode("utf-8")
            return Trusted(trust.open(text), text)
        except ValueError as exc:
            raise UsageError(f"{path} is not a checkpoint of {trust.origin} ({exc}); is "
                             "--out the copy of another log?") from exc


class _Progress(StateDir):
    """The audit's state directory, writing the checked files to DIR before each progress
    save: the save then claims only files that are on disk."""

    def __init__(self, path: Path, flush: Callable[[int], None]) -> None:
        super().__init__(path)
        self.flush = flush

    def write_json(self, name: str, value: Any) -> None:
        if name == PROGRESS_FILE:
            self.flush(int(value["next"]))
        super().write_json(name, value)

    def write_text(self, name: str, text: str) -> None:
        if name == PROGRESS_FILE:  # how the audit writes its progress now
            self.flush(int(json.loads(text)["next"]))
        super().write_text(name, text)


class MirrorResult:
    def __init__(self, trusted: Trusted, before: int, written: int, present: int,
                 removed: int) -> None:
        self.trusted, self.before = trusted, before
        self.written, self.present, self.removed = written, present, removed

    def summary(self, out: Path) -> str:
        cp = self.trusted.checkpoint
        grew = (f"from size {self.before}" if self.before >= 0 else "new copy")
        return (f"OK mirrored {cp.origin} size {cp.size} into {out} ({grew}): "
                f"{self.written} files written, {self.present} already there, "
                f"{self.removed} superseded partial tiles removed")


def _start(state: StateDir) -> int:
    raw = state.read_json(PROGRESS_FILE, None)
    return int(raw["next"]) if isinstance(raw, dict) and "next" in raw else 0


def _edge_files(size: int) -> list[tuple[int, int, int]]:
    """(level, n, width) of every partial tile and bundle of a tree of `size`."""
    keys = TreeBuilder.edge_keys(size)
    width = tile_width(ENTRIES_LEVEL, size // TILE_WIDTH, size)
    if width:
        keys.append((ENTRIES_LEVEL, size // TILE_WIDTH, width))
    return keys


def _partial(got: dict[str, bytes], level: int, n: int, width: int) -> bytes:
    """The checked bytes of a partial tile: as fetched, or cut from the full tile a log
    without that partial served (the audit checked its first `width` hashes or entries)."""
    data = got.get(tile_path(level, n, width))
    if data is not None:
        return data
    full = got.get(tile_path(level, n))
    if full is None:  # unreachable: the audit fetched one of them, or failed
        raise VerificationFailed(f"the log served neither {tile_path(level, n, width)} "
                                 f"nor {tile_path(level, n)}")
    if level == ENTRIES_LEVEL:
        return encode_bundle(decode_bundle(full, TILE_WIDTH)[:width])
    return full[:32 * width]


def mirror_once(upstream: Fetcher, trust: LogTrust, out: Path, state_dir: Path,
                progress: Callable[[int, int], None] | None = None) -> MirrorResult:
    """Bring the copy in `out` up to the log's current checkpoint (see the module doc).

    Raises VerificationFailed (LogMisbehaviour with evidence in `state_dir`), TransportError,
    UsageError.
    """
    recorder = Recorder(upstream)
    client = LogClient(recorder)
    state = _Progress(state_dir, lambda upto: None)
    with state:
        files = MirrorDir(out, state)
        cp, note = client.checkpoint(trust)
        new = Trusted(cp, note)
        old = files.checkpoint(trust)
        if old is not None:
            prove_extends(client, old, new, state)
        # Where the audit resumes: the progress of the last run (interrupted or not). Without
        # it (a new copy, a lost state directory) everything is fetched and checked again,
        # and files already in DIR only compared.
        start = _start(state)

        def flush(upto: int) -> None:
            for path, data in sorted(recorder.take_full(upto).items()):
                level, n, _ = parse_tile_path(path)
                if _end(level, n) > start:
                    files.put(path, data)
                elif (out / path).exists():
                    files.put(path, data)  # compared only: checked by an earlier run
        state.flush = flush
        full_audit(client, new, state, workers=0, validate=False, progress=progress,
                   save_every=SAVE_EVERY)
        flush(new.size)
        for level, n, width in _edge_files(new.size):
            files.put(tile_path(level, n, width), _partial(recorder.got, level, n, width))
        # Last: from here on readers see the new size, every tile of it on disk.
        atomic_write(out / CHECKPOINT, note.encode("utf-8"), durable=True, mode=FILE_MODE)
        removed = _prune(out, old.size if old is not None else 0, new.size)
        return MirrorResult(new, old.size if old is not None else -1, files.written,
                            files.present, removed)


def _prune(out: Path, before: int, size: int) -> int:
    """Remove the partial tiles of the old size whose full tile is now in DIR."""
    removed = 0
    for level, n, _ in _edge_files(before):
        if tile_width(level, n, size) == TILE_WIDTH:
            partials = out / (tile_path(level, n) + ".p")
            if partials.is_dir():
                removed += sum(1 for _ in partials.iterdir())
                shutil.rmtree(partials)
    return removed


# -- the command ---------------------------------------------------------------------------


def add_mirror_command(sub: Any) -> None:
    m = sub.add_parser(
        "mirror", help="keep a verified static copy of a log (C2SP tlog-tiles files)",
        description="Copy the log's checkpoint, hash tiles and entry bundles into --out, "
                    "verifying them first (signature or witness quorum, consistency with "
                    "the copy, every tile against the tree recomputed from the entries). "
                    "Serve --out with any web server; clients name it with --log.")
    m.add_argument("--log", required=True, metavar="URL",
                   help="the log's base URL (or a file: URL of another copy)")
    add_common(m, log=False)
    m.add_argument("--out", required=True, metavar="DIR", help="the copy's directory")
    m.add_argument("--state", metavar="DIR",
                   help="progress, lock and evidence (default: OUT.mirror-state, beside "
                        "OUT: the copy holds only the log's files)")
    when = m.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one round, then exit (default)")
    when.add_argument("--interval", metavar="DUR",
                      help="repeat every DUR (30s, 5m) until stopped; transport errors are "
                           "reported and retried next round, a failed check stops")
    m.set_defaults(func=cmd_mirror)


def cmd_mirror(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except VerifyError as exc:
        print(f"tlog mirror: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tlog mirror: interrupted; the copy is valid and a rerun continues",
              file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    trust = trust_for(args)
    interval = None
    if args.interval is not None:
        try:
            interval = parse_duration(args.interval)
        except ValueError as exc:
            raise UsageError(f"--interval: {exc}") from exc
    out = Path(args.out)
    state = Path(args.state) if args.state else out.with_name(out.name + ".mirror-state")
    upstream = open_source(args.log, timeout=args.timeout, retries=args.retries)
    while True:
        shown = ProgressLine(sys.stderr, label="tlog mirror:")
        try:
            result = mirror_once(upstream, trust, out, state, progress=shown)
        except TransportError as exc:
            if interval is None:
                raise
            print(f"tlog mirror: {exc}; trying again in {interval} s", file=sys.stderr)
        except VerificationFailed:
            raise
        else:
            print(result.summary(out), flush=True)
        finally:
            shown.close()
        if interval is None:
            return EXIT_OK
        time.sleep(interval)
