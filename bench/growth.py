"""Benchmark: does a log stay as fast as it grows? A log built through POST /v1/entries/batch.

Builds an open log (PostgreSQL with fsync on, `tlog serve` with its quotas raised) to
--entries entries (default 10,000,000) through the batch endpoint and prints the build's
progress, total time and entries/s. At --small entries (default 10,000) and again at the
end it measures, with `tlog bench read`, the latency of inclusion proofs by leaf hash (one
request at a time: the time one proof takes) and the throughput of the read mix (proofs,
tiles, bundles, checkpoints at --read-concurrency), medians of --runs rounds, and prints the
large log's figures as ratios to the small one's. The goal: within 1.2 x. Last, what the
large log costs PostgreSQL: every table's size and the bytes per entry (as
bench/footprint.py prints them).

Entries are bench/build_log.py's (1,000 packages, 1 to 3 artifacts, 8 publishers), signed
in worker processes *before* the build into a spool of batch bodies, so the build times
the log alone; entry i is a function of i and the spool is kept in the work directory.
With --work-dir the database, keys and spool stay there and a rerun resumes the build
where it stopped (without it everything is removed at the end).

Usage: python bench/growth.py [--entries 10000000] [--small 10000] [--work-dir DIR]
       [--concurrency 4] [--workers 2] [--runs 3] [--read-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import asyncpg

from bench.build_log import PUBLISHERS, _init_worker, generate
from tests.support import Server, start_server, write_key
from tlog.cli.pgcluster import Cluster
from tlog.store import migrate
from verifier.client.keys import read_private_key
from verifier.protocol.note import Signer, generate_key, parse_private_key

BATCH = 1000  # entries per request: the endpoint's limit
SPOOL_CHUNK = 20  # batches per worker task
DATABASE = "growth"
RAISED = ("--policy", "open", "--client-rate", "1000000", "--client-burst", "1000000",
          "--publisher-rate", "1000000", "--publisher-burst", "1000000",
          "--read-rate", "1000000", "--read-burst", "1000000")
PROGRESS_EVERY = 10.0  # seconds
MB = 1_000_000


# -- the spool: batch bodies signed ahead of the build ----------------------------------------


def spool_bodies(first_batch: int, count: int) -> bytes:
    """Batches first_batch .. +count as JSON lines of POST /v1/entries/batch bodies (a leaf
    is the entry's canonical JSON, so it goes into the body as it is)."""
    rows = generate(first_batch * BATCH, count * BATCH)
    lines = [b'{"entries":[' + b",".join(r[0] for r in rows[k * BATCH:(k + 1) * BATCH])
             + b"]}\n" for k in range(count)]
    return b"".join(lines)


def spooled_batches(spool: Path) -> int:
    """Whole batches in the spool; a torn last line (an interrupted run) is cut off. Read in
    pieces: a 10,000,000-entry spool is about 4.5 GB."""
    if not spool.exists():
        return 0
    lines, whole, at = 0, 0, 0
    with spool.open("rb") as f:
        while piece := f.read(1 << 24):
            lines += piece.count(b"\n")
            if (last := piece.rfind(b"\n")) >= 0:
                whole = at + last + 1
            at += len(piece)
    if whole != at:
        with spool.open("r+b") as f:
            f.truncate(whole)
    return lines


def fill_spool(spool: Path, publishers: list[Signer], batches: int, workers: int) -> None:
    have = spooled_batches(spool)
    if have >= batches:
        print(f"spool: {have:,} batches of {BATCH} already signed ({spool})", flush=True)
        return
    print(f"spool: signing batches {have:,} .. {batches - 1:,} in {workers} processes",
          flush=True)
    started = time.perf_counter()
    ctx = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=([p.text() for p in publishers],)) as pool, \
            spool.open("ab") as out:
        firsts = range(have, batches, SPOOL_CHUNK)
        counts = [min(SPOOL_CHUNK, batches - f) for f in firsts]
        for n, data in enumerate(pool.map(spool_bodies, firsts, counts)):
            out.write(data)
            if n % 25 == 24:
                done = (firsts[n] + counts[n]) * BATCH
                print(f"  signed {done:,} entries, "
                      f"{(done - have * BATCH) / (time.perf_counter() - started):,.0f}/s",
                      flush=True)
    seconds = time.perf_counter() - started
    print(f"spool: {(batches - have) * BATCH:,} entries signed in {seconds:.1f} s", flush=True)


def bodies_from(spool: Path, first: int) -> Iterator[bytes]:
    with spool.open("rb") as f:
        for n, line in enumerate(f):
            if n >= first:
                yield line.rstrip(b"\n")


# -- the build ---------------------------------------------------------------------------------


class Build:
    """Appends spooled batches in order, `concurrency` at once, and records the acked prefix
    in `progress` (so a rerun resumes after the last batch known to be in)."""

    def __init__(self, url: str, spool: Path, progress: Path, concurrency: int) -> None:
        self.url, self.spool, self.progress, self.concurrency = url, spool, progress, concurrency
        self.done = self._read_progress()
        self.seconds = 0.0  # time spent appending, over every leg of this run
        self.appended = 0
        self._last = (0.0, 0)  # (seconds, appended) at the last progress line

    def _read_progress(self) -> int:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads(self.progress.read_text())["batches"])
        return 0

    async def to(self, batches: int) -> None:
        """Append until `batches` batches are in the log."""
        if self.done >= batches:
            return
        bodies = bodies_from(self.spool, self.done)
        acked: set[int] = set()
        next_no, started, last = self.done, time.perf_counter(), time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                nonlocal next_no, last
                while next_no < batches:
                    no, body = next_no, next(bodies)
                    next_no += 1
                    await self._post(session, body, no)
                    acked.add(no)
                    while self.done in acked:  # the acked prefix only grows
                        acked.discard(self.done)
                        self.done += 1
                    if time.perf_counter() - last >= PROGRESS_EVERY:
                        last = time.perf_counter()
                        self._save()
                        self._report(started)

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self._save()
        self._report(started)
        self.seconds += time.perf_counter() - started

    async def _post(self, session: aiohttp.ClientSession, body: bytes, no: int) -> None:
        async with session.post(self.url + "/v1/entries/batch", data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            answer = await resp.read()
        if resp.status != 200:
            raise SystemExit(f"batch {no} failed: HTTP {resp.status} {answer[:300]!r}")
        statuses = {r["status"] for r in json.loads(answer)["results"]}
        if not statuses <= {200, 201}:  # 200: already in (a resumed run's last batches)
            raise SystemExit(f"batch {no}: entries refused, statuses {sorted(statuses)}")
        self.appended += BATCH

    def _save(self) -> None:
        self.progress.write_text(json.dumps({"batches": self.done}) + "\n")

    def _report(self, started: float) -> None:
        """Progress: the rate overall and since the last report (a log that slows down as
        it grows shows in the second)."""
        leg = time.perf_counter() - started
        seconds, appended = self.seconds + leg, self.appended
        then_s, then_n = self._last
        self._last = (seconds, appended)
        print(f"  {self.done * BATCH:>12,} entries in the log; {seconds:8.1f} s appending, "
              f"{appended / max(seconds, 1e-9):,.0f} entries/s overall, "
              f"{(appended - then_n) / max(seconds - then_s, 1e-9):,.0f} lately", flush=True)


# -- the measurements ------------------------------------------------------------------------


def bench_read(url: str, args: argparse.Namespace, *options: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tlog", "bench", "read", "--log", url, "--json",
           "--duration", f"{args.read_seconds}s", "--runs", str(args.runs), *options]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          timeout=60 + 4 * args.runs * args.read_seconds)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def measure(server: Server, args: argparse.Namespace, entries: int) -> dict[str, float]:
    time.sleep(args.settle)  # let the last batches' background work end
    proof = bench_read(server.url, args, "--read-kind", "proof", "--concurrency", "1")
    mix = bench_read(server.url, args, "--concurrency", str(args.read_concurrency))
    figures = {"proof_p50_ms": proof["latency_ms"]["p50"],
               "proof_p99_ms": proof["latency_ms"]["p99"],
               "read_mix_rps": mix["throughput_rps"]}
    print(f"at {entries:,} entries (tree size {mix['tree_size_after']:,}): inclusion proof "
          f"p50 {figures['proof_p50_ms']} ms, p99 {figures['proof_p99_ms']} ms (one at a "
          f"time); read mix {figures['read_mix_rps']:,.0f} requests/s at concurrency "
          f"{args.read_concurrency} (medians of {args.runs})", flush=True)
    for kind, k in mix.get("by_kind", {}).items():  # which read slows down, if one does
        figures[f"{kind}_rps"] = k["throughput_rps"]
        print(f"  {kind}: {k['throughput_rps']:,.0f}/s, p50 {k['p50']} ms, p99 {k['p99']} ms",
              flush=True)
    return figures


async def storage_report(url: str) -> None:
    """Bytes per entry of every table in the log's database (public schema)."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes, "
            "pg_relation_size(c.oid) AS heap FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
            "ORDER BY bytes DESC")
        row = await conn.fetchrow(
            "SELECT count(*) AS n, avg(length(leaf))::float AS leaf, "
            "count(*) FILTER (WHERE kind = 'release/v1') AS releases, "
            "avg(length(leaf)) FILTER (WHERE kind = 'release/v1')::float AS release_leaf "
            "FROM entries")
    finally:
        await conn.close()
    n, leaf = int(row["n"]), float(row["leaf"] or 0)
    total = sum(int(t["bytes"]) for t in tables)
    print(f"PostgreSQL storage: {total / MB:,.1f} MB in {len(tables)} tables (with their "
          f"indexes and TOAST), {n:,} entries ({int(row['releases']):,} releases, mean leaf "
          f"{float(row['release_leaf'] or 0):.0f} bytes; the rest are map roots)")
    for t in tables:
        print(f"  {t['name']:<16} {int(t['bytes']):>14,} bytes  {int(t['bytes']) / max(n, 1):8.1f}"
              f" per entry  (heap {int(t['heap']):,})")
    per_entry = total / max(n, 1)
    print(f"bytes per entry: {per_entry:,.0f}; mean entry (leaf) bytes {leaf:,.0f}; "
          f"difference {per_entry - leaf:+,.0f} (goal: at most entry bytes + 150)")


# -- setup -------------------------------------------------------------------------------------


def keys(work: Path) -> tuple[Path, list[Signer]]:
    """The log key and the publishers' keys, made once per work directory."""
    key, pubs = work / "log.key", work / "publishers.json"
    if not key.exists():
        write_key(key, generate_key("growth.bench.example/log"))
    read_private_key(str(key))  # fails early on a damaged key file
    if not pubs.exists():
        pubs.write_text(json.dumps([generate_key(n).text() for n in PUBLISHERS]) + "\n")
        pubs.chmod(0o600)
    return key, [parse_private_key(t) for t in json.loads(pubs.read_text())]


@contextlib.contextmanager
def work_dir(path: Path | None) -> Iterator[Path]:
    """--work-dir kept, or a temporary one removed at the end."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)  # the postgres user must reach path/pg
        yield path.resolve()
        return
    work = Path(tempfile.mkdtemp(prefix="tlog-growth-"))
    work.chmod(0o755)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def cluster_in(work: Path) -> Iterator[str]:
    """The work directory's PostgreSQL (fsync on), started, its database migrated."""
    cluster = Cluster(work / "pg")
    if not (work / "pg").exists():
        cluster.init()
    cluster.ensure_running(fsync=True)
    try:
        asyncio.run(migrate.create_database(cluster.url(), DATABASE))
        asyncio.run(migrate.migrate_database(cluster.url(DATABASE)))
        yield cluster.url(DATABASE)
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--small", type=int, default=10_000,
                    help="the size the large log is compared with (default 10,000)")
    ap.add_argument("--work-dir", type=Path, help="keep the log, keys and spool here and "
                                                  "resume from them (default: a temporary "
                                                  "directory, removed)")
    ap.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                    help="signing processes for the spool (default: one per core)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--read-seconds", type=int, default=10)
    ap.add_argument("--read-concurrency", type=int, default=64)
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds of quiet before each measurement")
    args = ap.parse_args()
    if args.entries % BATCH or args.small % BATCH or not 0 < args.small < args.entries:
        ap.error(f"--entries and --small must be multiples of {BATCH}, 0 < small < entries")
    run(args)


def run(args: argparse.Namespace) -> None:
    with work_dir(args.work_dir) as work:
        key, publishers = keys(work)
        spool = work / "spool.jsonl"
        fill_spool(spool, publishers, args.entries // BATCH, args.workers)
        with cluster_in(work) as url:
            server = start_server(url, key, work, extra=RAISED, timeout=600)
            try:
                build = Build(server.url, spool, work / "progress.json", args.concurrency)
                if build.done > args.small // BATCH:
                    print(f"resuming at {build.done * BATCH:,} entries: the "
                          f"{args.small:,}-entry figures are not measured again", flush=True)
                    small = None
                else:
                    asyncio.run(build.to(args.small // BATCH))
                    small = measure(server, args, args.small)
                asyncio.run(build.to(args.entries // BATCH))
                print(f"build: {build.appended:,} entries appended in {build.seconds:,.1f} s "
                      f"= {build.appended / max(build.seconds, 1e-9):,.0f} entries/s "
                      f"(batches of {BATCH}, {args.concurrency} at once, fsync on)", flush=True)
                large = measure(server, args, args.entries)
            finally:
                server.stop()
            asyncio.run(storage_report(url))  # what the large log costs PostgreSQL
    if small is not None:
        print(f"{args.entries:,} vs {args.small:,} entries (goal: within 1.2 x): proof p50 "
              f"{large['proof_p50_ms'] / small['proof_p50_ms']:.2f} x, p99 "
              f"{large['proof_p99_ms'] / small['proof_p99_ms']:.2f} x; read mix throughput "
              f"{small['read_mix_rps'] / large['read_mix_rps']:.2f} x slower "
              f"({large['read_mix_rps'] / small['read_mix_rps']:.2f} of it); by kind, "
              + ", ".join(f"{k[:-4]} {large[k] / small[k]:.2f}" for k in small
                          if k.endswith("_rps") and k != "read_mix_rps" and k in large
                          and small[k]) + " of the small log's throughput")


if __name__ == "__main__":
    main()
