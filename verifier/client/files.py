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


def atomic_write(path: Path, data: bytes, *, durable: bool) -> None:
    """Replace `path` with `data` (creating its directory). A crash before the rename
    leaves at most a stray dot-file in the directory; the temporary file is removed when
    the write fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
