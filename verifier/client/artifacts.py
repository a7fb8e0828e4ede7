"""The files an update client is about to install, hashed from disk.

hash_file reads a file once, in 1 MiB chunks, into the FileDigest that
verifier.protocol.entries.install.check_release compares with a logged release/v1 entry.
An unreadable file is the caller's input error (UsageError).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from verifier.errors import UsageError
from verifier.protocol.entries.install import FileDigest

__all__ = ["hash_file"]


def hash_file(path: Path) -> FileDigest:
    """The SHA-256 and size of the file at `path`; UsageError if it cannot be read."""
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise UsageError(f"couldn't read artifact {path}: {exc.strerror or exc}") from exc
    return FileDigest(str(path), path.name, digest.hexdigest(), size)
