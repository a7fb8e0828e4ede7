"""What every `tlog-verify` command that reads a checkpoint shares: the options naming the
log and what to trust about it (a pinned key, or a witness policy with ages), and the
LogClient and LogTrust those options describe."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from verifier.client.fetch import FailoverFetcher
from verifier.client.log import LogClient, open_source
from verifier.client.statedir import StateDir, load_policy, load_vkey
from verifier.errors import UsageError
from verifier.protocol.duration import parse_duration
from verifier.protocol.policy import PolicyError, PolicyTrust
from verifier.protocol.rfc3339 import parse_time
from verifier.protocol.trust import KeyTrust, LogTrust

__all__ = ["add_common", "client_for", "duration", "now_of", "trust_for"]


def add_common(p: argparse.ArgumentParser, log: bool = True) -> None:
    """Add --log (unless `log` is false), --key, --policy, --max-age, --timeout and
    --retries to `p`."""
    if log:
        p.add_argument("--log", required=True, action="append", metavar="URL",
                       help="the log's base URL (or a file: URL of a local copy of its "
                            "tiles); repeat it to name mirrors, asked in turn when one "
                            "cannot be reached (never when one's answer does not verify)")
    p.add_argument("--key", help="the log's verifier key file (pinned by you); required "
                                 "unless --policy names the log")
    p.add_argument("--policy", metavar="FILE",
                   help="a witness policy (c2sp.org/tlog-policy): a checkpoint must be signed "
                        "by its log and cosigned by its quorum of witnesses")
    p.add_argument("--max-age", metavar="DUR",
                   help="refuse a checkpoint whose quorum cosigned it longer ago than DUR "
                        "(90s, 15m, 24h, 7d): a frozen view; needs --policy")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to connect, and that the log may send nothing (counted in "
                        "whole seconds, at least 1)")
    p.add_argument("--retries", type=int, default=3, help="retries on transient network errors")


def client_for(args: argparse.Namespace, state: StateDir | None = None) -> LogClient:
    """The client of --log (several: failing over between them in order on transport
    errors); with `state`, tiles are cached in its tiles/ directory."""
    cache = state.path / "tiles" if state is not None else None
    if len(args.log) == 1:
        return LogClient(args.log[0], cache_dir=cache, timeout=args.timeout,
                         retries=args.retries)
    sources = [open_source(url, timeout=args.timeout, retries=args.retries) for url in args.log]
    return LogClient(FailoverFetcher(sources, _say), cache_dir=cache)


def _say(message: str) -> None:
    print(f"tlog-verify: failed over: {message}", file=sys.stderr, flush=True)


def now_of(args: argparse.Namespace) -> datetime:
    """--now where the command has it (an RFC 3339 time), else the current time."""
    text = getattr(args, "now", None)
    if not text:
        return datetime.now(UTC)
    try:
        return parse_time(text)
    except ValueError as exc:
        raise UsageError(f"--now {text!r}: {exc}") from exc


def duration(args: argparse.Namespace, option: str) -> int | None:
    """The seconds of a duration option (`option` is its dest, "max_age"), None if unset;
    a duration without --policy is a usage error: only witnesses can tell a time."""
    text = getattr(args, option, None)
    if text is None:
        return None
    flag = "--" + option.replace("_", "-")
    if args.policy is None:
        raise UsageError(f"{flag} needs --policy: only witness cosignatures say when a "
                         "checkpoint existed")
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc


def trust_for(args: argparse.Namespace) -> LogTrust:
    """What --key and --policy say to trust about the log: checkpoints signed by that one
    key, or signed by the policy's log and cosigned by its quorum (and, with --max-age, not
    stale at --now)."""
    max_age = duration(args, "max_age")
    duration(args, "min_age")  # checked here so every misuse fails before any network
    key = load_vkey(args.key) if args.key else None
    if args.policy is None:
        if key is None:
            raise UsageError("give the log's verifier key with --key, or a witness policy "
                             "naming the log with --policy")
        return KeyTrust(key)
    policy = load_policy(args.policy)
    try:
        # A fixed --now, else the clock read at each check: `monitor --follow` runs for days.
        now = int(now_of(args).timestamp()) if getattr(args, "now", None) else time.time
        return PolicyTrust.for_log(policy, key, now=now, max_age=max_age)
    except PolicyError as exc:
        raise UsageError(f"--policy {args.policy}: {exc}") from exc
