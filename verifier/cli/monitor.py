"""`tlog-verify monitor`: follow a log, report every release and alert on suspicious ones.

    tlog-verify monitor --log URL (--key LOG.vkey | --policy FILE [--max-age DUR])
                        --state DIR [--package GLOB]... [--version-scheme GLOB=SCHEME]...
                        [--follow [--interval S]] [--workers N] [--metrics-port P]
                        [--halt-key KEY --halt-on RULE... [--halt-token-file FILE]]

This module parses and checks the options and wires the client together; what a run does is
described in verifier.client.monitor.run, the events it writes in .watch and .summary.

Exit status: 0 done (alerts are reported as events, not as failure); 1 an entry failed
validation or the log misbehaved (reason on stderr, evidence in DIR/evidence/); 2 usage;
3 transport. With --follow, transport errors are reported on stderr and retried next round;
SIGINT or SIGTERM finish the current group and exit 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.cli.common import client_for, trust_for
from verifier.client.http import HttpFetcher
from verifier.client.keys import KeyFileError, read_private_key, read_secret
from verifier.client.monitor.db import DB_FILE, MonitorDB
from verifier.client.monitor.halts import RULES, HaltConfig, parse_rules
from verifier.client.monitor.metrics import Metrics
from verifier.client.monitor.run import Monitor, Stop
from verifier.client.monitor.witnesses import WitnessChecker
from verifier.client.scan import default_workers
from verifier.client.statedir import StateDir, load_vkey
from verifier.errors import UsageError
from verifier.protocol.policy import PolicyTrust
from verifier.protocol.trust import LogTrust
from verifier.protocol.versions import SCHEMES, SchemeMap, VersionError

DEFAULT_INTERVAL = 60.0


@dataclass(frozen=True)
class Options:
    """The monitor's options, checked."""

    patterns: tuple[str, ...]
    schemes: SchemeMap
    follow: bool
    interval: float
    workers: int
    metrics_port: int | None


def _options(args: argparse.Namespace) -> Options:
    if args.interval is not None and not args.follow:
        raise UsageError("--interval needs --follow")
    interval = DEFAULT_INTERVAL if args.interval is None else args.interval
    if not interval > 0:
        raise UsageError("--interval must be a positive number of seconds")
    workers = default_workers() if args.workers is None else args.workers
    if workers < 0:
        raise UsageError("--workers must be 0 (validate in this process) or more")
    port = args.metrics_port
    if port is not None and not 0 < port < 65536:
        raise UsageError("--metrics-port must be in 1..65535")
    try:
        schemes = SchemeMap.parse(args.version_scheme)
    except VersionError as exc:
        raise UsageError(f"--version-scheme: {exc}") from exc
    return Options(tuple(args.package), schemes, args.follow, interval, workers, port)


def cmd_monitor(args: argparse.Namespace) -> int:
    opts = _options(args)
    trust = trust_for(args)
    client = client_for(args)
    metrics = Metrics()
    with StateDir(Path(args.state)) as state, MonitorDB(state.path / DB_FILE) as db, \
            Stop() as stop:
        if opts.metrics_port is not None:
            metrics.serve(opts.metrics_port)
        try:
            admins = [load_vkey(p, "admin key") for p in args.admin_key]
            monitor = Monitor(client, trust, state, db, opts.patterns, opts.workers, sys.stdout,
                              metrics, stop, admins, _witnesses(args, trust), opts.schemes,
                              _halts(args))
            return monitor.run(opts.follow, opts.interval)
        finally:
            metrics.close()


def _halts(args: argparse.Namespace) -> HaltConfig | None:
    """--halt-key, --halt-on and the submission token; None when nothing is to be halted."""
    if args.halt_on and not args.halt_key:
        raise UsageError("--halt-on needs --halt-key")
    if args.halt_token_file and not args.halt_on:
        raise UsageError("--halt-token-file needs --halt-on")
    if not args.halt_on:
        return None
    rules, files = parse_rules(args.halt_on)
    try:
        signer = read_private_key(args.halt_key, "halt key", owner_only=False)
        token = (read_secret(args.halt_token_file, "halt token file", owner_only=False)
                 if args.halt_token_file else os.environ.get("TLOG_TOKEN") or None)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from exc
    # Halts are writes: they go to the first --log, the log itself (mirrors take no writes).
    log = HttpFetcher(args.log[0], timeout=args.timeout, retries=args.retries)
    return HaltConfig(signer, rules, files, log, token)


def _witnesses(args: argparse.Namespace, trust: LogTrust) -> WitnessChecker | None:
    """Under a policy, its witnesses that have a URL, asked as the log is (--timeout,
    --retries)."""
    if not isinstance(trust, PolicyTrust):
        return None
    return WitnessChecker(trust, lambda url: HttpFetcher(url, timeout=args.timeout,
                                                         retries=args.retries))


DESCRIPTION = """\
Scan every entry of the log since the previous run (all of it on the first run), prove each
new checkpoint consistent with the stored one, and write JSON Lines events to stdout:
"release" for each release of a watched package and "alert" for a version or counter that
does not grow (versions of packages given a --version-scheme are ordered under semver, PEP 440
or Debian rules), a second artifact set for a version, a new publisher key, an invalid entry, an
install window already closed when seen, an inconsistent checkpoint, or a package state map
the log commits to (its map-root entries) that the entries do not make, or that a checkpoint
does not end with (map_root_mismatch, map_root_missing). With --policy, the
log's checkpoints must carry the quorum of cosignatures, and each policy witness that has a URL
is asked for its latest cosigned view of the log: a view the log's checkpoint is not consistent
with is alerted (witness_view_disagrees); an unreachable witness is a warning on stderr.
With --halt-key and --halt-on, an alert of a chosen rule about a release (or an external
signal file naming a logged version) makes the monitor sign and log a halt/v1 for that version,
once across runs, and print a "halt" event: status "logged" with the halt's index, or "refused"
with the log's refusal (not retried).
Every event has a "seq" that grows within the state directory; after a crash an event may be
printed again with the same seq, never lost. Exit: 0 done, 1 invalid entry or log
misbehaviour (evidence in STATE/evidence/), 2 usage, 3 transport."""


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `tlog-verify monitor` to the subcommands."""
    p = sub.add_parser("monitor", help="follow the log: report releases, alert on anomalies",
                       description=DESCRIPTION)
    common(p)
    p.add_argument("--state", required=True, metavar="DIR",
                   help="directory keeping the position, knowledge and evidence (created)")
    p.add_argument("--package", action="append", default=[], metavar="GLOB",
                   help="report only packages matching this fnmatch glob (repeatable; "
                        "default: all)")
    p.add_argument("--version-scheme", action="append", default=[], metavar="GLOB=SCHEME",
                   help="order the versions of packages matching GLOB (fnmatch, as --package; "
                        "the first matching option wins) under SCHEME: "
                        f"{', '.join(SCHEMES)} (repeatable). A release of such a package "
                        "without a counter whose version is not above the highest logged "
                        "before under the scheme, or not valid under it, is alerted "
                        "(version_not_growing); one with a counter is ordered by its counter. "
                        "Other packages keep the default rule (numbers with an optional "
                        "dev/a/b/rc label; other versions only checked for repeats)")
    p.add_argument("--follow", action="store_true",
                   help="keep scanning new entries until SIGINT/SIGTERM")
    p.add_argument("--interval", type=float, metavar="S",
                   help=f"seconds between rounds with --follow (default {DEFAULT_INTERVAL:g})")
    p.add_argument("--workers", type=int, metavar="N",
                   help="validation processes (default: one per core; 0: in this process)")
    p.add_argument("--metrics-port", type=int, metavar="P",
                   help="serve Prometheus metrics on 127.0.0.1:P")
    p.add_argument("--admin-key", action="append", default=[], metavar="VKEY_FILE",
                   help="the operator's registry admin key (repeatable): registrations and "
                        "admin actions signed by other keys are alerted; without it they are "
                        "reported unauthenticated")
    p.add_argument("--halt-key", metavar="KEY_FILE",
                   help="private key signing the halts --halt-on calls for: the publisher's "
                        "(a current key, or in a registered log a halt-only key); its name must "
                        "be the publisher of the package halted (else exit 2)")
    p.add_argument("--halt-on", action="append", default=[], metavar="RULE",
                   help="halt (log a signed halt/v1 for) a release of a watched package when an "
                        f"alert of RULE fires: {', '.join(RULES)}, or external:FILE (every "
                        "logged version FILE lists as 'package version reason' lines); each "
                        "version is halted once, across runs; a halt event is printed "
                        "(repeatable)")
    p.add_argument("--halt-token-file", metavar="FILE",
                   help="bearer token for submitting halts to a registered log (default: "
                        "$TLOG_TOKEN)")
    p.set_defaults(func=cmd_monitor)
