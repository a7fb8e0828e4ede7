"""Writing a file so that readers see the old one or the new one, never a torn one.

The data goes to a temporary file in the target's directory (named after the target, starting
with a dot), which is then renamed over the target (os.replace, atomic on POSIX). With
`durable`, the data is fsynced before the rename and the directory after it, so the new file
also survives a power cut once atomic_write returns; without, a crash may leave the old file,
the new one, or (after a power cut) an empty or missing one: for caches whose every read is
checked, that costs a refetch, never a wrong answer.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, durable: bool, mode: int = 0o600,
                 overwrite: bool = True) -> None:
    """Replace `path` with `data` (creating its directory), the new file having `mode`
    (mkstemp's 0600 unless told otherwise). A crash before the rename leaves at most a stray
    dot-file in the directory; the temporary file is removed when the write fails.

    Without `overwrite`, the file is linked into place instead of renamed, which fails with
    FileExistsError if `path` exists: no check-then-write race can replace a file (a key)
    that appeared meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            Path(tmp).unlink()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
