"""Benchmark: the server's memory under sustained load, and PostgreSQL's bytes per entry.

Starts an open log (PostgreSQL with fsync on, `tlog serve` with its quotas raised), seeds it
with --seed entries through the batch endpoint (bench/growth.py's signed spool), then for
--duration drives it with `tlog bench mixed` (reads and single appends) and, alongside,
`tlog bench append-batch` at --batch-rate requests/s, so the log keeps growing. Every
second it samples the resident memory (VmRSS from /proc) of the `tlog serve` process and
any processes it started, and prints the maximum and the medians of the first and the last
minute (goal: at most 150 MB, flat). Then it prints what PostgreSQL stores per log entry:
pg_total_relation_size (table, indexes, TOAST) of every table of the log's database,
summed and divided by the entries, next to the mean entry (leaf) bytes (goal: at most the
entry bytes + 150).

Usage: python bench/footprint.py [--duration 5m] [--seed 10000] [--concurrency 32]
       [--batch-rate 2] [--batch-size 100] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.growth import (
    BATCH,
    MB,
    RAISED,
    Build,
    cluster_in,
    fill_spool,
    keys,
    storage_report,
    work_dir,
)
from tests.support import start_server
from verifier.protocol.duration import parse_duration

WINDOW = 60.0  # "first minute", "last minute"


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid` and of every process under it (0 for one that has just gone)."""
    total = 0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        total += next(int(line.split()[1]) * 1024 for line in status.splitlines()
                      if line.startswith("VmRSS:"))
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += rss_bytes(int(child))
    except (OSError, StopIteration, ValueError):
        pass
    return total


def load(url: str, args: argparse.Namespace) -> list[subprocess.Popen[str]]:
    """The load generators, started; each prints its JSON result at the end."""
    base = [sys.executable, "-m", "tlog", "bench"]
    common = ["--log", url, "--duration", f"{args.duration_s:g}s", "--json"]
    procs = [subprocess.Popen([*base, "mixed", *common, "--concurrency", str(args.concurrency)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    if args.batch_rate > 0:
        procs.append(subprocess.Popen(
            [*base, "append-batch", *common, "--rate", str(args.batch_rate), "--concurrency",
             "8", "--batch-size", str(args.batch_size)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def sample(pid: int, procs: list[subprocess.Popen[str]]) -> list[tuple[float, int]]:
    """(seconds, RSS bytes) once a second until every load generator has finished."""
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    while any(p.poll() is None for p in procs):
        samples.append((time.monotonic() - started, rss_bytes(pid)))
        time.sleep(1.0 - (time.monotonic() - started) % 1.0)
    return samples


def memory_report(idle: int, samples: list[tuple[float, int]], duration: float) -> None:
    window = min(WINDOW, duration / 2)
    end = samples[-1][0]
    first = [b for t, b in samples if t < window]
    last = [b for t, b in samples if t >= end - window]
    peak = max(b for _, b in samples)
    print(f"server RSS (tlog serve and its children, {len(samples)} samples, 1/s): idle "
          f"{idle / MB:.1f} MB before the load; max {peak / MB:.1f} MB; median of the first "
          f"{window:g} s {statistics.median(first) / MB:.1f} MB, of the last {window:g} s "
          f"{statistics.median(last) / MB:.1f} MB (goal: at most 150 MB, flat)")


def load_report(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{proc.args!r} failed:\n{err}")
        r: dict[str, Any] = json.loads(out)
        lat = r["latency_ms"]
        print(f"load: {r['mode']}, {r['requests']:,} requests, {r['throughput_rps']:,.0f} ok/s, "
              f"{r.get('entries', 0):,} entries appended, latency ms p50 {lat['p50']} p99 "
              f"{lat['p99']}, errors {r['errors'] or 'none'}; tree size "
              f"{r['tree_size_before']:,} -> {r['tree_size_after']:,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", default="5m")
    ap.add_argument("--seed", type=int, default=10_000,
                    help=f"entries put in the log before the load (a multiple of {BATCH})")
    ap.add_argument("--concurrency", type=int, default=32, help="tlog bench mixed's")
    ap.add_argument("--batch-rate", type=float, default=2.0,
                    help="append-batch requests/s alongside (0: none)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--work-dir", type=Path, help="keep the database here (default: removed)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    try:
        args.duration_s = parse_duration(args.duration)
    except ValueError as exc:
        ap.error(f"--duration: {exc}")
    if args.seed % BATCH or args.seed < 0:
        ap.error(f"--seed must be a multiple of {BATCH}")
    with work_dir(args.work_dir) as work:
        key, publishers = keys(work)
        spool = work / "spool.jsonl"
        fill_spool(spool, publishers, args.seed // BATCH, args.workers)
        with cluster_in(work) as url:
            server = start_server(url, key, work, extra=RAISED, timeout=600)
            try:
                asyncio.run(Build(server.url, spool, work / "progress.json", 4)
                            .to(args.seed // BATCH))
                time.sleep(2)
                idle = rss_bytes(server.proc.pid)
                procs = load(server.url, args)
                samples = sample(server.proc.pid, procs)
                load_report(procs)
                memory_report(idle, samples, args.duration_s)
            finally:
                server.stop()
            asyncio.run(storage_report(url))


if __name__ == "__main__":
    main()
