"""Compare the HTTP answers of two revisions of `tlog serve`, answer by answer.

Usage, from a clone (REV: any git revision of this repository):

    .venv/bin/python bench/http_compare.py --old REV [--new REV] [--only-diffs] [--keep]
                                           [--results FILE]

OLD is --old; NEW is --new, or the working tree when --new is not given. Each revision is
copied with `git archive` into a temporary directory and gets a virtualenv there
(`python -m venv`, `pip install -q -e .`, about a minute, both at once); the working tree
runs on the interpreter running this script. Then:

1. a throwaway PostgreSQL cluster (tlog.cli.pgcluster, Unix socket only, fsync off) and one
   database, migrated with OLD `tlog migrate`;
2. the log, admin, token and publisher keys, made with OLD `tlog keygen`;
3. OLD `tlog serve --policy open` fills the log: 600 releases (concurrently), a few registry
   entries and a release of a registered publisher (606 entries);
4. three phases, each replayed against OLD and then against NEW, on the same database and
   keys, each on a fresh `tlog serve` with an empty tile cache: `open` (bad, duplicate and
   conflicting POSTs, admin calls, then every GET path of schema/openapi.yaml with valid and
   invalid parameters, HEAD, unknown paths and wrong methods), `registered` (token checks)
   and `quota` (--client-rate 0.001 --client-burst 3: 429 after a burst). No request may
   append, so both servers answer about the same tree; the tree size is checked around each
   replay;
5. the status, the content type, every other response header except Date and Server, and
   the body are compared answer by answer, and printed as a table.

Entries are signed with NEW's `verifier` package (with OLD's if NEW's does not import); the
signatures are deterministic, so both servers see the same bytes.

Masked, because they legitimately change between two runs of the same code: the `token`,
`jti` and `expires_at` of issued submission tokens (random and time-based; the values are
replaced wherever they reappear, e.g. in a revocation path), a random X-Request-Id when the
request sent none or an invalid one (checked to be 16 hex digits), the wait in a 429 message
("retry in 999.9 s": a time), and /metrics (counters and timings: only the set of metric
names is compared). Content-Length is then compared against the masked body.

Exit status: 0 if every status, header and body is identical; 1 if some differ; 2 if the
harness itself failed (a revision that does not install or start, PostgreSQL, ...); 130 if
interrupted. The temporary directory (copies, virtualenvs, database, logs) is removed at the
end, whatever way the run ends, unless --keep (the database is removed even then).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from http_compare_entries import Keys, fill_log, load_protocol, make_keys
from http_compare_reads import get_requests
from http_compare_requests import admin_requests, json_entry_variants
from http_compare_setup import (
    Checkout,
    Phase,
    check_imports,
    check_server_log,
    checkout,
    create_database,
    db_facts,
    git,
    install,
    log,
    run_tool,
    start_serve,
    stop_children,
    tree_size,
)
from http_compare_tokens import quota_requests, registered_requests
from http_compare_wire import Answer, Req, Row, print_details, print_table, replay, save_results

from tlog.cli.pgcluster import Cluster

BENCH = Path(__file__).resolve().parent
ORIGIN = "log.example.org/httpcmp"
DBNAME = "tlogcmp"
PHASES = [Phase("open", "open"), Phase("registered", "registered"),
          Phase("quota", "open", ("--client-rate", "0.001", "--client-burst", "3"))]


@dataclass
class Run:
    """One comparison: the two checkouts, the database, the keys, the requests, the answers."""

    old: Checkout
    new: Checkout
    workdir: Path
    db_url: str
    keys: Keys
    lists: dict[str, list[Req]] = field(default_factory=dict)
    results: dict[str, dict[str, list[Answer]]] = field(
        default_factory=lambda: {"OLD": {}, "NEW": {}})
    sizes: dict[str, list[int]] = field(default_factory=lambda: {"OLD": [], "NEW": []})


def prepare(args: argparse.Namespace, repo: Path, tmp: Path) -> tuple[Checkout, Checkout]:
    """OLD and NEW copied and installed, each checked to import its own code."""
    old = checkout(repo, "OLD", args.old, tmp)
    new = checkout(repo, "NEW", args.new, tmp)
    if old.commit or new.commit:
        t0 = time.monotonic()
        log("installing " + " and ".join(f"{c.label} ({c.what})" for c in (old, new)
                                         if c.commit) + " in virtualenvs under " + str(tmp))
        install([old, new], tmp)
        log(f"installed in {time.monotonic() - t0:.1f}s")
    for c in (old, new):
        log(f"{c.label} is {c.what}; imports {check_imports(c, tmp)}")
    return old, new


async def start_run(old: Checkout, new: Checkout, cluster: Cluster, workdir: Path) -> Run:
    """The database migrated by OLD, and the keys made by OLD."""
    await create_database(cluster.url("postgres"), DBNAME)
    url = cluster.url(DBNAME)
    print(run_tool(old, ["migrate", "--database-url", url], workdir).strip())
    proto = load_protocol([new.src, old.src])
    log(f"entries are signed with the verifier package of {proto.root}")
    keys = make_keys(proto, lambda a: run_tool(old, a, workdir), ORIGIN, workdir / "keys")
    log(f"keys made with OLD tlog keygen: {ORIGIN}, log-admin, tlog-tokens, cmp-release-bot, "
        "acme")
    return Run(old, new, workdir, url, keys)


async def fill_and_list(run: Run, base: str) -> None:
    """Fill the log through OLD, then build the three request lists from what it holds."""
    t0 = time.monotonic()
    st = await fill_log(base, run.keys)
    log(f"OLD: filled the log in {time.monotonic() - t0:.1f}s; statuses {st['bulk']}")
    if st["bad"]:
        raise RuntimeError(f"setup submissions not all 201: {st}")
    facts = await db_facts(run.db_url)
    log(f"log holds {len(facts['entries'])} entries, {len(facts['sizes'])} published "
        "checkpoints")
    run.lists["open"] = (json_entry_variants(run.keys) + admin_requests(run.keys)
                         + get_requests(facts))
    run.lists["registered"] = registered_requests(run.keys, ORIGIN)
    run.lists["quota"] = quota_requests(run.keys)


async def replay_phase(run: Run, c: Checkout, phase: Phase) -> None:
    serve = start_serve(c, run.db_url, run.keys.files, run.workdir, phase)
    try:
        if c is run.old and phase.name == "open":
            await fill_and_list(run, serve.base)
        before = await tree_size(serve.base)
        t0 = time.monotonic()
        reqs = run.lists[phase.name]
        run.results[c.label][phase.name] = await replay(serve.base, reqs, {"dynamic": []})
        after = await tree_size(serve.base)
        run.sizes[c.label] += [before, after]
        log(f"{c.label} {phase.name}: {len(reqs)} requests in {time.monotonic() - t0:.1f}s; "
            f"tree size {before} -> {after}")
    finally:
        serve.stop()
    if serve.proc.returncode not in (0, -signal.SIGTERM):
        log(f"warning: {c.label} serve exited {serve.proc.returncode}")
    check_server_log(serve.logpath, c.label, phase.name)


async def compare(old: Checkout, new: Checkout, cluster: Cluster, workdir: Path) -> Run:
    run = await start_run(old, new, cluster, workdir)
    for c in (old, new):
        for phase in PHASES:
            await replay_phase(run, c, phase)
    return run


def rows_of(run: Run) -> list[Row]:
    rows = []
    for phase in PHASES:
        answers = zip(run.lists[phase.name], run.results["OLD"][phase.name],
                      run.results["NEW"][phase.name], strict=True)
        rows += [Row(phase.name, req.name, req.method, req.path_label, a, b)
                 for req, a, b in answers]
    return rows


def report(run: Run, args: argparse.Namespace) -> int:
    rows = rows_of(run)
    print_table(rows, args.only_diffs)
    if args.results:
        save_results(rows, args.results)
    diffs = [r for r in rows if r.problems()]
    counts = ", ".join(f"{p.name}: {len(run.lists[p.name])}" for p in PHASES)
    print(f"\n{len(rows)} requests compared ({counts}); {len(diffs)} differ; tree sizes around "
          f"each replay: OLD {run.sizes['OLD']} NEW {run.sizes['NEW']}"
          + (f"; full answers in {args.results}" if args.results else ""))
    if len(set(run.sizes["OLD"] + run.sizes["NEW"])) != 1:
        print("WARNING: a replay changed the tree size; answers after it may differ for that "
              "reason")
    if diffs:
        print_details(diffs)
    return 0 if not diffs else 1


def execute(args: argparse.Namespace, repo: Path, tmp: Path, cluster: Cluster) -> int:
    old, new = prepare(args, repo, tmp)
    workdir = tmp / "run"
    workdir.mkdir()
    cluster.init()
    cluster.start(fsync=False)
    log(f"PostgreSQL started in {cluster.home} (Unix socket only)")
    run = asyncio.run(compare(old, new, cluster, workdir))
    return report(run, args)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--old", required=True, metavar="REV", help="the revision answered first")
    ap.add_argument("--new", metavar="REV", help="the revision compared with it "
                    "(default: the working tree)")
    ap.add_argument("--only-diffs", action="store_true", help="table rows for differences only")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (copies, virtualenvs, logs)")
    ap.add_argument("--results", type=Path, metavar="FILE",
                    help="write every request with both answers to FILE as JSON")
    return ap.parse_args()


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cleanup(tmp: Path, cluster: Cluster, keep: bool) -> None:
    """Stop what this run started and remove its files; not interruptible."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    stop_children()
    try:
        cluster.stop(mode="immediate")  # deleted next: no checkpoint needed
    except Exception as exc:
        log(f"warning: stopping PostgreSQL: {exc}")
    if keep:
        shutil.rmtree(cluster.home, ignore_errors=True)
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"removed {tmp} (copies, virtualenvs, PostgreSQL)")


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    repo = Path(git(BENCH, "rev-parse", "--show-toplevel"))
    tmp = Path(tempfile.mkdtemp(prefix="tlog-http-compare-"))
    tmp.chmod(0o755)  # the postgres user must reach the cluster when this runs as root
    cluster = Cluster(tmp / "pg")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    rc = 2
    try:
        rc = execute(args, repo, tmp, cluster)
    except KeyboardInterrupt as exc:
        log(f"interrupted: {exc}")
        rc = 130
    except Exception as exc:
        if not isinstance(exc, RuntimeError):  # not one of the harness's own messages
            traceback.print_exc()
        log(f"harness failure: {exc}")
        rc = 2
    finally:
        cleanup(tmp, cluster, args.keep)
        log(f"total {time.monotonic() - started:.1f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
