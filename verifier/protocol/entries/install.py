"""What an update client checks about a logged release before installing it.

The inclusion of the entry is checked elsewhere (receipt or online proof); these are the
checks of a validated release/v1 entry against the client's own world: the files it is
about to install (hashed by the caller: verifier.client.artifacts), the publisher keys it
pins, and the install window at a time the caller gives. Failures raise VerificationFailed.
Nothing here does I/O, not even reading the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from verifier.errors import VerificationFailed
from verifier.protocol.entries.release import Release
from verifier.protocol.note import Verifier
from verifier.protocol.rfc3339 import parse_time

__all__ = ["FileDigest", "check_artifacts", "check_installable_at", "check_publisher",
           "check_release", "window_problem"]


@dataclass(frozen=True)
class FileDigest:
    """A file about to be installed: its path as given (for messages), its file name (to
    point at the entry's artifact of that name), its SHA-256 (hex) and size."""

    path: str
    name: str
    sha256: str
    size: int


def check_artifacts(release: Release, files: Sequence[FileDigest]) -> list[str]:
    """Each file must be one of the entry's artifacts (same sha256 and size); return the
    names of the artifacts matched, in the order of the files.

    A file named like one of the entry's artifacts must have that artifact's bytes: with
    several artifacts, the bytes of another (app-debug.apk's, served as app.apk) would
    otherwise pass as the artifact the caller means to install. A file named like none of
    them (a download saved under another name) passes on its bytes alone, which is harmless:
    same bytes, same artifact, and the name returned says which artifact it is.
    """
    artifacts: list[dict[str, Any]] = release.entry["artifacts"]
    matched = []
    for f in files:
        named = next((a for a in artifacts if a["name"] == f.name), None)
        hit = next((a for a in ([named] if named else artifacts) if _same_bytes(a, f)), None)
        if hit is None:
            raise VerificationFailed(_mismatch(f, named, artifacts))
        matched.append(str(hit["name"]))
    return matched


def _same_bytes(artifact: dict[str, Any], f: FileDigest) -> bool:
    return bool(artifact["sha256"] == f.sha256 and artifact["size"] == f.size)


def _mismatch(f: FileDigest, named: dict[str, Any] | None,
              artifacts: list[dict[str, Any]]) -> str:
    """Why `f` is refused: which artifact its name points at, and whose bytes it has."""
    other = next((a for a in artifacts if _same_bytes(a, f)), None)
    if named is not None and other is not None:
        detail = (f"its bytes are the entry's {other['name']}, not its {named['name']} "
                  f"(sha256 {named['sha256']}, size {named['size']})")
    elif named is not None:
        detail = (f"the entry's {named['name']} has sha256 {named['sha256']}, "
                  f"size {named['size']}")
    else:
        detail = "no artifact of the entry has its sha256 and size"
    return (f"artifact {f.path} (sha256 {f.sha256}, size {f.size}) is not in the logged "
            f"release: {detail}")


def check_publisher(release: Release, pinned: Sequence[Verifier]) -> None:
    """With pinned publisher keys, the entry must be signed by one of them."""
    if pinned and release.key not in pinned:
        raise VerificationFailed(f"the release is signed by {release.key.text()}, "
                                 "which is not among the pinned publisher keys")


def window_problem(release: Release, when: datetime) -> str | None:
    """Why `when` is outside the entry's install window, or None if it is inside (or none)."""
    window = release.entry.get("install_window")
    if window is None:
        return None
    not_before, not_after = parse_time(window["not_before"]), parse_time(window["not_after"])
    if when < not_before:
        return f"install window opens at {window['not_before']}"
    if when > not_after:
        return f"install window closed at {window['not_after']}"
    return None


def check_installable_at(release: Release, now: datetime) -> None:
    problem = window_problem(release, now)
    if problem is not None:
        raise VerificationFailed(f"not installable at {now.isoformat()}: {problem}")


def check_release(release: Release, files: Sequence[FileDigest], pinned: Sequence[Verifier],
                  now: datetime) -> list[str]:
    """All of the above; returns the names of the matched artifacts."""
    check_publisher(release, pinned)
    matched = check_artifacts(release, files)
    check_installable_at(release, now)
    return matched
