"""`tlog-verify audit`: prove a log only ever grew, and (--full) re-check everything in it.

Argument parsing, output and exit codes only: the audits themselves are
verifier.client.audit.incremental (every run) and verifier.client.audit.full (--full).
Exit codes are those of verifier.errors: 0 verified, 1 failed or misbehaved, 2 usage, 3 transport.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verifier.cli.common import client_for, trust_for
from verifier.cli.progress import ProgressLine
from verifier.client.audit.full import full_audit
from verifier.client.audit.incremental import audit, load_trust
from verifier.client.statedir import StateDir
from verifier.errors import EXIT_OK
from verifier.protocol.note import b64encode
from verifier.protocol.state import Trusted

__all__ = ["cmd_audit", "register"]


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a number of workers (0 or more): {text!r}")
    return value


_DESCRIPTION = """\
Prove the log only ever grew: its current checkpoint must verify with --key (or under
--policy: the log's signature and the quorum of witness cosignatures) and be proven
consistent with the checkpoint the last run stored in --state (and with --trust). The first
run without --trust trusts the current checkpoint. A rollback, a fork or a failed proof exits
1 and keeps both signed checkpoints and the proof in DIR/evidence/.

--full also fetches every entry bundle and hash tile, re-validates every entry (schema,
publisher signature), recomputes every leaf hash, tile and the root, and compares them with
what the log signed and serves. It also recomputes each package's state from the entries
and fails when a map-root entry (the last of each batch) commits to another map root or size,
or when the checkpoint does not end with one. Progress is kept in DIR/audit-full.json: a stopped run
resumes, and a later run checks only the entries added since.

Exit codes: 0 verified; 1 verification failed or the log misbehaved; 2 usage or malformed
input (including a --trust file that does not verify with --key); 3 transport failure.
"""


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `tlog-verify audit` to the subcommands `sub`; `common` adds --log, --key, ..."""
    p = sub.add_parser(
        "audit", help="prove the log only grew since the last run (--full: re-check it all)",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.add_argument("--state", required=True, metavar="DIR",
                   help="directory keeping the trusted checkpoint, progress and evidence")
    p.add_argument("--full", action="store_true",
                   help="also re-check every entry, tile and the root (resumable)")
    p.add_argument("--trust", metavar="CHECKPOINT_FILE",
                   help="a signed checkpoint you trust; it must verify with --key (else exit "
                        "2) and the log must prove its current checkpoint extends it")
    p.add_argument("--workers", type=_workers, metavar="N",
                   help="processes for --full (default: one per core; 0: no extra process)")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    trust = trust_for(args)
    pinned = load_trust(Path(args.trust), trust) if args.trust else None
    with StateDir(Path(args.state)) as state:
        before = state.load_trusted(trust)
        trusted = audit(client_for(args, state), trust, state, pinned)
        print(_describe(trusted, before, pinned))
        if args.full:
            # Not the state's tile cache: check what the log serves now, and don't keep a
            # second copy of the whole log on disk.
            client = client_for(args)
            shown = ProgressLine(sys.stderr)
            try:
                result = full_audit(client, trusted, state, workers=args.workers,
                                    progress=shown)
            finally:
                shown.close()
            print(result.summary())
    return EXIT_OK


def _describe(now: Trusted, before: Trusted | None, trust: Trusted | None) -> str:
    head = f"{now.checkpoint.origin} size {now.size} root {b64encode(now.root)}"
    proven = [f"{what} size {t.size}" for what, t in (("--trust", trust), ("stored", before))
              if t is not None]
    if not proven:
        return f"OK {head}: trusted on first use (no stored checkpoint, no --trust)"
    return f"OK {head}: consistent with the {' and the '.join(proven)} checkpoint"
