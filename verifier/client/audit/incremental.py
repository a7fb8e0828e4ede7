"""The incremental audit, run every time: prove the log only ever grew.

The log's current checkpoint must verify with the pinned key and be proven consistent
(RFC 9162 §2.1.4) with every checkpoint trusted before: the one the state directory stored on
its last run, and the one the user pins (`load_trust`). The first run without a pinned
checkpoint trusts the current one. A rollback, a fork (two roots for one size) or a failed
proof is misbehaviour: both signed checkpoints and the proof are kept under DIR/evidence/ and
the stored checkpoint is not replaced.
"""

from __future__ import annotations

from pathlib import Path

from verifier.client.log import LogClient
from verifier.client.statedir import StateDir
from verifier.client.tracking import prove_extends
from verifier.errors import UsageError
from verifier.protocol.note import MAX_NOTE_SIZE
from verifier.protocol.state import Trusted
from verifier.protocol.trust import LogTrust

__all__ = ["audit", "load_trust"]


def load_trust(path: Path, trust: LogTrust) -> Trusted:
    """A checkpoint file the user trusts, which must verify with the pinned log key.

    Both are the user's own pinned inputs, so a file that does not verify with the key is a
    usage error (exit 2): nothing the log served is involved yet.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"couldn't read --trust {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_NOTE_SIZE:
        raise UsageError(f"--trust {path} is larger than a checkpoint can be")
    try:
        text = data.decode("utf-8")
        return Trusted(trust.open(text), text)
    except ValueError as exc:
        raise UsageError(f"--trust {path} is not a checkpoint signed by the pinned log key "
                         f"{trust.origin}: {exc}") from exc


def audit(client: LogClient, trust: LogTrust, state: StateDir,
          pinned: Trusted | None = None) -> Trusted:
    """Verify the log's current checkpoint and prove it extends everything trusted before.

    Trusted before: `pinned` (a checkpoint the caller trusts) and the checkpoint stored in
    `state`; with neither, the current checkpoint is trusted on first use. Each is checked
    against the current one by a consistency proof built from the log's tiles (RFC 9162
    §2.1.4.2). On success the current checkpoint atomically replaces the stored one and is
    returned. On a rollback, fork or failed proof, LogMisbehaviour is raised once the evidence
    (both signed checkpoints, the proof) is saved under state/evidence/; the stored checkpoint
    stays.
    """
    cp, note = client.checkpoint(trust)
    current = Trusted(cp, note)
    for old in (pinned, state.load_trusted(trust)):
        if old is not None:
            prove_extends(client, old, current, state)
    # A crash before this atomic write leaves the old checkpoint, so the next run proves
    # consistency from it again; after it, the next run proves from `current`.
    state.save_trusted(current)
    return current
