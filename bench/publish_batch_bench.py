"""Benchmark: `tlog publish --batch` of N releases to a fresh `tlog serve` (PostgreSQL fsync on).

Runs the command as a publisher would (a subprocess; signing, submitting, verifying every
receipt, fsyncing the receipts file) and prints its entries/s and the wall time, and which
path it took: POST /v1/entries/batch, or the one-by-one fallback of a log without it. The
log's publisher quota is raised so that the client, not the quota, is measured.
Usage: python bench/publish_batch_bench.py [--entries 2000] [--chunk-size 500]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.concurrent_appends import _database, fsync_cluster
from tests.support import start_server, write_key
from verifier.protocol.note import generate_key

QUOTAS = ["--publisher-rate", "1000000", "--publisher-burst", "1000000",
          "--client-rate", "1000000", "--client-burst", "1000000"]


def releases(n: int) -> list[dict[str, object]]:
    """N releases over 100 packages, each package's counters growing line by line."""
    return [{"package": f"com.bench.pkg{i % 100}", "version": f"1.{i}", "counter": i + 1,
             "artifacts": [{"name": f"pkg-1.{i}.tar.gz",
                            "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
                            "size": 1000 + i}]} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--chunk-size", type=int, default=500)
    args = ap.parse_args()
    with fsync_cluster("tlog-bench-publish-") as (cluster, work):
        url = asyncio.run(_database(cluster, "publish"))
        log = generate_key("bench.example/log")
        (work / "log.vkey").write_text(log.verifier().text() + "\n")
        key = write_key(work / "pub.key", generate_key("bench-publisher"))
        batch = work / "releases.jsonl"
        batch.write_text("".join(json.dumps(r) + "\n" for r in releases(args.entries)))
        server = start_server(url, write_key(work / "log.key", log), work,
                              extra=["--policy", "open", *QUOTAS])
        try:
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "tlog", "publish", "--log", server.url, "--log-key",
                 str(work / "log.vkey"), "--key", str(key), "--batch", str(batch),
                 "--chunk-size", str(args.chunk_size)],
                capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - started
        finally:
            server.stop()
    if proc.returncode != 0:
        raise SystemExit(f"tlog publish failed ({proc.returncode}): {proc.stderr}")
    path = "one by one (no batch endpoint)" if "has no POST" in proc.stderr else "batch endpoint"
    print(proc.stdout.strip())
    print(f"{args.entries} releases, chunk {args.chunk_size}, path: {path}; command wall time "
          f"{elapsed:.2f} s = {args.entries / elapsed:,.0f} releases/s (with startup, signing, "
          f"receipt checks)")


if __name__ == "__main__":
    main()
