"""Benchmark: read throughput of a `tlog mirror` copy behind nginx next to `tlog serve` itself.

Starts a throwaway PostgreSQL (fsync on), one `tlog serve --policy open`, appends --entries
releases through the API, copies the log with `tlog mirror` (timed), serves the copy with
nginx (tests/mirror_support.py: its own config, --nginx-workers processes), and then, for each
server and each kind of read (the checkpoint, full level-0 hash tiles, full entry bundles,
spread over all of them), runs the same client for --seconds and prints requests/s and MB/s.
Every answer must be 200 (a failed read stops the run). `tlog serve` runs with its read
quota raised (all requests come from one address), its other settings the defaults.

The client is wrk (Debian `wrk`, `make bench-mirror` installs it as root) when present, with
--connections connections on 2 threads; else one aiohttp process with as many connections
(which then limits nginx's figure: the client is the slower side). Both servers run on this
machine with the client, so the figures compare them rather than measure a deployment.

Usage: python bench/mirror_bench.py [--entries 10000] [--seconds 5] [--connections 64]
                                    [--nginx-workers 1] [--client auto|wrk|aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.concurrent_appends import _database, fsync_cluster
from tests.mirror_support import start_nginx
from tests.support import make_release, start_server, submit_all, write_key
from verifier.protocol.note import generate_key
from verifier.protocol.tiles import ENTRIES_LEVEL, TILE_WIDTH, tile_path


def paths(size: int) -> dict[str, list[str]]:
    """The reads to measure: each kind's paths, spread over the whole log."""
    full = size // TILE_WIDTH
    return {
        "checkpoint": ["/checkpoint"],
        "hash tiles": ["/" + tile_path(0, n) for n in range(full)],
        "bundles": ["/" + tile_path(ENTRIES_LEVEL, n) for n in range(full)],
    }


async def _aiohttp(base: str, targets: list[str], seconds: float,
                   connections: int) -> tuple[int, int]:
    """Requests and bytes read in `seconds` by `connections` loops of GETs."""
    done = [0, 0]
    stop = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def loop(i: int) -> None:
            while time.monotonic() < stop:
                path = targets[i % len(targets)]
                i += connections
                async with session.get(base + path) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"{base}{path}: HTTP {resp.status}")
                done[0] += 1
                done[1] += len(body)

        await asyncio.gather(*(loop(i) for i in range(connections)))
    return done[0], done[1]


WRK_SCRIPT = """\
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH %%d %%d %%d\\n", summary.requests, summary.bytes,
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
"""


def _wrk(base: str, targets: list[str], seconds: float, connections: int,
         work: Path) -> tuple[int, int]:
    script = work / "paths.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{p}"' for p in targets))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "-s",
                          str(script), base], capture_output=True, text=True, check=True)
    m = re.search(r"BENCH (\d+) (\d+) (\d+)", out.stdout)
    if m is None:
        raise SystemExit(f"wrk said:\n{out.stdout}\n{out.stderr}")
    if int(m[3]):
        raise SystemExit(f"{base}: {m[3]} failed requests (wrk):\n{out.stdout}")
    return int(m[1]), int(m[2])


def measure(client: str, base: str, targets: list[str], seconds: float, connections: int,
            work: Path) -> tuple[float, float]:
    started = time.monotonic()
    if client == "wrk":
        requests, size = _wrk(base, targets, seconds, connections, work)
    else:
        requests, size = asyncio.run(_aiohttp(base, targets, seconds, connections))
    elapsed = time.monotonic() - started if client != "wrk" else seconds
    return requests / elapsed, size / elapsed / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--nginx-workers", type=int, default=1)
    ap.add_argument("--client", choices=("auto", "wrk", "aiohttp"), default="auto")
    args = ap.parse_args()
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "aiohttp"
    with fsync_cluster("tlog-mirror-bench-") as (cluster, work):
        url = asyncio.run(_database(cluster, "mirrorbench"))
        signer = generate_key("bench.example/log")
        key = write_key(work / "log.key", signer)
        vkey = work / "log.vkey"
        vkey.write_text(signer.verifier().text() + "\n")
        publisher = generate_key("bench-publisher")
        # The per-client read quota (2,000/s) would measure itself: every request here
        # comes from one address.
        server = start_server(url, key, work, extra=("--policy", "open", "--read-rate",
                                                     "1000000", "--read-burst", "1000000"))
        nginx = None
        try:
            for lo in range(0, args.entries, 2000):
                batch = [make_release(publisher, f"pkg{i % 100}", f"1.{i}")
                         for i in range(lo, min(lo + 2000, args.entries))]
                bad = [r for r in asyncio.run(submit_all([server.url], batch))
                       if r.status != 201]
                if bad:
                    raise SystemExit(f"{len(bad)} appends failed: {bad[0].body}")
            out = work / "mirror"
            started = time.monotonic()
            copy = subprocess.run([sys.executable, "-m", "tlog", "mirror", "--log", server.url,
                                   "--key", str(vkey), "--out", str(out)],
                                  capture_output=True, text=True, check=False)
            if copy.returncode:
                raise SystemExit(f"tlog mirror failed:\n{copy.stderr}")
            print(f"{copy.stdout.strip()} in {time.monotonic() - started:.1f} s")
            size = int((out / "checkpoint").read_text().splitlines()[1])
            nginx = start_nginx(out, work / "nginx", workers=args.nginx_workers)
            print(f"{size:,} entries; client {client}, {args.connections} connections, "
                  f"{args.seconds:g} s per figure, nginx {args.nginx_workers} worker(s), "
                  f"tlog serve 1 process, {os.cpu_count()} cores shared with the client")
            print(f"{'read':<12} {'tlog serve':>22} {'nginx (mirror)':>22}")
            for kind, targets in paths(size).items():
                figures = [measure(client, base, targets, args.seconds, args.connections, work)
                           for base in (server.url, nginx.url)]
                print(f"{kind:<12} " + " ".join(f"{rps:>10,.0f} req/s {mbs:>5.1f} MB/s"
                                                for rps, mbs in figures), flush=True)
        finally:
            if nginx is not None:
                nginx.stop()
            server.stop()


if __name__ == "__main__":
    main()
