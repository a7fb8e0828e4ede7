"""Benchmark: another client's append while one address holds stalled write requests.

Starts a throwaway PostgreSQL cluster (tlog.cli.pgcluster) and one open `tlog serve` of the
tree given by --src (default: this one; give another checkout to measure it before a
change), on loopback only. It appends --appends releases from 127.0.0.1 as a baseline, then
opens --stalled connections from 127.0.0.2 that each send the headers of a POST
/v1/entries and "{" and then stall, and appends --appends releases from 127.0.0.1 again
while they stall. It prints the status and latency of every append in both phases, and
what the stalled connections were answered (and when) within --hold seconds.

Everything is bounded: the connections are held at most --hold seconds, each append waits
at most --timeout seconds.

Usage: python bench/stall_bench.py [--src DIR] [--stalled 3000] [--appends 5] [--hold 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import asyncpg

from tests.support import free_port, make_release, write_key
from tlog.cli.pgcluster import Cluster
from verifier.protocol.note import generate_key

STALLER = "127.0.0.2"  # the one address holding the stalled requests (loopback)


async def append(session: aiohttp.ClientSession, url: str, entry: dict[str, object],
                 timeout: float) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        async with session.post(url + "/v1/entries", json=entry,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.json()
            code = body.get("error", {}).get("code", "") if resp.status >= 400 else ""
            status = f"{resp.status} {code}".strip()
    except (TimeoutError, aiohttp.ClientError) as exc:
        status = f"no answer ({type(exc).__name__})"
    return status, time.perf_counter() - started


async def appends(url: str, label: str, count: int, timeout: float) -> None:
    signer = generate_key("bench-publisher")
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            entry = make_release(signer, "org.bench.app", f"{label}.{i}")
            status, seconds = await append(session, url, entry, timeout)
            print(f"  {label} append {i}: {status:<28} {seconds * 1000:8.1f} ms", flush=True)


async def stall(host: str, port: int, answers: Counter[str], started: float,
                hold: float) -> None:
    """One stalled POST: headers and "{", then nothing; note the answer if one comes."""
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(STALLER, 0))
    except OSError as exc:
        answers[f"connect failed ({type(exc).__name__})"] += 1
        return
    writer.write(b"POST /v1/entries HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 1000\r\n\r\n{")
    try:
        line = await asyncio.wait_for(reader.readline(), hold)
        status = line.decode(errors="replace").split(" ")[1] if line else "closed"
        second = int(time.perf_counter() - started)
        answers[f"{status} within {second}-{second + 1} s" if line else "closed"] += 1
    except (TimeoutError, OSError, IndexError):
        answers[f"no answer in {hold:.0f} s"] += 1
    finally:
        writer.close()


async def measure(url: str, port: int, args: argparse.Namespace) -> None:
    print(f"baseline, nothing stalled ({args.appends} appends from 127.0.0.1):")
    await appends(url, "baseline", args.appends, args.timeout)
    answers: Counter[str] = Counter()
    started = time.perf_counter()
    stalls = [asyncio.create_task(stall("127.0.0.1", port, answers, started, args.hold))
              for _ in range(args.stalled)]
    await asyncio.sleep(args.settle)
    print(f"{args.stalled} stalled POSTs from {STALLER}, {args.settle:.0f} s in "
          f"({args.appends} appends from 127.0.0.1):")
    await appends(url, "stalled", args.appends, args.timeout)
    await asyncio.gather(*stalls)
    print(f"answers to the stalled POSTs (within {args.hold:.0f} s):")
    for what, n in sorted(answers.items()):
        print(f"  {n:6d}  {what}")


def serve(src: Path, db_url: str, key: Path, port: int, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    with out.open("wb") as f:
        return subprocess.Popen([sys.executable, "-m", "tlog", "serve", "--policy", "open",
                                 "--database-url", db_url, "--key", str(key),
                                 "--listen", f"127.0.0.1:{port}"],
                                stdout=f, stderr=subprocess.STDOUT, cwd=src, env=env)


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("tlog serve exited")
            try:
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("tlog serve did not become ready")


async def create_database(cluster: Cluster) -> str:
    conn = await asyncpg.connect(cluster.url("postgres"))
    try:
        await conn.execute('CREATE DATABASE "stall"')
    finally:
        await conn.close()
    return cluster.url("stall")


def run(args: argparse.Namespace, tmp: Path) -> None:
    src = Path(args.src).resolve()
    home = tmp / "pg"
    home.mkdir()
    home.chmod(0o755)  # the postgres user must reach it when run as root
    cluster = Cluster(home)
    cluster.init()
    cluster.start(fsync=False)
    proc = None
    try:
        db_url = asyncio.run(create_database(cluster))
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([sys.executable, "-m", "tlog", "migrate", "--database-url", db_url],
                       check=True, cwd=src, env=env, stdout=subprocess.DEVNULL)
        key = write_key(tmp / "log.key", generate_key("bench.example/log"))
        port = free_port()
        proc = serve(src, db_url, key, port, tmp / "serve.log")
        url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(url, proc))
        print(f"tlog serve of {src}")
        asyncio.run(measure(url, port, args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        cluster.stop(mode="immediate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(Path(__file__).resolve().parent.parent),
                   help="the tree whose tlog is served (default: this one)")
    p.add_argument("--stalled", type=int, default=3000, help="stalled POSTs from one address")
    p.add_argument("--appends", type=int, default=5, help="appends per phase")
    p.add_argument("--hold", type=float, default=15.0, help="seconds the stalls are held")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds between opening the stalls and appending")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds an append may take")
    args = p.parse_args()
    if not 1 <= args.stalled <= 8000 or not 0 < args.hold <= 120:
        p.error("--stalled must be 1..8000 and --hold 0..120 s")
    tmp = Path(tempfile.mkdtemp(prefix="tlog-stall-bench-"))
    tmp.chmod(0o755)  # the postgres user must reach the cluster inside it
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
