"""`tlog bench`: drive a running log over HTTP and report throughput, latency and errors.

Modes: append (one signed release per POST /v1/entries), append-batch (POST
/v1/entries/batch), read (inclusion proofs, full tiles, entry bundles, /checkpoint of what
the log holds), mixed (appends and reads). --read-kind measures one kind of read at a
time. With --baseline the same requests, client and concurrency also go to a trivial aiohttp
server on this machine (answering as many bytes as the log did; for inclusion proofs also
an empty body, "the trivial GET"), and the log's throughput is printed as a ratio to it.
--runs N repeats it all N times, the log's and the baseline's rounds interleaved, and prints
medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Callable
from typing import Any

import uvloop

from tlog.cli.benchbase import Baseline, start_baseline
from tlog.cli.benchload import Load, Plan, Request, new_session, progress_stream
from tlog.cli.benchops import (
    MIX,
    READ_KINDS,
    BenchError,
    Releases,
    check_batch_endpoint,
    for_baseline,
    for_minimal,
    log_size,
    mixed,
    read_targets,
)
from tlog.cli.benchruns import describe, summarize
from tlog.cli.remote import RemoteError, add_token_options, read_secret
from verifier.client.keys import KeyFileError, read_private_key
from verifier.errors import EXIT_OK, EXIT_USAGE
from verifier.protocol.duration import parse_duration
from verifier.protocol.note import generate_key

MODES = ("append", "append-batch", "read", "mixed")
MAX_CONCURRENCY = 4096
MAX_RUNS = 100
DEFAULT_PACKAGES = 1000
MAX_PACKAGES = 1_000_000
KINDS = (MIX, *(kind for kind, _ in READ_KINDS))
Make = Callable[[int], Request]
MAX_BATCH = 1000  # the batch endpoint's limit
SEED_INDEX = 10**12  # the release mixed puts in an empty log: beyond any run's numbers
ROUND_SPAN = 10**9  # request numbers per round: more than any round sends (and MAX_RUNS
# rounds of every read kind stay below SEED_INDEX)


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
    b.add_argument("--read-kind", action="append", metavar="KIND",
                   help=f"read and mixed: what to read, one of {', '.join(KINDS)} (default "
                        f"{MIX}: proofs, tiles, bundles and checkpoints 4:3:1:2); repeat it "
                        "or give a comma list to measure each kind on its own, in turn")
    b.add_argument("--runs", type=int, default=1, metavar="N",
                   help="rounds, the log's and the baseline's interleaved; figures print as "
                        "the median over them, each round's too (default 1)")
    b.add_argument("--key", help="publisher private key file (default: a throwaway key, "
                                 "which an open log accepts)")
    b.add_argument("--package", help="package to publish releases of (default bench-RANDOM); "
                                     "with --packages N, the names PACKAGE-0 .. PACKAGE-N-1")
    b.add_argument("--packages", type=int, default=DEFAULT_PACKAGES, metavar="N",
                   help="spread the releases over N packages, in turn (default "
                        f"{DEFAULT_PACKAGES}: a log's packages have a few versions each, and "
                        "one package's thousands of versions would measure that package)")
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
    if not 1 <= args.packages <= MAX_PACKAGES:
        raise bad(f"--packages must be 1..{MAX_PACKAGES}")
    if not 1 <= args.runs <= MAX_RUNS:
        raise bad(f"--runs must be 1..{MAX_RUNS}")
    args.read_kinds = read_kinds_of(args)
    duration: float | None = None
    if args.duration is not None or args.count is None:
        try:
            duration = parse_duration(args.duration or "10s")
        except ValueError as exc:
            raise bad(f"--duration: {exc}") from exc
        if duration < 1:
            raise bad("--duration must be at least 1s")
    return Plan(args.concurrency, args.rate, duration, args.count)


def read_kinds_of(args: argparse.Namespace) -> list[str]:
    """The --read-kind values in order, each once; BenchError 2 for an unknown kind."""
    kinds: list[str] = []
    for value in args.read_kind or [MIX]:
        for kind in filter(None, (k.strip() for k in value.split(","))):
            if kind not in KINDS:
                raise BenchError(EXIT_USAGE, f"--read-kind: {kind!r} is none of "
                                             f"{', '.join(KINDS)}")
            if kind not in kinds:
                kinds.append(kind)
    if not kinds:
        raise BenchError(EXIT_USAGE, "--read-kind: no kind given")
    if args.read_kind and args.mode not in ("read", "mixed"):
        raise BenchError(EXIT_USAGE, "--read-kind applies to the read and mixed modes")
    return kinds


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
    return Releases(signer, args.package or "", headers, args.packages)


async def run_bench(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    base = args.log.rstrip("/")
    releases = releases_of(args)
    releases.package = releases.package or f"bench-{releases.run}"
    async with new_session(plan.concurrency) as session:
        before = await log_size(session, base)
        measures = await measures_of(args, session, base, before, releases)
    server = await start_trivial() if args.baseline else None
    try:
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in measures}
        for n in range(args.runs):  # log, baseline, log, baseline, ...
            for k, (label, make) in enumerate(measures.items()):
                minimal = args.mode == "read" and label == "proof"
                first = (n * len(measures) + k) * ROUND_SPAN  # each round its own releases
                rounds[label].append(await one_round(numbered_from(make, first), base, plan,
                                                     server, minimal, args.json))
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
    async with new_session(1) as session:
        after = await log_size(session, base)
    result: dict[str, Any] = {
        "mode": args.mode, "log": base, "concurrency": plan.concurrency, "rate": plan.rate,
        "runs": args.runs, "tree_size_before": before, "tree_size_after": after}
    if args.mode != "read":
        result["package"] = releases.package
        result["packages"] = releases.packages
    summaries = {label: summarize(rs) for label, rs in rounds.items()}
    if args.mode in ("read", "mixed"):
        result["read_kinds"] = list(summaries)
    if len(summaries) == 1:
        result.update(next(iter(summaries.values())))
    else:
        result["by_read_kind"] = summaries
    return result


def numbered_from(make: Make, first: int) -> Make:
    """`make` numbering its requests from `first`: each round appends releases of its own
    (a version sent again with another digest would be refused) and reads its own sample."""
    return lambda i: make(first + i)


async def start_trivial() -> Baseline:
    try:
        return await asyncio.to_thread(start_baseline)
    except OSError as exc:
        raise BenchError(1, f"--baseline: {exc}") from exc


async def one_round(make: Make, base: str, plan: Plan, server: Baseline | None,
                    minimal: bool, quiet: bool) -> dict[str, Any]:
    """The log's figures, then (with a baseline server) the same requests to it: answering
    as many bytes as the log did and, for inclusion proofs, also the minimal GET."""
    async with new_session(plan.concurrency) as session:
        stats = await Load(session, base, make, plan).run(progress_stream(quiet))
    out = stats.json()
    if server is None:
        return out
    sides = [("baseline", "ratio", for_baseline(make, stats))]
    if minimal:
        sides.append(("minimal_baseline", "minimal_ratio", for_minimal(make)))
    for side, ratio, requests in sides:
        async with new_session(plan.concurrency) as session:
            trivial = await Load(session, server.url, requests, plan).run(progress_stream(quiet))
        out[side] = {"server": "trivial aiohttp POST/GET handlers", **trivial.json()}
        kinds = list(stats.reply_bytes)
        if side == "baseline" and len(kinds) == 1:
            out[side]["reply_bytes"] = stats.mean_reply(kinds[0])
        out[ratio] = round(stats.ok / max(stats.elapsed, 1e-9)
                           / max(out[side]["throughput_rps"], 1e-9), 3)
    return out


async def measures_of(args: argparse.Namespace, session: Any, base: str, size: int,
                      releases: Releases) -> dict[str, Make]:
    """What each measurement sends, by label: the mode's requests, or in read and mixed one
    measurement per --read-kind."""
    if args.mode == "append":
        return {args.mode: releases.append}
    if args.mode == "append-batch":
        await check_batch_endpoint(session, base, releases.headers)
        return {args.mode: lambda i: releases.batch(i, args.batch_size)}
    if args.mode == "mixed" and size == 0:  # something to read: one release first
        async with session.post(base + "/v1/entries", data=releases.append(SEED_INDEX).body,
                                headers=releases.headers) as resp:
            if resp.status not in (200, 201):
                raise BenchError(1, f"the first append answered HTTP {resp.status}")
        size = await log_size(session, base)
    targets = await read_targets(session, base, size)
    if args.mode == "read":
        return {kind: targets.reader(kind) for kind in args.read_kinds}
    return {kind: mixed(releases.append, targets.reader(kind), args.read_ratio)
            for kind in args.read_kinds}


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        plan = plan_of(args)
        # uvloop: the client's own cost, shared with the servers' on this machine, is less.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(run_bench(args, plan))
    except BenchError as exc:
        print(f"tlog bench: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(result, indent=2) if args.json else describe(result))
    return EXIT_OK


__all__ = ["Request", "add_bench_command", "cmd_bench"]
