"""Benchmark: N concurrent submissions spread over two `tlog serve` processes on one database.

Prints entries/s and the median and p99 submission latency (submit -> receipt), with
PostgreSQL's fsync on. Usage: python bench/concurrent_appends.py [--entries 2000] [--servers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from tests.support import make_release, start_server, submit_all, write_key
from tlog.cli.pgcluster import Cluster
from tlog.store import migrate
from verifier.protocol.note import generate_key


async def _database(cluster: Cluster, name: str) -> str:
    conn = await asyncpg.connect(cluster.url())
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    conn = await asyncpg.connect(cluster.url(name))
    await migrate.migrate(conn)
    await conn.close()
    return cluster.url(name)


@contextmanager
def fsync_cluster(prefix: str) -> Iterator[tuple[Cluster, Path]]:
    """A throwaway PostgreSQL with fsync on, in a new work directory (both removed after)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    work.chmod(0o755)
    cluster = Cluster(work / "pg")
    cluster.init()
    cluster.start(fsync=True)
    try:
        yield cluster, work
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_round(cluster: Cluster, work: Path, n: int, servers: int, round_no: int) -> None:
    url = asyncio.run(_database(cluster, f"bench{round_no}"))
    key = write_key(work / f"log{round_no}.key", generate_key("bench.example/log"))
    publisher = generate_key("bench-publisher")
    entries = [make_release(publisher, f"pkg{i % 100}", f"{round_no}.{i}") for i in range(n)]
    procs = [start_server(url, key, work) for _ in range(servers)]
    try:
        started = time.perf_counter()
        results = asyncio.run(submit_all([p.url for p in procs], entries))
        elapsed = time.perf_counter() - started
    finally:
        for p in procs:
            p.stop()
    bad = [r for r in results if r.status != 201]
    if bad:
        raise SystemExit(f"{len(bad)} submissions failed, e.g. {bad[0].status} {bad[0].body}")
    lat = sorted(r.seconds for r in results)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"round {round_no}: {n} entries over {servers} servers in {elapsed:.2f} s = "
          f"{n / elapsed:,.0f} entries/s; latency median {statistics.median(lat) * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with fsync_cluster("tlog-bench-") as (cluster, work):
        for r in range(args.rounds):
            run_round(cluster, work, args.entries, args.servers, r)


if __name__ == "__main__":
    main()
