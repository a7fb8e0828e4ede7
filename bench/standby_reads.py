"""Reads from a hot standby next to reads from the primary, in one run.

A primary and a `pg_basebackup -R` standby on this machine (tests/standby_support.py),
a log of --entries releases, then two `tlog serve` on it: one reading the primary only,
one with --read-database-url. Each gets the same read mix (entries, inclusion proofs,
checkpoints) for --seconds, first on a quiet log, then while a writer appends; printed:
reads/s, the share the standby answered, and the transactions each database ran.

    python bench/standby_reads.py --entries 2000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.standby_support import create_database, replicated_clusters, wait_replayed
from tests.support import Server, make_release, start_server, submit_all, write_key
from verifier.protocol.note import generate_key


async def commits(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


async def read_load(url: str, receipts: list[dict[str, Any]], seconds: float,
                    workers: int = 32) -> int:
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            r = random.choice(receipts)
            for path in (f"/v1/entries/{r['index']}", "/checkpoint",
                         f"/v1/proof/inclusion?leaf_hash={r['leaf_hash']}"):
                async with session.get(url + path) as resp:
                    await resp.read()
                    assert resp.status == 200, (path, resp.status)
                done += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(workers)))
    return done


async def write_load(url: str, seconds: float) -> int:
    publisher, n = generate_key("bench-writer"), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = [make_release(publisher, "bench-live", f"{n}.{i}") for i in range(20)]
        await submit_all([url], batch)
        n += 1
        await asyncio.sleep(0.05)
    return n * 20


def routed_counts(server: Server) -> tuple[float, float]:
    """(reads the standby answered, reads sent to the primary) so far."""
    import urllib.request
    with urllib.request.urlopen(server.url + "/metrics") as resp:
        text = resp.read().decode()
    standby = sum(float(m) for m in re.findall(r"^tlog_standby_reads_total (\S+)", text, re.M))
    other = sum(float(m) for m in re.findall(r"^tlog_standby_fallbacks_total\S* (\S+)", text,
                                             re.M))
    return standby, other


async def phase(name: str, server: Server, urls: tuple[str, str], receipts: list[Any],
                seconds: float, writer: Server | None) -> None:
    before = [await commits(u) for u in urls]
    was = routed_counts(server)
    tasks = [read_load(server.url, receipts, seconds)]
    if writer is not None:
        tasks.append(write_load(writer.url, seconds))
    reads, *_ = await asyncio.gather(*tasks)
    after = [await commits(u) for u in urls]
    now = routed_counts(server)
    standby, other = now[0] - was[0], now[1] - was[1]
    share = (f"{standby / (standby + other):.2%} ({other:.0f} fell back)"
             if standby + other else "-")
    print(f"{name:<40} {reads / seconds:>9.0f} reads/s  standby answered "
          f"{share:>20}  primary xacts {after[0] - before[0]:>7}  "
          f"standby xacts {after[1] - before[1]:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tlog-bench-standby-"))
    with replicated_clusters() as pair:
        asyncio.run(create_database(pair.primary, "bench"))
        asyncio.run(wait_replayed(pair))
        urls = (pair.primary.url("bench"), pair.standby.url("bench"))
        key = write_key(tmp / "log.key", generate_key("bench.example/log"))
        plain = start_server(urls[0], key, tmp)
        routed = start_server(urls[0], key, tmp, extra=(
            "--policy", "open", "--read-database-url", urls[1]))
        try:
            publisher = generate_key("bench-bot")
            results = asyncio.run(submit_all([plain.url], [
                make_release(publisher, f"pkg{i % 50}", f"1.{i}") for i in range(args.entries)]))
            receipts = [r.body for r in results]
            asyncio.run(wait_replayed(pair))
            time.sleep(1.5)  # the router's refresh sees the replayed size
            for label, writer in (("quiet", None), ("another process appends", plain)):
                asyncio.run(phase(f"primary only, {label}", plain, urls, receipts,
                                  args.seconds, writer))
                asyncio.run(phase(f"with standby, {label}", routed, urls, receipts,
                                  args.seconds, writer))
            # The appending process knows its new sizes at once: until the standby replays
            # them, reads about them go to the primary.
            asyncio.run(phase("with standby, it appends itself", routed, urls, receipts,
                              args.seconds, routed))
        finally:
            plain.stop()
            routed.stop()


if __name__ == "__main__":
    main()
