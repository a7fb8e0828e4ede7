"""Benchmark: one page of large entries against everyone else (`GET /v1/entries`).

A release may carry up to 64 KB of metadata; nested empty lists cost most to parse into
objects per byte. This starts a throwaway PostgreSQL cluster (Unix socket only, fsync off)
and one `tlog serve --policy open` on loopback, appends one release through the API (for a
checkpoint), writes --count large signed releases of one package straight into the entries
table, and then, --rounds times:

1. asks for the whole package in one request (`limit=1000`) while another connection asks
   for /checkpoint in a loop, and prints the big request's time, size and entries, the
   /checkpoint latencies meanwhile (median and worst), and the server's RSS before and at
   its peak (/proc/<pid>/status, sampled every 5 ms);
2. reads every entry of the package by following next_after, and prints the same.

The server is the tlog tree at --server-root (default: this checkout), run with this
interpreter, so two revisions can be compared on the same machine:

    git archive REV | tar -x -C /tmp/tlog-rev
    .venv/bin/python bench/read_bench.py --server-root /tmp/tlog-rev   # before
    .venv/bin/python bench/read_bench.py                                # after

Usage: python bench/read_bench.py [--count 1000] [--rounds 2] [--server-root DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import asyncpg

from tlog.cli.pgcluster import Cluster
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import generate_key

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "bench.big"


def large_leaf(signer: Any, version: str, lists: int) -> bytes:
    fields: dict[str, Any] = {
        "kind": "release/v1", "package": PACKAGE, "version": version,
        "artifacts": [{"name": f"big-{version}.tar.gz",
                       "sha256": hashlib.sha256(version.encode()).hexdigest(), "size": 1}],
        "metadata": {"blob": [[] for _ in range(lists)]}}
    return validate_entry(sign_entry(fields, signer)).leaf


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """The server's largest RSS while a phase runs, sampled in a thread every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_kib(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def checkpoint_latencies(session: aiohttp.ClientSession, base: str,
                               done: asyncio.Event) -> list[float]:
    out = []
    while not done.is_set():
        started = time.perf_counter()
        async with session.get(base + "/checkpoint") as r:
            await r.read()
            assert r.status == 200, r.status
        out.append(time.perf_counter() - started)
        await asyncio.sleep(0.005)
    return out


def page_facts(body: bytes) -> tuple[int, int | None]:
    """(entries, next_after) of a page, without parsing it: json.loads of megabytes would
    hold this process's GIL and delay the /checkpoint probe, measuring the client."""
    tail = body[body.rindex(b'"next_after": '):]
    after = json.loads(b"{" + tail)["next_after"]
    return body.count(b'{"index": '), after


async def one_page(session: aiohttp.ClientSession, base: str) -> tuple[int, int]:
    async with session.get(base + "/v1/entries",
                           params={"package": PACKAGE, "limit": "1000"}) as r:
        body = await r.read()
        assert r.status == 200, body[:300]
    return len(body), page_facts(body)[0]


async def every_page(session: aiohttp.ClientSession, base: str) -> tuple[int, int]:
    size = count = 0
    after: int | None = None
    while True:
        params = {"package": PACKAGE, "limit": "1000"}
        if after is not None:
            params["after"] = str(after)
        async with session.get(base + "/v1/entries", params=params) as r:
            body = await r.read()
            assert r.status == 200, body[:300]
        entries, after = page_facts(body)
        size, count = size + len(body), count + entries
        if after is None:
            return size, count


async def phase(name: str, base: str, pid: int, work: Any) -> None:
    before = rss_kib(pid)
    async with aiohttp.ClientSession() as big, aiohttp.ClientSession() as small:
        done = asyncio.Event()
        probe = asyncio.create_task(checkpoint_latencies(small, base, done))
        await asyncio.sleep(0.05)
        with PeakRss(pid) as peak:
            started = time.perf_counter()
            size, count = await work(big, base)
            elapsed = time.perf_counter() - started
        done.set()
        lat = await probe
    print(f"{name:12} {elapsed:7.2f} s  {size / 1e6:7.2f} MB  {count:5} entries  "
          f"/checkpoint median {statistics.median(lat) * 1000:7.1f} ms  "
          f"worst {max(lat) * 1000:7.1f} ms  ({len(lat)} asked)  "
          f"RSS {before / 1024:6.0f} -> peak {peak.peak / 1024:6.0f} MB "
          f"(+{(peak.peak - before) / 1024:.0f})", flush=True)


async def fill(url: str, base: str, count: int, lists: int) -> None:
    signer = generate_key("bench-publisher")
    seed = sign_entry({"kind": "release/v1", "package": "bench.seed", "version": "1",
                       "artifacts": [{"name": "s.tar.gz", "sha256": "0" * 64, "size": 1}]},
                      signer)
    async with aiohttp.ClientSession() as s, s.post(base + "/v1/entries", json=seed) as r:
        assert r.status == 201, await r.text()
    leaves = [large_leaf(signer, f"1.{i}", lists) for i in range(count)]
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "entries", columns=["idx", "leaf", "leaf_hash", "package", "version", "kind"],
            records=[(1 + i, leaf, leaf_hash(leaf), PACKAGE, f"1.{i}", "release/v1")
                     for i, leaf in enumerate(leaves)])
    finally:
        await conn.close()
    print(f"{count} entries of {len(leaves[0])} bytes stored", flush=True)


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit("tlog serve exited")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("tlog serve did not become ready")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--lists", type=int, default=21000, help="empty lists per entry")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--server-root", type=Path, default=ROOT)
    p.add_argument("--port", type=int, default=18431)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tlog-read-bench-"))
    work.chmod(0o755)
    cluster = Cluster(work / "pg")
    cluster.init()
    cluster.start(fsync=False)
    proc = None
    try:
        url = cluster.url("postgres")
        tlog = [sys.executable, "-m", "tlog"]
        env = {**os.environ, "PYTHONPATH": str(args.server_root)}
        subprocess.run([*tlog, "migrate", "--database-url", url], check=True, env=env,
                       cwd=args.server_root, capture_output=True)
        subprocess.run([*tlog, "keygen", "--name", "bench.example/log", "--out", str(work)],
                       check=True, env=env, cwd=args.server_root, capture_output=True)
        base = f"http://127.0.0.1:{args.port}"
        with open(work / "serve.log", "wb") as log:
            proc = subprocess.Popen(
                [*tlog, "serve", "--policy", "open", "--database-url", url,
                 "--key", str(work / "bench.example_log.key"), "--listen",
                 f"127.0.0.1:{args.port}"], env=env, cwd=args.server_root, stdout=log,
                stderr=subprocess.STDOUT)
        wait_ready(base, proc)
        asyncio.run(fill(url, base, args.count, args.lists))
        for _ in range(args.rounds):
            asyncio.run(phase("one request", base, proc.pid, one_page))
            asyncio.run(phase("every page", base, proc.pid, every_page))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        cluster.stop(mode="immediate")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
