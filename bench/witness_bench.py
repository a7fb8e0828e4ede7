"""Benchmark: appends with and without a witness quorum, and how long publication lags.

Each round logs N concurrent submissions into a fresh database twice, in the same run: once
with no witness policy (the baseline) and once with `--witness-policy` naming two
`tlog-verify witness serve` processes (quorum: both). It prints append throughput and
latency for both, their ratio (appends never wait for witnesses, so it should stay near 1),
and the publication lag: from the last receipt until /checkpoint carries the whole tree with
the quorum's cosignatures. Usage: python bench/witness_bench.py [--entries 2000] [--rounds 3]
[--interval 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.concurrent_appends import _database, fsync_cluster
from tests.support import free_port, make_release, start_server, submit_all, write_key
from tlog.cli.pgcluster import Cluster
from verifier.protocol.cosignature import generate_witness_key
from verifier.protocol.note import Signer, generate_key


def witnesses(work: Path, log: Signer, count: int) -> tuple[list[subprocess.Popen[bytes]], Path]:
    """`count` witness processes for `log` and the policy needing all of them."""
    vkey = work / "log.vkey"
    vkey.write_text(log.verifier().text() + "\n")
    procs, lines = [], [f"log {log.verifier().text()}"]
    for i in range(count):
        signer, port = generate_witness_key(f"w{i}.bench"), free_port()
        key = work / f"w{i}.key"
        key.write_text(signer.text() + "\n")
        key.chmod(0o600)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "verifier.cli", "witness", "serve", "--key", str(key),
             "--log-key", str(vkey), "--state", str(work / f"w{i}"),
             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL))
        lines.append(f"witness w{i} {signer.verifier().text()} http://127.0.0.1:{port}")
    lines += [f"group all-of-them all {' '.join(f'w{i}' for i in range(count))}",
              "quorum all-of-them"]
    policy = work / "policy"
    policy.write_text("\n".join(lines) + "\n")
    time.sleep(1)  # the witnesses listen well within a second
    return procs, policy


def published_size(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/checkpoint", timeout=5) as resp:
            return int(resp.read().decode().split("\n")[1])
    except OSError:
        return -1


def one_run(cluster: Cluster, work: Path, n: int, name: str, policy: Path | None,
            log: Signer, interval: float) -> tuple[float, float, float, float | None]:
    """(entries/s, median s, p99 s, publication lag s or None) of one run."""
    url = asyncio.run(_database(cluster, name))
    key = write_key(work / f"{name}.key", log)
    extra = ["--policy", "open"]
    if policy is not None:
        extra += ["--witness-policy", str(policy), "--witness-interval", str(interval)]
    publisher = generate_key("bench-publisher")
    entries = [make_release(publisher, f"pkg{i % 100}", f"{name}.{i}") for i in range(n)]
    server = start_server(url, key, work, extra=extra)
    try:
        started = time.perf_counter()
        results = asyncio.run(submit_all([server.url], entries))
        done = time.perf_counter()
        lag = None
        if policy is not None:
            while published_size(server.url) < n:
                time.sleep(0.02)
            lag = time.perf_counter() - done
    finally:
        server.stop()
    bad = [r for r in results if r.status != 201]
    if bad:
        raise SystemExit(f"{len(bad)} submissions failed, e.g. {bad[0].status} {bad[0].body}")
    lat = sorted(r.seconds for r in results)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    return n / (done - started), statistics.median(lat), p99, lag


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--witnesses", type=int, default=2)
    ap.add_argument("--interval", type=float, default=1.0, help="--witness-interval")
    args = ap.parse_args()
    with fsync_cluster("tlog-wbench-") as (cluster, work):
        for r in range(args.rounds):
            log = generate_key("bench.example/log")
            (work / f"r{r}").mkdir()
            procs, policy = witnesses(work / f"r{r}", log, args.witnesses)
            try:
                base = one_run(cluster, work, args.entries, f"base{r}", None, log,
                               args.interval)
                wit = one_run(cluster, work, args.entries, f"wit{r}", policy, log,
                              args.interval)
            finally:
                for p in procs:
                    p.terminate()
                    p.wait()
            print(f"round {r}: {args.entries} entries, 1 server; no witnesses "
                  f"{base[0]:,.0f}/s (median {base[1] * 1000:.0f} ms, p99 {base[2] * 1000:.0f} "
                  f"ms); {args.witnesses} witnesses, all required, interval {args.interval:g} s: "
                  f"{wit[0]:,.0f}/s (median {wit[1] * 1000:.0f} ms, p99 {wit[2] * 1000:.0f} ms)"
                  f" = {wit[0] / base[0]:.2f} x the baseline; publication {wit[3]:.2f} s after "
                  "the last receipt", flush=True)


if __name__ == "__main__":
    main()
