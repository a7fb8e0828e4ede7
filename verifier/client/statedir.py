"""A verifier's state directory: the trusted checkpoint, JSON state files, evidence.

Every write is atomic (temporary file, fsync, rename, fsync of the directory), so a crash
leaves either the old or the new file, never a torn one. A lock file keeps two runs on
one directory from interleaving.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from verifier.errors import UsageError
from verifier.protocol.note import NoteError, Verifier, parse_vkey
from verifier.protocol.state import Trusted
from verifier.protocol.trust import LogTrust

CHECKPOINT_FILE = "checkpoint"
EVIDENCE_DIR = "evidence"
MAX_STATE_FILE = 64 << 20


def load_vkey(path: str, what: str = "log key") -> Verifier:
    """A verifier key the user pinned, from a file; UsageError if unreadable or malformed."""
    try:
        return parse_vkey(Path(path).read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise UsageError(f"couldn't read the {what} {path}: {exc.strerror or exc}") from exc
    except (NoteError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a verifier key (name+id+key): {exc}") from exc


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
            return Trusted(trust.open(note), note)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} is not a checkpoint signed by {trust.origin} ({exc}); "
                             "is this state directory for another log?") from exc

    def save_trusted(self, trusted: Trusted) -> None:
        write_atomic(self.path / CHECKPOINT_FILE, trusted.note.encode("utf-8"))

    def read_json(self, name: str, default: Any) -> Any:
        path = self.path / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise UsageError(f"couldn't read {path}: {exc}") from exc
        if len(data) > MAX_STATE_FILE:
            raise UsageError(f"{path} is larger than {MAX_STATE_FILE} bytes")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from exc

    def write_json(self, name: str, value: Any) -> None:
        write_atomic(self.path / name, json.dumps(value, indent=1, sort_keys=True).encode())

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
            write_atomic(target / name, content.encode() if isinstance(content, str) else content)
        return target
