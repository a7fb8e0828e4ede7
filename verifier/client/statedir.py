"""A verifier's state directory: the trusted checkpoint, JSON state files, evidence.

Every write is atomic and durable (verifier.client.files.atomic_write: temporary file, fsync,
rename, fsync of the directory), so a crash leaves either the old or the new file, never a
torn one. A lock file keeps two runs on
one directory from interleaving.
"""

from __future__ import annotations

import fcntl
import json
import re
import time
from pathlib import Path
from typing import Any, TextIO

from verifier.client.files import atomic_write
from verifier.client.keys import read_policy, read_vkey
from verifier.errors import UsageError
from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.note import Verifier
from verifier.protocol.policy import Policy, PolicyTrust, QuorumError
from verifier.protocol.state import Trusted
from verifier.protocol.trust import KeyTrust, LogTrust

CHECKPOINT_FILE = "checkpoint"
EVIDENCE_DIR = "evidence"
MAX_STATE_FILE = 64 << 20


def load_vkey(path: str, what: str = "log key") -> Verifier:
    """A verifier key the user pinned, from a file; UsageError if unreadable or malformed."""
    return read_vkey(path, f"the {what}")


def load_policy(path: str) -> Policy:
    """A witness policy the user pinned (--policy), from a file; UsageError (naming the
    file and line) if unreadable or malformed."""
    return read_policy(path, "the witness policy")


def _reopen(trust: LogTrust, note: str) -> Checkpoint:
    """The stored checkpoint, opened as `trust` requires; with open(), never latest(): it is
    old by design. One stored by a run without the policy (no quorum of cosignatures) is
    opened with the policy's log key alone: it is only the baseline the log must extend,
    and what the log serves now must still carry the quorum."""
    try:
        return trust.open(note)
    except QuorumError:
        if not isinstance(trust, PolicyTrust):
            raise
        return KeyTrust(trust.log).open(note)


class StateDir:
    """State of one log kept by one kind of client (audit, monitor, release)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: TextIO | None = None

    def __enter__(self) -> StateDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = (self.path / ".lock").open("a")
        except OSError as exc:
            raise UsageError(f"couldn't use state directory {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise UsageError(f"state directory {self.path} is in use by another run") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load_trusted(self, trust: LogTrust) -> Trusted | None:
        """The stored trusted checkpoint, re-verified as `trust` requires; None if absent."""
        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            note = path.read_text(encoding="utf-8")
            return Trusted(_reopen(trust, note), note)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} is not a checkpoint signed by {trust.origin} ({exc}); "
                             "is this state directory for another log?") from exc

    def save_trusted(self, trusted: Trusted) -> None:
        atomic_write(self.path / CHECKPOINT_FILE, trusted.note.encode("utf-8"), durable=True)

    def read_json(self, name: str, default: Any, limit: int = MAX_STATE_FILE) -> Any:
        path = self.path / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise UsageError(f"couldn't read {path}: {exc}") from exc
        if len(data) > limit:
            raise UsageError(f"{path} is larger than {limit} bytes")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from exc

    def write_json(self, name: str, value: Any) -> None:
        atomic_write(self.path / name, json.dumps(value, indent=1, sort_keys=True).encode(),
                     durable=True)

    def write_text(self, name: str, text: str) -> None:
        """Replace DIR/name with `text` (JSON the caller encoded), atomically and durably."""
        atomic_write(self.path / name, text.encode("utf-8"), durable=True)

    def save_evidence(self, reason: str, files: dict[str, str | bytes]) -> Path:
        """Keep evidence in DIR/evidence/<time>-<reason>/; return that directory."""
        slug = re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")[:40] or "evidence"
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = self.path / EVIDENCE_DIR / f"{stamp}-{slug}"
        target, n = base, 1
        while target.exists():
            n += 1
            target = base.with_name(f"{base.name}.{n}")
        for name, content in files.items():
            atomic_write(target / name, content.encode() if isinstance(content, str) else content,
                         durable=True)
        return target
