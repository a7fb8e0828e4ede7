"""The `Fetcher` seam: where a `LogClient` gets the bytes of a log's resources.

A fetcher answers `fetch(path, limit)` for a path of the C2SP tlog-tiles layout
("checkpoint", "tile/0/x001/234.p/5", ...) and of the JSON search API, with at most `limit`
bytes, or raises `NotFound` (the resource does not exist) or `TransportError` (it could not
be had, or broke a limit). It trusts nothing it returns: `LogClient` checks every byte
against a checkpoint verified with a pinned key. Three sources exist:

- `verifier.client.http.HttpFetcher`: a log or any cache or CDN in front of it (libcurl);
- `DirectoryFetcher`: a static copy of the tiles in a local directory (a mirror, an archive);
- `MemoryFetcher`: resources held in memory (for embedding and tests).

`FailoverFetcher` asks several sources of one log (the log, its mirrors) in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Protocol

from verifier.errors import TransportError


class NotFound(TransportError):
    """The source has no such resource (HTTP 404, a missing file)."""


class Fetcher(Protocol):
    def fetch(self, path: str, limit: int) -> bytes:
        """The bytes at `path`, at most `limit` of them (TransportError beyond)."""
        ...

    def where(self, path: str) -> str:
        """How to name `path` of this source in a message (a URL, a file name)."""
        ...

    def copy(self) -> Fetcher:
        """A fetcher of the same source that shares no connection with this one (for a
        forked worker process)."""
        ...


class DirectoryFetcher:
    """Resources read from files under `root`, laid out as the tlog-tiles URL paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, path: str) -> str:
        return str(self.root / path)

    def fetch(self, path: str, limit: int) -> bytes:
        if "?" in path:  # a query is the JSON search API, which a static copy does not have
            raise NotFound(f"{self.where(path)}: a static copy of a log answers no queries")
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts:
            raise TransportError(f"{path!r} is not a path inside {self.root}")
        try:
            with open(self.root / relative, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError as exc:
            raise NotFound(f"{self.where(path)}: no such file") from exc
        except OSError as exc:
            raise TransportError(f"{self.where(path)}: {exc.strerror or exc}") from exc
        return _capped(data, limit, self.where(path))

    def copy(self) -> DirectoryFetcher:
        return self


class MemoryFetcher:
    """Resources held in a mapping from path to bytes."""

    def __init__(self, resources: Mapping[str, bytes]) -> None:
        self.resources = dict(resources)

    def where(self, path: str) -> str:
        return f"memory:{path}"

    def fetch(self, path: str, limit: int) -> bytes:
        try:
            data = self.resources[path]
        except KeyError:
            raise NotFound(f"{self.where(path)}: not found") from None
        return _capped(data, limit, self.where(path))

    def copy(self) -> MemoryFetcher:
        return self


class FailoverFetcher:
    """Several sources of one log (the log itself, static mirrors, caches), asked in order.

    A fetch goes to the source that answered last (the first one to begin with); on a
    TransportError (unreachable, a timeout, 5xx after its retries, a missing file) the other
    sources are tried in their order, and the first that answers becomes the one asked
    next. Only transport failures fail over: the bytes are checked above this seam, and a
    source whose bytes do not verify fails the check, whatever the other sources would say
    (falling back on a bad answer would let any one bad source pick what is believed).
    `say` is told, in a sentence, each time another source answered (for stderr).
    """

    def __init__(self, sources: Sequence[Fetcher], say: Callable[[str], None]) -> None:
        if not sources:
            raise ValueError("no source to fetch from")
        self.sources = list(sources)
        self.say = say
        self.current = 0

    def where(self, path: str) -> str:
        return self.sources[self.current].where(path)

    def fetch(self, path: str, limit: int) -> bytes:
        order = [self.current] + [i for i in range(len(self.sources)) if i != self.current]
        failures: list[TransportError] = []
        for i in order:
            try:
                data = self.sources[i].fetch(path, limit)
            except TransportError as exc:
                failures.append(exc)
                continue
            if failures:
                self.say(f"{self.sources[i].where(path)} answered after "
                         f"{'; '.join(map(str, failures))}")
            self.current = i
            return data
        reasons = "; ".join(map(str, failures))
        if all(isinstance(exc, NotFound) for exc in failures):
            raise NotFound(f"no source has {path}: {reasons}")
        raise TransportError(f"no source could give {path}: {reasons}")

    def copy(self) -> FailoverFetcher:
        twin = FailoverFetcher([s.copy() for s in self.sources], self.say)
        twin.current = self.current
        return twin


def _capped(data: bytes, limit: int, where: str) -> bytes:
    if len(data) > limit:
        raise TransportError(f"{where}: exceeds the limit of {limit} bytes")
    return data
