"""Benchmark: appends through POST /v1/entries/batch, batches of 1000, to one `tlog serve`.

Prints entries/s per round (each round a fresh database, PostgreSQL with fsync on, client
quotas raised) and the latency of one batch request. The issue's goal: >= 15,000 entries/s.
Usage: python bench/batch_appends.py [--batches 20] [--concurrency 4] [--rounds 3]
       [--packages N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.concurrent_appends import _database, fsync_cluster
from tests.support import make_release, start_server, write_key
from tlog.cli.pgcluster import Cluster
from verifier.protocol.note import generate_key

BATCH = 1000
RAISED = ("--policy", "open", "--client-rate", "1000000", "--client-burst", "1000000")


async def send(url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    """POST every body, `concurrency` at once; each request's seconds."""
    queue = list(reversed(bodies))
    seconds: list[float] = []
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                async with session.post(url + "/v1/entries/batch", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    answer = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"batch failed: {resp.status} {answer[:300]!r}")
                statuses = {r["status"] for r in json.loads(answer)["results"]}
                if statuses != {201}:
                    raise SystemExit(f"entries not appended: {statuses}")
                seconds.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seconds


def run_round(cluster: Cluster, work: Path, args: argparse.Namespace, round_no: int) -> float:
    batches, concurrency = args.batches, args.concurrency
    url = asyncio.run(_database(cluster, f"batch{round_no}"))
    key = write_key(work / f"log{round_no}.key", generate_key("bench.example/log"))
    publisher = generate_key("bench-publisher")
    bodies = [json.dumps({"entries": [
        make_release(publisher, _package(args.packages, b * BATCH + i), f"{round_no}.{b}.{i}")
        for i in range(BATCH)
    ]}).encode() for b in range(batches)]
    server = start_server(url, key, work, extra=RAISED)
    try:
        started = time.perf_counter()
        lat = asyncio.run(send(server.url, bodies, concurrency))
        elapsed = time.perf_counter() - started
        appending, phases = _append_seconds(server.url)
    finally:
        server.stop()
    rate = batches * BATCH / elapsed
    print(f"round {round_no}: {batches} x {BATCH} entries, {concurrency} at once, in "
          f"{elapsed:.2f} s = {rate:,.0f} entries/s; per request median "
          f"{statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms; the "
          f"sequencer busy {appending:.2f} s ({appending / elapsed:.0%}); per batch, ms: "
          + ", ".join(f"{k} {v * 1000:.0f}" for k, v in phases.items()), flush=True)
    return rate


def _append_seconds(url: str) -> tuple[float, dict[str, float]]:
    """The sequencer's time in append batches, lock to commit and proofs, and the mean
    seconds per batch of each phase (from /metrics)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    if "tlog_append_batch_seconds" not in families:
        raise SystemExit("no tlog_append_batch_seconds in /metrics")
    total = sum(s.value for s in families["tlog_append_batch_seconds"].samples
                if s.name.endswith("_sum"))
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for s in families["tlog_append_phase_seconds"].samples:
        phase = s.labels["phase"]
        if s.name.endswith("_sum"):
            sums[phase] = s.value
        elif s.name.endswith("_count"):
            counts[phase] = s.value
    return total, {p: sums[p] / counts[p] for p in sums if counts.get(p)}


def _package(packages: int, n: int) -> str:
    """A package name: `packages` names in turn, or (0) a new one for every entry."""
    return f"pkg{n % packages}" if packages else f"pkg{n}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--packages", type=int, default=0,
                    help="releases spread over this many packages (default: one package "
                         "each, as in a distribution's archive)")
    args = ap.parse_args()
    with fsync_cluster("tlog-batch-bench-") as (cluster, work):
        rates = [run_round(cluster, work, args, r)
                 for r in range(args.rounds)]
    print(f"median of {len(rates)} rounds: {statistics.median(rates):,.0f} entries/s")


if __name__ == "__main__":
    main()
