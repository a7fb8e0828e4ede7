"""Build (or reuse) a large, real tlog log for the verifier benchmark.

The log lives in a throwaway PostgreSQL cluster under a cache directory (default
/tmp/tlog-bench-log): N entries (default 1,000,000): realistic release/v1 entries from several
publishers over ~1,000 packages with increasing versions and counters, each signed with
verifier.protocol.entries.signing.sign_entry, appended in batches exactly as the sequencer
appends a batch (the batch's map-root/v1 entry computed by tlog.log.statemap.next_map_root
with its map nodes, TreeBuilder over the leaf hashes, COPY of the entries, upsert of the
changed tiles, one signed checkpoint per batch, all in one AppendTx) and finally checked by
starting `tlog serve` on it, whose startup self-check must pass. Entry generation (JSON +
Ed25519 signing) runs in worker processes on every core while the main process appends.

Every batch is --batch releases and its map-root entry, so an auditor or monitor replays the
package state map as it does for a real log. The map costs a reader per batch, for each
package the batch touches, about the size of that package's state: smaller batches cost a
reader more per entry (the sequencer's own batches hold at most 512 single submissions, or
one request of up to 1,000 through the batch endpoint).

A second run with the same N finds the marker file and does nothing; a larger N
extends the log (release r is a deterministic function of r, so an interrupted build resumes
where it left).

Usage: python bench/build_log.py [--entries 1000000] [--cache-dir /tmp/tlog-bench-log]
       [--batch 50000] [--workers 2] [--rebuild]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache, cached_property
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import nacl.signing

from tests.support import start_server, write_key
from tlog.cli.pgcluster import Cluster
from tlog.log.edge import load_edge
from tlog.log.startup import publish_empty
from tlog.log.statemap import next_map_root
from tlog.store import migrate
from tlog.store.postgres import NewEntry, Storage
from tlog.store.reader import StoredCheckpoint
from verifier.client.files import atomic_write
from verifier.client.keys import read_private_key
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.protocol.entries.release import parse_leaf
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import Signer, Verifier, generate_key, parse_private_key

DEFAULT_CACHE = Path("/tmp/tlog-bench-log")
DEFAULT_ENTRIES = 1_000_000
DATABASE = "tlog"
LOG_NAME = "bench.tlog.example/log"
PACKAGES = 1000
PUBLISHERS = [
    "acme.example", "globex.example", "initech.example", "umbrella.example",
    "hooli.example", "stark.example", "wayne.example", "tyrell.example",
]
PLATFORMS = ["linux-amd64.tar.gz", "darwin-arm64.tar.gz", "windows-amd64.zip"]
ARTIFACT_WEIGHTS = (70, 22, 8)  # entries with 1, 2 and 3 artifacts
CHUNK = 2000  # entries per worker task
SAMPLE_EVERY = 64  # every 64th generated leaf is fully validated with parse_leaf
MARKER = "marker.json"
LAYOUT = "releases + map-root/v1 per batch"  # the marker's "layout"; older logs lack map roots

Row = tuple[bytes, bytes, str, str, int]  # leaf, leaf hash, package, version, counter


@dataclass(frozen=True)
class BenchLog:
    """Where a built log lives: its cluster, database URL, log key files and size."""

    cache_dir: Path
    cluster: Cluster
    url: str
    key_file: Path
    vkey_file: Path
    size: int
    marker: dict[str, Any]


def paths(cache_dir: Path) -> dict[str, Path]:
    return {"pg": cache_dir / "pg", "key": cache_dir / "log.key", "vkey": cache_dir / "log.vkey",
            "publishers": cache_dir / "publishers.json", "marker": cache_dir / MARKER}


def read_marker(cache_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(paths(cache_dir)["marker"].read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def open_log(cache_dir: Path) -> BenchLog:
    """The log a previous build left in `cache_dir` (cluster not started). SystemExit if none."""
    marker = read_marker(cache_dir)
    if marker is None:
        raise SystemExit(f"no built log in {cache_dir}: run bench/build_log.py first")
    p = paths(cache_dir)
    cluster = Cluster(p["pg"])
    return BenchLog(cache_dir, cluster, cluster.url(DATABASE), p["key"], p["vkey"],
                    int(marker["entries"]), marker)


# -- entry generation (worker processes) ----------------------------------------------------

class CachedSigner(Signer):
    """A Signer that derives its Ed25519 key pair once instead of on every signature.

    verifier.protocol.note.Signer re-derives the key from the seed in sign() and verifier(), which
    doubles the cost of signing a million entries; the signatures are the same.
    """

    @cached_property
    def _cached_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @cached_property
    def _cached_verifier(self) -> Verifier:
        return super().verifier()

    def _signing_key(self) -> nacl.signing.SigningKey:
        return self._cached_key

    def verifier(self) -> Verifier:
        return self._cached_verifier


_signers: list[Signer] = []


def _init_worker(private_keys: list[str]) -> None:
    for text in private_keys:
        s = parse_private_key(text)
        _signers.append(CachedSigner(s.name, s.key_id, s.seed))


@cache
def _round_order(round_no: int) -> list[int]:
    """Packages release in rounds; each round visits every package once, in shuffled order."""
    order = list(range(PACKAGES))
    random.Random(f"round-{round_no}").shuffle(order)
    return order


def entry_fields(index: int) -> tuple[dict[str, Any], int]:
    """The release/v1 fields of release number `index` (deterministic; not its log index,
    since map-root entries come between batches) and its publisher number.

    Round r = index // PACKAGES is the r-th release of every package: version 1.0.0,
    1.0.1, ... and counter r + 1 grow with each release of a package.
    """
    round_no, slot = divmod(index, PACKAGES)
    pkg = _round_order(round_no)[slot]
    publisher = pkg % len(PUBLISHERS)
    rng = random.Random(index)
    version = f"{1 + round_no // 100}.{round_no // 10 % 10}.{round_no % 10}"
    name = f"tool{pkg:04d}"
    count = rng.choices((1, 2, 3), weights=ARTIFACT_WEIGHTS)[0]
    artifacts = [{"name": f"{name}-{version}-{platform}", "sha256": rng.randbytes(32).hex(),
                  "size": rng.randint(100_000, 80_000_000)}
                 for platform in PLATFORMS[:count]]
    fields = {"kind": "release/v1", "package": f"{PUBLISHERS[publisher]}/{name}",
              "version": version, "counter": round_no + 1, "artifacts": artifacts}
    return fields, publisher


def canonical(entry: dict[str, Any]) -> bytes:
    """JCS (RFC 8785) of an entry with ASCII names, no floats and small integers.

    For such trees sorted-key, whitespace-free json.dumps is byte-identical to JCS; sampled
    leaves are re-checked with verifier.protocol.entries.release.parse_leaf, which refuses non-JCS
    leaves.
    """
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"),
                      sort_keys=True).encode("utf-8")


def generate(first: int, count: int) -> list[Row]:
    """Signed releases first .. first+count-1 as (leaf, leaf hash, package, version, counter)."""
    rows: list[Row] = []
    for index in range(first, first + count):
        fields, publisher = entry_fields(index)
        entry = sign_entry(fields, _signers[publisher])
        leaf = canonical(entry)
        if index % SAMPLE_EVERY == 0:
            release = parse_leaf(leaf)  # schema, JCS form and the publisher signature
            if release.publisher != _signers[publisher].name:
                raise AssertionError(f"entry {index} has the wrong publisher")
        rows.append((leaf, leaf_hash(leaf), entry["package"], entry["version"],
                     entry["counter"]))
    return rows


def generated(pool: ProcessPoolExecutor, start: int, end: int,
              in_flight: int) -> Generator[Future[list[Row]], None, None]:
    """Futures for the chunks of [start, end), in order, at most `in_flight` outstanding
    (those not taken are cancelled when the generator is closed)."""
    pending: deque[Future[list[Row]]] = deque()
    try:
        for first in range(start, end, CHUNK):
            pending.append(pool.submit(generate, first, min(CHUNK, end - first)))
            if len(pending) >= in_flight:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        for future in pending:
            future.cancel()


# -- appending (main process) ---------------------------------------------------------------


async def append_batch(storage: Storage, signer: Signer, rows: list[Row]) -> StoredCheckpoint:
    """One batch in one transaction, as tlog.log.sequencer.Sequencer._append does it: the
    releases, then the map-root entry over everything before it."""
    async with storage.append() as tx:
        latest = await tx.latest_checkpoint()
        if latest is None:
            raise RuntimeError("the log has no checkpoint (not even size 0)")
        builder = await load_edge(tx.tiles, latest.size, latest.root)
        new = [NewEntry(latest.size + i, leaf, lh, package, version, counter=counter)
               for i, (leaf, lh, package, version, counter) in enumerate(rows)]
        map_root, _ = await next_map_root(tx.state_map, latest.size, new)
        new.append(map_root)
        for entry in new:
            builder.append(entry.leaf_hash)
        await tx.insert_entries(new)
        await tx.put_tiles(builder.take_changed())
        root = builder.root()
        note = sign_checkpoint(Checkpoint(signer.name, builder.size, root), signer)
        cp = open_checkpoint(note, signer.verifier())
        if (cp.size, cp.root) != (builder.size, root):
            raise RuntimeError("the signed checkpoint does not match the tree just built")
        await tx.put_checkpoint(builder.size, root, note)
        return StoredCheckpoint(builder.size, root, note)


async def ensure_database(cluster: Cluster) -> str:
    await migrate.create_database(cluster.url(), DATABASE)
    await migrate.migrate_database(cluster.url(DATABASE))
    return cluster.url(DATABASE)


@contextlib.contextmanager
def cluster_up(log: BenchLog) -> Iterator[None]:
    """The log's PostgreSQL cluster running and its schema current: started here (and
    stopped at the end) unless it already runs, as when several benchmarks share it."""
    started = not log.cluster.is_running()
    if started:
        log.cluster.start()
    try:
        if applied := asyncio.run(migrate.migrate_database(log.url)):
            print(f"migrated the cached log's database: {', '.join(applied)}", flush=True)
        yield
    finally:
        if started:
            log.cluster.stop()


async def fill(url: str, signer: Signer, publishers: list[Signer], target: int, batch: int,
               workers: int) -> StoredCheckpoint:
    storage = await Storage.connect(url, min_size=1, max_size=2)
    try:
        await publish_empty(storage, signer)
        latest = await storage.latest_checkpoint()
        if latest is None:
            raise RuntimeError("the size-0 checkpoint was not published")
        if latest.size > target:
            raise SystemExit(f"the log already has {latest.size:,} entries, more than {target:,}"
                             "; use --rebuild or another --cache-dir")
        if latest.size == target:
            return latest
        released = await count_releases(url)
        print(f"appending entries {latest.size:,} .. {target - 1:,} in batches of {batch:,} "
              f"releases and a map root ({workers} generator processes)", flush=True)
        started, done = time.perf_counter(), latest.size
        first = done
        ctx = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=([p.text() for p in publishers],)) as pool:
            rows: list[Row] = []
            # At most target - size releases are needed (fewer: map roots take their places).
            chunks = generated(pool, released, released + target - done, in_flight=4 * workers)
            while done < target:
                want = min(batch, target - done - 1)  # the batch's map root takes one index
                while len(rows) < want:
                    rows.extend(await asyncio.wrap_future(next(chunks)))
                latest = await append_batch(storage, signer, rows[:want])
                done += want + 1
                del rows[:want]
                elapsed = time.perf_counter() - started
                print(f"  {done:>11,} / {target:,} entries  {elapsed:7.1f} s  "
                      f"{(done - first) / elapsed:,.0f} entries/s", flush=True)
            chunks.close()
        return latest
    finally:
        await storage.close()


async def count_releases(url: str) -> int:
    """Releases logged so far: the next release number to generate."""
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM entries WHERE package IS NOT NULL"))
    finally:
        await conn.close()


async def table_stats(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM (ANALYZE) entries")
        await conn.execute("VACUUM (ANALYZE) tiles")
        row = await conn.fetchrow(
            "SELECT count(*) AS n, avg(length(leaf))::float AS avg, min(length(leaf)) AS lo, "
            "max(length(leaf)) AS hi, count(DISTINCT package) AS packages FROM entries "
            "WHERE package IS NOT NULL")
        map_roots = await conn.fetchval("SELECT count(*) FROM entries WHERE package IS NULL")
        db_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
        checkpoints = await conn.fetchval("SELECT count(*) FROM checkpoints")
    finally:
        await conn.close()
    return {"count": int(row["n"]) + int(map_roots), "map_roots": int(map_roots),
            "avg_leaf": float(row["avg"] or 0), "min_leaf": row["lo"],
            "max_leaf": row["hi"], "packages": int(row["packages"]),
            "database_bytes": int(db_bytes), "checkpoints": int(checkpoints)}


# -- keys, marker, build ---------------------------------------------------------------------


def load_or_create_keys(cache_dir: Path) -> tuple[Signer, list[Signer]]:
    p = paths(cache_dir)
    if p["key"].exists():
        signer = read_private_key(p["key"])
    else:
        signer = generate_key(LOG_NAME)
        write_key(p["key"], signer)
    p["vkey"].write_text(signer.verifier().text() + "\n")
    if p["publishers"].exists():
        publishers = [parse_private_key(t) for t in json.loads(p["publishers"].read_text())]
    else:
        publishers = [generate_key(name) for name in PUBLISHERS]
        p["publishers"].write_text(json.dumps([s.text() for s in publishers], indent=1) + "\n")
        p["publishers"].chmod(0o600)
    return signer, publishers


def check_with_server(url: str, key_file: Path, expected: StoredCheckpoint, work: Path) -> float:
    """Start `tlog serve` (its startup self-check must pass) and compare its checkpoint."""
    import urllib.request

    started = time.perf_counter()
    server = start_server(url, key_file, work, timeout=120)
    try:
        with urllib.request.urlopen(server.url + "/checkpoint", timeout=10) as resp:
            served = resp.read().decode()
    finally:
        server.stop()
    if served != expected.note:
        raise RuntimeError("tlog serve publishes a different checkpoint than the build wrote")
    return time.perf_counter() - started


def write_marker(cache_dir: Path, marker: dict[str, Any]) -> None:
    text = json.dumps(marker, indent=1) + "\n"
    atomic_write(paths(cache_dir)["marker"], text.encode(), durable=False)


def build(cache_dir: Path = DEFAULT_CACHE, entries: int = DEFAULT_ENTRIES, batch: int = 50_000,
          workers: int | None = None, rebuild: bool = False) -> BenchLog:
    """Make sure `cache_dir` holds a verified log of exactly `entries` entries; return it."""
    cache_dir = cache_dir.resolve()
    marker = read_marker(cache_dir)
    if rebuild and cache_dir.exists():
        print(f"removing {cache_dir}", flush=True)
        if (cache_dir / "pg").exists():
            Cluster(cache_dir / "pg").stop()
        shutil.rmtree(cache_dir)
        marker = None
    if marker is not None and marker.get("layout") != LAYOUT:
        raise SystemExit(f"{cache_dir} holds a log built without map-root entries (the "
                         "sequencer ends every batch with one since the package state map): "
                         "use --rebuild or another --cache-dir")
    if marker is not None and marker.get("entries") == entries:
        print(f"{cache_dir} already holds a log of {entries:,} entries (built "
              f"{marker.get('built_at')} in {marker.get('build_seconds', 0):.0f} s, "
              f"vkey {marker.get('vkey')}); nothing to do", flush=True)
        return open_log(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.chmod(0o755)  # the postgres user must reach cache_dir/pg
    workers = workers or len(os.sched_getaffinity(0))
    signer, publishers = load_or_create_keys(cache_dir)
    p = paths(cache_dir)
    p["marker"].unlink(missing_ok=True)  # a marker only ever describes a finished, checked log
    cluster = Cluster(p["pg"])
    started = time.perf_counter()
    cluster.ensure_running(fsync=False)  # a cache: a crash of the OS just means rebuilding
    try:
        url = asyncio.run(ensure_database(cluster))
        latest = asyncio.run(fill(url, signer, publishers, entries, batch, workers))
        fill_seconds = time.perf_counter() - started
        print(f"log filled to {latest.size:,} entries in {fill_seconds:.1f} s; VACUUM ANALYZE",
              flush=True)
        stats = asyncio.run(table_stats(url))
        if stats["count"] != entries:
            raise RuntimeError(f"{stats['count']} entries stored, want {entries}")
        with tempfile.TemporaryDirectory(prefix="tlog-bench-serve-") as work:
            serve_seconds = check_with_server(url, p["key"], latest, Path(work))
        print(f"`tlog serve` started on it and passed its self-check in {serve_seconds:.1f} s",
              flush=True)
    finally:
        cluster.stop()
    total = time.perf_counter() - started
    marker = {"entries": entries, "layout": LAYOUT, "map_roots": stats["map_roots"],
              "vkey": signer.verifier().text(), "database": DATABASE,
              "schema_version": migrate.latest_version(),
              "root": latest.root.hex(), "built_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "build_seconds": round(total, 1), "batch": batch, "workers": workers,
              "leaf_bytes": {"avg": round(stats["avg_leaf"], 1), "min": stats["min_leaf"],
                             "max": stats["max_leaf"]},
              "packages": stats["packages"], "publishers": len(publishers),
              "checkpoints": stats["checkpoints"], "database_bytes": stats["database_bytes"]}
    write_marker(cache_dir, marker)
    print(f"built {entries:,} entries in {total:.1f} s: leaves {stats['avg_leaf']:.0f} bytes on "
          f"average ({stats['min_leaf']}..{stats['max_leaf']}), {stats['packages']} packages, "
          f"{len(publishers)} publishers, {stats['checkpoints']} checkpoints, "
          f"{stats['map_roots']} map roots, database "
          f"{stats['database_bytes'] / 2**20:,.0f} MiB\nlog vkey: {marker['vkey']} "
          f"({p['vkey']})", flush=True)
    return open_log(cache_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=DEFAULT_ENTRIES)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--batch", type=int, default=50_000,
                    help="releases per append transaction, each followed by a map-root entry")
    ap.add_argument("--workers", type=int, default=None,
                    help="entry generator processes (default: one per core)")
    ap.add_argument("--rebuild", action="store_true", help="delete the cache dir and start over")
    args = ap.parse_args()
    if args.entries < 1 or args.batch < 1:
        ap.error("--entries and --batch must be positive")
    build(args.cache_dir, args.entries, args.batch, args.workers, args.rebuild)


if __name__ == "__main__":
    main()
