"""Benchmark: log N real Debian releases end to end, as the README's "Publishing" shows.

1. `tlog releases-from debian INDEX --limit N` converts a Packages index (plain, .gz, .xz,
   .bz2; an lz4 one such as apt's lists is piped through `lz4cat`) to JSON Lines;
2. a fresh `tlog serve` (open policy, quotas raised so the client is measured, not the
   quota) on a throwaway PostgreSQL with fsync on;
3. `tlog publish --batch` of the file, timed (signing, submitting, verifying every receipt,
   fsyncing the receipts file: the command's wall time, startup included);
4. the receipts file: every line verified again here with the log key, one per release;
5. the same command again: the resume must skip every release and log nothing.

Usage: python bench/debian_publish.py INDEX [--entries 20000] [--chunk-size 500]
INDEX: e.g. Packages.xz from deb.debian.org/debian/dists/bookworm/main/binary-amd64/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.concurrent_appends import _database, fsync_cluster
from bench.publish_batch_bench import QUOTAS
from tests.support import start_server, write_key
from verifier.protocol.note import Verifier, generate_key
from verifier.protocol.receipt import verify_receipt
from verifier.protocol.trust import KeyTrust

LZ4_MAGIC = b"\x04\x22\x4d\x18"


def convert(index: Path, n: int, out: Path) -> float:
    """Run `tlog releases-from debian`; its wall time. An lz4 index goes through lz4cat."""
    cmd = [sys.executable, "-m", "tlog", "releases-from", "debian", "--limit", str(n),
           "--output", str(out)]
    started = time.perf_counter()
    with index.open("rb") as f:
        lz4 = f.read(4) == LZ4_MAGIC
    if lz4:
        cat = subprocess.Popen(["lz4cat", str(index)], stdout=subprocess.PIPE)
        proc = subprocess.run([*cmd, "-"], stdin=cat.stdout, capture_output=True, text=True,
                              check=False)
        cat.wait()
    else:
        proc = subprocess.run([*cmd, str(index)], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"tlog releases-from failed ({proc.returncode}): {proc.stderr}")
    print(f"$ {'lz4cat INDEX | ' if lz4 else ''}tlog releases-from debian "
          f"{'-' if lz4 else 'INDEX'} --limit {n} --output releases.jsonl   ({elapsed:.2f} s)")
    print(proc.stderr.strip())
    return elapsed


def publish(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tlog", "publish", *args],
                          capture_output=True, text=True, check=False)
    return proc, time.perf_counter() - started


def verified_receipts(path: Path, log: Verifier) -> set[tuple[str, str]]:
    """(package, version) of every receipt, each verified with the log key (fails if not)."""
    trust, logged = KeyTrust(log), set()
    for line in path.read_text().splitlines():
        release = verify_receipt(json.loads(line), trust).release
        logged.add((release.package, release.version))
    return logged


def tree_size(url: str) -> int:
    """The log's size: the releases plus the map-root leaves the log adds itself."""
    with urllib.request.urlopen(url + "/v1/log", timeout=10) as resp:
        return int(json.load(resp)["tree_size"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path, help="a Debian Packages file")
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="copy releases.jsonl, its receipts and log.vkey to DIR")
    args = ap.parse_args()
    with fsync_cluster("tlog-bench-debian-") as (cluster, work):
        batch = work / "releases.jsonl"
        convert(args.index, args.entries, batch)
        wanted = {(r["package"], r["version"])
                  for r in map(json.loads, batch.read_text().splitlines())}
        url = asyncio.run(_database(cluster, "debian"))
        log = generate_key("bench.example/log")
        (work / "log.vkey").write_text(log.verifier().text() + "\n")
        key = write_key(work / "debian.key", generate_key("debian-archive"))
        server = start_server(url, write_key(work / "log.key", log), work,
                              extra=["--policy", "open", *QUOTAS])
        command = ["--log", server.url, "--log-key", str(work / "log.vkey"), "--key", str(key),
                   "--batch", str(batch), "--chunk-size", str(args.chunk_size)]
        try:
            first, elapsed = publish(command)
            size = tree_size(server.url)
            again, elapsed_again = publish(command)
            size_again = tree_size(server.url)
        finally:
            server.stop()
        receipts = work / "releases.jsonl.receipts.jsonl"
        lines = len(receipts.read_text().splitlines()) if receipts.exists() else 0
        logged = verified_receipts(receipts, log.verifier()) if lines else set()
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for kept in (batch, receipts, work / "log.vkey"):
                if kept.exists():
                    shutil.copy(kept, args.keep / kept.name)
    for name, proc in (("publish", first), ("rerun", again)):
        if proc.returncode != 0:
            raise SystemExit(f"tlog publish ({name}) failed ({proc.returncode}): {proc.stderr}")
    print(f"$ tlog publish --batch releases.jsonl --chunk-size {args.chunk_size}")
    print(first.stdout.strip())
    print(f"{len(wanted)} releases in {elapsed:.2f} s wall time = {len(wanted) / elapsed:,.0f} "
          f"releases/s (command startup, signing, submitting, verifying, fsyncs)")
    print(f"receipts file: {lines} lines, {len(logged)} verified here, "
          f"{'one for every release' if logged == wanted else 'NOT one per release'}; "
          f"log tree size {size} (the log's own map-root leaves included)")
    print(f"$ tlog publish --batch releases.jsonl   (again: the resume)\n{again.stdout.strip()}")
    resumed = f"logged 0 new, 0 already logged, {len(wanted)} skipped" in again.stdout
    print(f"rerun: {elapsed_again:.2f} s, {'skipped every release' if resumed else 'NOT ALL'}"
          f"; tree size {size_again} after it ({'unchanged' if size_again == size else 'GREW'})")
    if logged != wanted or lines != len(wanted) or size_again != size or not resumed:
        raise SystemExit("the receipts or the log do not hold exactly the releases")


if __name__ == "__main__":
    main()
