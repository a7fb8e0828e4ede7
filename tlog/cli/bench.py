"""`tlog bench`: drive a running log over HTTP and report throughput, latency and errors.

Modes: append (one signed release per POST /v1/entries), append-batch (POST
/v1/entries/batch), read (inclusion proofs, full tiles, entry bundles, /checkpoint of what
the log holds), mixed (appends and reads). With --baseline the same requests, client and
concurrency also go to a trivial aiohttp server on this machine, and the log's throughput
is printed as a ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from typing import Any

from tlog.cli.benchbase import start_baseline
from tlog.cli.benchload import Load, Plan, Request, Stats, new_session, progress_stream
from tlog.cli.benchops import (
    BenchError,
    Releases,
    check_batch_endpoint,
    for_baseline,
    log_size,
    mixed,
    read_targets,
)
from tlog.cli.remote import RemoteError, add_token_options, read_secret
from verifier.client.keys import KeyFileError, read_private_key
from verifier.errors import EXIT_OK, EXIT_USAGE
from verifier.protocol.duration import parse_duration
from verifier.protocol.note import generate_key

MODES = ("append", "append-batch", "read", "mixed")
MAX_CONCURRENCY = 4096
MAX_BATCH = 1000  # the batch endpoint's limit
SEED_INDEX = 10**12  # the release mixed puts in an empty log: beyond any run's numbers


def add_bench_command(sub: Any) -> None:
    b = sub.add_parser("bench", help="load a running log over HTTP and measure it")
    b.add_argument("mode", choices=MODES)
    b.add_argument("--log", required=True, help="the log's base URL")
    b.add_argument("--concurrency", type=int, default=16,
                   help="requests in flight at once (default 16)")
    b.add_argument("--rate", type=float, metavar="R",
                   help="target requests/s, sent on schedule whether or not earlier ones "
                        "answered; latency counts from the scheduled time (default: as fast "
                        "as --concurrency allows)")
    b.add_argument("--duration", metavar="DUR", help="how long to run (default 10s)")
    b.add_argument("--count", type=int, metavar="N", help="how many requests to send")
    b.add_argument("--batch-size", type=int, default=100,
                   help=f"entries per append-batch request (1..{MAX_BATCH}, default 100)")
    b.add_argument("--read-ratio", type=float, default=0.9,
                   help="mixed: the fraction of requests that are reads (default 0.9)")
    b.add_argument("--key", help="publisher private key file (default: a throwaway key, "
                                 "which an open log accepts)")
    b.add_argument("--package", help="package to publish releases of (default bench-RANDOM)")
    add_token_options(b, "file holding the submission token (registered logs)")
    b.add_argument("--baseline", action="store_true",
                   help="also measure a trivial aiohttp server with the same client and "
                        "requests, and print the log's throughput as a ratio to it")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.set_defaults(func=cmd_bench)


def plan_of(args: argparse.Namespace) -> Plan:
    """The load the options ask for; BenchError 2 for a bad option."""
    def bad(message: str) -> BenchError:
        return BenchError(EXIT_USAGE, message)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise bad(f"--concurrency must be 1..{MAX_CONCURRENCY}")
    if args.rate is not None and not 0 < args.rate <= 1e6:
        raise bad("--rate must be above 0 (requests/s) and at most 1000000")
    if args.count is not None and args.count < 1:
        raise bad("--count must be at least 1")
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise bad(f"--batch-size must be 1..{MAX_BATCH}")
    if not 0 <= args.read_ratio <= 1:
        raise bad("--read-ratio must be between 0 and 1")
    duration: float | None = None
    if args.duration is not None or args.count is None:
        try:
            duration = parse_duration(args.duration or "10s")
        except ValueError as exc:
            raise bad(f"--duration: {exc}") from exc
        if duration < 1:
            raise bad("--duration must be at least 1s")
    return Plan(args.concurrency, args.rate, duration, args.count)


def releases_of(args: argparse.Namespace) -> Releases:
    try:
        signer = (read_private_key(args.key, "publisher key", owner_only=False) if args.key
                  else generate_key(f"bench-{secrets.token_hex(4)}"))
        token = read_secret(args.token_file, "TLOG_TOKEN", "token file")
    except (KeyFileError, RemoteError) as exc:
        raise BenchError(EXIT_USAGE, str(exc)) from exc
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return Releases(signer, args.package or "", headers)


async def run_bench(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    base = args.log.rstrip("/")
    releases = releases_of(args)
    releases.package = releases.package or f"bench-{releases.run}"
    async with new_session(plan.concurrency) as session:
        before = await log_size(session, base)
        make = await requests_of(args, session, base, before, releases)
        stats = await Load(session, base, make, plan).run(progress_stream(args.json))
        after = await log_size(session, base)
    result: dict[str, Any] = {
        "mode": args.mode, "log": base, "concurrency": plan.concurrency, "rate": plan.rate,
        "tree_size_before": before, "tree_size_after": after, **stats.json()}
    if args.mode != "read":
        result["package"] = releases.package
    if args.baseline:
        result["baseline"] = await baseline(make, stats, plan, args.json)
        result["ratio"] = round(stats.ok / max(stats.elapsed, 1e-9)
                                / max(result["baseline"]["throughput_rps"], 1e-9), 3)
    return result


async def requests_of(args: argparse.Namespace, session: Any, base: str, size: int,
                      releases: Releases) -> Any:
    if args.mode == "append":
        return releases.append
    if args.mode == "append-batch":
        await check_batch_endpoint(session, base, releases.headers)
        return lambda i: releases.batch(i, args.batch_size)
    if args.mode == "mixed" and size == 0:  # something to read: one release first
        async with session.post(base + "/v1/entries", data=releases.append(SEED_INDEX).body,
                                headers=releases.headers) as resp:
            if resp.status not in (200, 201):
                raise BenchError(1, f"the first append answered HTTP {resp.status}")
        size = await log_size(session, base)
    reader = (await read_targets(session, base, size)).reader()
    return reader if args.mode == "read" else mixed(releases.append, reader, args.read_ratio)


async def baseline(make: Any, measured: Stats, plan: Plan, quiet: bool) -> dict[str, Any]:
    try:
        server = await asyncio.to_thread(start_baseline)
    except OSError as exc:
        raise BenchError(1, f"--baseline: {exc}") from exc
    try:
        async with new_session(plan.concurrency) as session:
            stats = await Load(session, server.url, for_baseline(make, measured), plan).run(
                progress_stream(quiet))
    finally:
        await asyncio.to_thread(server.stop)
    return {"server": "trivial aiohttp POST/GET handlers", **stats.json()}


def describe(result: dict[str, Any]) -> str:
    lines = [f"tlog bench {result['mode']}: {result['log']}, concurrency "
             f"{result['concurrency']}" + (f", rate {result['rate']}/s" if result["rate"]
                                           else "")]
    lines += _figures("log", result)
    lines.append(f"  tree size {result['tree_size_before']} -> {result['tree_size_after']}")
    if "baseline" in result:
        lines += _figures("baseline (trivial aiohttp, same client)", result["baseline"])
        lines.append(f"  log/baseline throughput: {result['ratio']:.3f}")
    return "\n".join(lines)


def _figures(name: str, r: dict[str, Any]) -> list[str]:
    lat = r["latency_ms"]
    out = [f"  {name}: {r['requests']} requests in {r['seconds']:.1f} s, {r['ok']} ok, "
           f"{r['throughput_rps']:.1f} ok/s"
           + (f", {r['entries_per_s']:.1f} entries/s" if "entries_per_s" in r else ""),
           f"    latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
           f"max {lat['max']}"]
    for kind, k in r.get("by_kind", {}).items():
        out.append(f"    {kind}: {k['requests']} requests, latency ms p50 {k['p50']}  "
                   f"p99 {k['p99']}")
    problems = [f"HTTP {s} x{n}" for s, n in r["errors"].items()]
    problems += [f"{name} x{n}" for name, n in r["transport_errors"].items()]
    problems += [f"entry HTTP {s} x{n}" for s, n in r.get("entry_statuses", {}).items()
                 if s not in ("200", "201")]
    out.append("    errors: " + (", ".join(problems) if problems else "none"))
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        plan = plan_of(args)
        result = asyncio.run(run_bench(args, plan))
    except BenchError as exc:
        print(f"tlog bench: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(result, indent=2) if args.json else describe(result))
    return EXIT_OK


__all__ = ["Request", "add_bench_command", "cmd_bench"]
