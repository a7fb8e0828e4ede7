"""Benchmark: what the package state map costs the log per batch, and what its proofs weigh.

For each map size (default 10,000 and 1,000,000 packages) it builds the map once with the
batch updater (one batch holding every package), then applies --batches batches of --batch
updates each (--new of them new packages, the rest random existing ones, as a busy log
would), and prints per batch: time to hash the changed package states (JCS + SHA-256 of a
state with a few releases and a lifecycle statement), time to compute the map update, time to
apply it to the in-memory store, nodes written and bytes written (65-byte node plus an 8-byte
id per row, what a log table would hold). Then proof sizes (bytes and hashes, average and
max) over --proofs present and as many absent packages, and the time to prove and verify.

Everything runs in one process on the in-memory dict store, so it measures the map's own
cost; a database store adds the row writes.

Usage: python bench/statemap_bench.py [--sizes 10000,1000000] [--batch 512] [--new 32]
       [--batches 20] [--proofs 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import statistics
import time

from verifier.protocol.package_state import package_key, state_hash
from verifier.protocol.statemap import EMPTY, SparseMap, parse_proof, verify_proof

ROW_ID_BYTES = 8


def sample_state(package: str, n: int) -> dict[str, object]:
    """A realistic state: five releases, a rollout statement on the newest."""
    releases = [
        {
            "version": f"1.{v}.0",
            "index": n * 10 + v,
            "leaf_hash": hashlib.sha256(f"{package}/{v}".encode()).hexdigest(),
            "counter": v,
        }
        for v in range(5)
    ]
    lifecycle = {
        "1.4.0": {"kind": "rollout/v1", "index": n * 10 + 9, "leaf_hash": "ab" * 32},
    }
    return {"package": package, "releases": releases, "lifecycle": lifecycle, "counter": 4}


def name(i: int) -> str:
    return f"package-{i}"


def build(size: int) -> tuple[SparseMap, float]:
    items = [(package_key(name(i)), hashlib.sha256(b"v0 %d" % i).digest()) for i in range(size)]
    smap = SparseMap()
    start = time.perf_counter()
    update = smap.update(items)
    smap.apply(update)
    return smap, time.perf_counter() - start


def run_batches(smap: SparseMap, size: int, args: argparse.Namespace) -> int:
    rnd = random.Random(args.seed)
    next_new = size
    rows: dict[str, list[float]] = {"state": [], "compute": [], "apply": [], "nodes": []}
    for b in range(args.batches):
        names = [name(i) for i in rnd.sample(range(next_new), args.batch - args.new)]
        names += [name(i) for i in range(next_new, next_new + args.new)]
        next_new += args.new
        start = time.perf_counter()
        updates = [(package_key(p), state_hash(sample_state(p, b))) for p in names]
        t_state = time.perf_counter()
        update = smap.update(updates)
        t_compute = time.perf_counter()
        smap.apply(update)
        t_apply = time.perf_counter()
        rows["state"].append(t_state - start)
        rows["compute"].append(t_compute - t_state)
        rows["apply"].append(t_apply - t_compute)
        rows["nodes"].append(len(update.writes))
    nodes = rows["nodes"]
    print(f"  batch of {args.batch} ({args.new} new), {args.batches} batches:")
    for what in ("state", "compute", "apply"):
        ms = [t * 1000 for t in rows[what]]
        print(f"    {what:8} mean {statistics.mean(ms):8.1f} ms   max {max(ms):8.1f} ms")
    print(
        f"    nodes written mean {statistics.mean(nodes):8.0f}   max {max(nodes):8.0f}   "
        f"bytes mean {statistics.mean(nodes) * (65 + ROW_ID_BYTES) / 1024:8.0f} KiB"
    )
    return next_new


def proofs(smap: SparseMap, total: int, args: argparse.Namespace) -> None:
    rnd = random.Random(args.seed + 1)
    root = smap.root()
    present = [package_key(name(i)) for i in rnd.sample(range(total), args.proofs)]
    absent = [package_key(f"absent-{i}") for i in range(args.proofs)]
    for label, keys, want_present in (("present", present, True), ("absent", absent, False)):
        sizes, hashes, t_prove, t_verify = [], [], 0.0, 0.0
        for key in keys:
            start = time.perf_counter()
            proof = smap.prove(key)
            mid = time.perf_counter()
            value = verify_proof(root, key, proof)
            t_verify += time.perf_counter() - mid
            t_prove += mid - start
            assert (value is not None) == want_present
            parsed = parse_proof(proof)
            sizes.append(len(proof))
            nonempty = sum(1 for s in parsed.siblings if s != EMPTY)
            hashes.append(nonempty + len(parsed.tail) // 32)
        print(
            f"  {label:7} proofs: bytes mean {statistics.mean(sizes):6.1f} max {max(sizes):4d}   "
            f"hashes mean {statistics.mean(hashes):5.1f} max {max(hashes):3d}   "
            f"prove {t_prove / len(keys) * 1e6:6.1f} us   "
            f"verify {t_verify / len(keys) * 1e6:6.1f} us"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--proofs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"map of {size:,} packages")
        smap, seconds = build(size)
        store = smap.store
        assert isinstance(store, dict)
        print(
            f"  build (one batch): {seconds:.2f} s, {len(store):,} nodes, "
            f"{len(store) * (65 + ROW_ID_BYTES) / 2**20:.0f} MiB as rows"
        )
        total = run_batches(smap, size, args)
        proofs(smap, total, args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak RSS so far {peak:.0f} MiB")


if __name__ == "__main__":
    main()
