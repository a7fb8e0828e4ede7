"""Benchmark: the CPU `tlog serve` and PostgreSQL spend per full entry bundle and hash tile.

An auditor (`tlog-verify audit --full`) fetches every full entry bundle and every hash tile of
a log; when it runs on the same cores as the server, the server's CPU per request caps its
throughput. This starts (or reuses) the PostgreSQL cluster of the log bench/build_log.py built,
starts one `tlog serve` on it, then fetches --count full entry bundles and --count full level-0
tiles (each once, as an auditor does, so the server's tile cache starts cold) over one
keep-alive connection, and prints per phase: requests/s and the CPU seconds per request of the
server process and of the PostgreSQL backends serving it (/proc/<pid>/stat utime + stime).
A last phase fetches the same tiles again, from the server's tile cache.

With --profile FILE, py-spy records the server during the measured phases (by the extension:
.json speedscope, .txt collapsed stacks, else a flamegraph SVG; the profiler's own overhead
inflates the figures).

Usage: python bench/serve_bench.py [--cache-dir /tmp/tlog-bench-log] [--count 2000]
       [--start 0] [--rounds 1] [--profile FILE] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
import build_log

from tests.support import Server, start_server
from verifier.protocol.tiles import TILE_WIDTH, decode_bundle, tile_path

TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process, zeros if it has gone (a backend that exited meanwhile)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / TCK, int(fields[12]) / TCK  # fields 14 and 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


async def _backend_pids(url: str, app_name: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app_name)
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


@dataclass
class Phase:
    name: str
    requests: int
    seconds: float
    server_user: float
    server_sys: float
    postgres_cpu: float
    body_bytes: int

    def line(self) -> str:
        per = 1000 / self.requests
        server = self.server_user + self.server_sys
        return (f"{self.name:9} {self.requests:6d} req  {self.requests / self.seconds:6.0f} req/s"
                f"  server {server * per:6.3f} ms/req (user {self.server_user * per:.3f}"
                f" sys {self.server_sys * per:.3f})"
                f"  postgres {self.postgres_cpu * per:6.3f} ms/req"
                f"  total {(server + self.postgres_cpu) * per:6.3f} ms/req"
                f"  ({self.body_bytes / self.requests / 1024:.1f} KiB/resp)")


Sample = tuple[tuple[float, float], dict[int, float]]


class Meter:
    """CPU of the server and of the PostgreSQL backends serving it, between samples.

    Other people may use the same cluster meanwhile, so only the backends whose
    application_name is the one the server's database URL sets are counted.
    """

    def __init__(self, server_pid: int, url: str, app_name: str) -> None:
        self.server_pid, self.url, self.app_name = server_pid, url, app_name

    def sample(self) -> Sample:
        pids = asyncio.run(_backend_pids(self.url, self.app_name))
        return cpu_times(self.server_pid), {pid: cpu_seconds(pid) for pid in pids}

    @staticmethod
    def delta(before: Sample, after: Sample) -> tuple[float, float, float]:
        """(server user, server system, PostgreSQL total) CPU seconds between two samples."""
        # A backend that appeared meanwhile started from 0; one that exited is lost (rare:
        # the pool keeps its connections), which would only make PostgreSQL look cheaper.
        pg = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in after[1].items())
        return after[0][0] - before[0][0], after[0][1] - before[0][1], pg


def fetch_all(conn: http.client.HTTPConnection, paths: list[str],
              check: bool) -> int:
    """GET every path on one keep-alive connection; the total body bytes."""
    total = 0
    for path in paths:
        conn.request("GET", "/" + path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET /{path}: {resp.status} {body[:200]!r}")
        if check:
            _check(path, body)
        total += len(body)
    return total


def _check(path: str, body: bytes) -> None:
    if path.startswith("tile/entries/"):
        decode_bundle(body, TILE_WIDTH)  # raises on a malformed bundle
    elif len(body) != 32 * TILE_WIDTH:
        raise RuntimeError(f"GET /{path}: {len(body)} bytes, not a full tile")


def measure(name: str, meter: Meter, conn: http.client.HTTPConnection,
            paths: list[str]) -> Phase:
    before = meter.sample()
    started = time.perf_counter()
    body_bytes = fetch_all(conn, paths, check=False)
    seconds = time.perf_counter() - started
    user, system, pg = meter.delta(before, meter.sample())
    return Phase(name, len(paths), seconds, user, system, pg, body_bytes)


@contextmanager
def running(log: build_log.BenchLog, work: Path, app_name: str,
            tile_cache: Path | None = None) -> Iterator[Server]:
    """The log's cluster (reused if running, else started and stopped) and one tlog serve
    whose database connections carry `app_name`."""
    with build_log.cluster_up(log):
        # asyncpg passes unknown URL parameters on as server settings.
        url = f"{log.url}&application_name={app_name}"
        extra = ["--policy", "open"]
        if tile_cache is not None:
            extra += ["--tile-cache", str(tile_cache)]
        server = start_server(url, log.key_file, work, timeout=120, extra=extra)
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def profiling(pid: int, out: Path | None) -> Iterator[None]:
    if out is None:
        yield
        return
    fmt = {".json": "speedscope", ".txt": "raw"}.get(out.suffix, "flamegraph")
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--output", str(out),
                            "--format", fmt, "--rate", "500", "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # let py-spy attach before the measured requests start
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(timeout=60)


def run(args: argparse.Namespace, work: Path) -> list[Phase]:
    log = build_log.open_log(args.cache_dir)
    last = min(log.size // TILE_WIDTH, args.start + args.count)
    numbers = range(args.start, last)
    bundles = [tile_path(-1, n) for n in numbers]
    tiles = [tile_path(0, n) for n in numbers]
    app_name = f"tlog-serve-bench-{os.getpid()}"
    tile_cache = Path(tempfile.mkdtemp(dir=work, prefix="tiles-")) if args.tile_cache else None
    with running(log, work, app_name, tile_cache) as server:
        url = urlsplit(server.url)
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
        # Correctness first, on paths outside the measured ones (the tile cache stays cold).
        probe = [tile_path(-1, last), tile_path(0, last)] if last < log.size // 256 else []
        fetch_all(conn, probe, check=True)
        meter = Meter(server.proc.pid, log.url, app_name)
        with profiling(server.proc.pid, args.profile):
            phases = [measure("bundles", meter, conn, bundles),
                      measure("tiles", meter, conn, tiles),
                      # The same tiles again, now from the server's cache: the cost of HTTP,
                      # the middleware and the handler without PostgreSQL.
                      measure("tiles-hot", meter, conn, tiles)]
            if tile_cache is not None:  # bundles again, now kept on disk by the first pass
                phases.append(measure("bundles-disk", meter, conn, bundles))
        conn.close()
    return phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", type=Path, default=build_log.DEFAULT_CACHE)
    ap.add_argument("--count", type=int, default=2000, help="bundles and tiles to fetch each")
    ap.add_argument("--start", type=int, default=0, help="first bundle/tile number")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat with a new server each time; prints the median too")
    ap.add_argument("--profile", type=Path, help="py-spy output file for the server")
    ap.add_argument("--work-dir", type=Path, help="where the server log goes (default: temp)")
    ap.add_argument("--tile-cache", action="store_true",
                    help="run tlog serve with --tile-cache (a fresh directory each round) and "
                         "measure the bundles once more, served from it")
    args = ap.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tlog-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rounds: list[list[Phase]] = []
    for _ in range(args.rounds):
        rounds.append(run(args, work))
        for phase in rounds[-1]:
            print(phase.line(), flush=True)
    if args.rounds > 1:  # other work on the machine makes single rounds noisy
        print(f"median of {args.rounds} rounds:")
        for phases in zip(*rounds, strict=True):
            print(median(phases).line(), flush=True)


def median(phases: Sequence[Phase]) -> Phase:
    """The phase of the round with the median CPU per request."""
    ordered = sorted(phases, key=lambda p: p.server_user + p.server_sys + p.postgres_cpu)
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    main()
