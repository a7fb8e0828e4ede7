"""What every online `tlog-verify` command shares: the options naming the log and its pinned
key, and the LogClient those options describe."""

from __future__ import annotations

import argparse

from verifier.client.log import LogClient
from verifier.client.statedir import StateDir, load_vkey
from verifier.protocol.trust import KeyTrust, LogTrust

__all__ = ["add_common", "client_for", "trust_for"]


def add_common(p: argparse.ArgumentParser, log: bool = True) -> None:
    """Add --log (unless `log` is false), --key, --timeout and --retries to `p`."""
    if log:
        p.add_argument("--log", required=True,
                       help="the log's base URL (or a file: URL of a local copy of its tiles)")
    p.add_argument("--key", required=True, help="the log's verifier key file (pinned by you)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to connect, and that the log may send nothing (counted in "
                        "whole seconds, at least 1)")
    p.add_argument("--retries", type=int, default=3, help="retries on transient network errors")


def client_for(args: argparse.Namespace, state: StateDir | None = None) -> LogClient:
    """The client of --log; with `state`, tiles are cached in its tiles/ directory."""
    cache = state.path / "tiles" if state is not None else None
    return LogClient(args.log, cache_dir=cache, timeout=args.timeout, retries=args.retries)


def trust_for(args: argparse.Namespace) -> LogTrust:
    """What --key says to trust about the log: checkpoints signed by that one key."""
    return KeyTrust(load_vkey(args.key))
