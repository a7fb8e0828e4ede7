"""Soak the log's core promise: the scenarios of tests/reliability, for longer.

Each scenario runs real `tlog serve` processes on a PostgreSQL cluster of its own under
concurrent load, makes its trouble (SIGKILLs of tlog serve at random moments, PostgreSQL
crashed and restarted with tlog left running, three servers with one killed, COMMITs that
PostgreSQL refuses, clients hanging up mid-request, test-only faults before and after each
durability point of the sequencer), lets every client finish, then checks every invariant of
tests.reliability.invariants (every receipt still true, dense indices, no duplicates, retries
answered the same index, every checkpoint consistent with the last, `tlog-verify audit
--full`). It prints one row per scenario:

    scenario, kills/crashes/failures survived, requests sent, acknowledged, retried requests,
    submissions found on retry (appended by an attempt the client saw fail), answers during
    the trouble by status, entries lost (must be 0), duplicates (0), audit.

Usage: python bench/soak.py [--kills 50] [--crashes 5] [--rounds 3] [--acks 2000]
       [--clients 16] [--only SCENARIO ...] [--seed N]
Exit status 1 when any scenario broke the promise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.reliability import chaos
from tests.reliability.chaos import LogUnderTest, Outcome
from tests.reliability.load import Load
from tlog.log.faults import POINTS
from verifier.protocol.note import generate_key

FAULT_ODDS = 0.2  # per batch, for each of "fail" and "fail-after" at the point


def scenario(args: argparse.Namespace, name: str, rng: random.Random) -> Outcome:
    """Run one scenario on a cluster of its own."""
    with chaos.separate_cluster() as (cluster, url):
        workdir = Path(tempfile.mkdtemp(prefix=f"tlog-soak-{name}-"))
        log = LogUnderTest(url, generate_key("soak.example.org/log"), workdir)
        servers, clients, hangups, action = 1, args.clients, 0.0, chaos.keep_loading(args.acks)
        if name == "sigkill":
            action = chaos.kill_serve(args.kills, rng)
        elif name == "pgcrash":
            action = chaos.crash_postgres(cluster, args.crashes, rng)
        elif name == "three-servers":
            servers, action = 3, _rounds_of_kills(args.rounds, rng)
        elif name == "commit-refused":
            action = chaos.refuse_commits(0.3, args.acks)
        elif name == "hangups":
            hangups = 0.3
        elif name.startswith("fault-"):
            point = name.removeprefix("fault-")
            log.env = {"TLOG_FAULTS_I_KNOW": "1",
                       "TLOG_FAULTS": f"{point}:fail:{FAULT_ODDS},{point}:fail-after:{FAULT_ODDS}"}
        log.start(servers)
        try:
            outcome = asyncio.run(chaos.run(name, log, action, clients=clients,
                                            disconnect_rate=hangups, seed=rng.randrange(2**32)))
        finally:
            log.stop()
        if name.startswith("fault-"):
            outcome.disruptions = chaos.count_in_output(log, "InjectedFault: injected fault ")
        elif name == "hangups":
            outcome.disruptions = outcome.stats.disconnects
        if outcome.report.ok:  # a broken run keeps its server logs and audit evidence
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"{name}: server logs and evidence kept in {workdir}", file=sys.stderr)
        return outcome


def _rounds_of_kills(rounds: int, rng: random.Random) -> chaos.Action:
    """Three servers; each round SIGKILLs one at random under load and restarts it."""

    async def act(log: LogUnderTest, load: Load) -> int:
        for _ in range(rounds):
            await chaos.progress(load, load.clients)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            victim = rng.randrange(len(log.servers))
            log.kill(victim)
            await chaos.progress(load, load.clients * 2)
            await asyncio.to_thread(log.restart, victim)
        return rounds

    return act


def row(o: Outcome, seconds: float) -> list[str]:
    answers = ", ".join(f"{k}: {v}" for k, v in o.stats.failures.most_common()) or "-"
    return [o.scenario, str(o.disruptions), str(o.stats.sent), str(o.acknowledged),
            str(o.stats.retried), str(o.found_on_retry), answers, str(o.report.lost),
            str(o.report.duplicates), "OK" if o.report.audit_ok else "FAILED", f"{seconds:.0f}"]


HEADER = ["scenario", "survived", "requests", "acknowledged", "retried", "found on retry",
          "answers during trouble", "lost", "duplicates", "audit", "s"]


def print_table(rows: list[list[str]], out: Callable[[str], None] = print) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, ["-" * w for w in widths], *rows]:
        out(" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))


def main() -> int:
    names = ["sigkill", "pgcrash", "three-servers", "commit-refused", "hangups",
             *(f"fault-{p}" for p in POINTS)]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--crashes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="kills among three servers")
    parser.add_argument("--acks", type=int, default=2000,
                        help="acknowledged submissions for the scenarios without kills")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--only", nargs="+", choices=names, default=names)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows, broken = [], []
    for name in args.only:
        started = time.monotonic()
        outcome = scenario(args, name, rng)
        rows.append(row(outcome, time.monotonic() - started))
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        if not outcome.report.ok:
            broken.append(f"{name}: {outcome.report.explain()}")
    print_table(rows)
    for text in broken:
        print(f"\nBROKEN {text}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
