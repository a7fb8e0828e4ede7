"""The verifier's only network code: a careful client for a C2SP tlog-tiles log.

Everything the log sends is capped (size, time), transient failures are retried with
backoff, and full tiles and entry bundles (immutable by C2SP tlog-tiles) are cached on disk.
Nothing returned here is trusted by itself: tiles become proofs that are checked against a
checkpoint verified with a key the caller pinned.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from verifier.checkpoint import Checkpoint, open_checkpoint
from verifier.errors import TransportError, UsageError, VerificationFailed
from verifier.merkle import Node, combine, consistency_nodes, inclusion_nodes
from verifier.note import MAX_NOTE_SIZE, Verifier
from verifier.tiles import (
    ENTRIES_LEVEL,
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    TileKey,
    decode_bundle,
    nodes_from_tiles,
    tile_path,
    tile_width,
    tiles_for_nodes,
)

MAX_TILE_BYTES = 32 * TILE_WIDTH
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)
MAX_JSON_BYTES = 8 << 20
MAX_SEARCH_RESULTS = 10_000
USER_AGENT = "tlog-verify/0.1"
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


class NotFound(TransportError):
    """The log answered 404."""


class _Transient(Exception):
    """A failure worth retrying (connection trouble, timeouts, 5xx, 429)."""


class LogClient:
    """Fetches checkpoints, tiles and entries of one log.

    `timeout` bounds each socket operation, `deadline` a whole response (an endless slow
    response is cut off), `retries` the extra attempts on transient failures.
    """

    def __init__(self, base_url: str, *, cache_dir: Path | None = None, timeout: float = 10.0,
                 deadline: float = 60.0, retries: int = 3, backoff: float = 0.25) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"--log must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self.cache_dir = cache_dir
        self.timeout, self.deadline = timeout, deadline
        self.retries, self.backoff = retries, backoff

    # -- transport -------------------------------------------------------------------------

    def fetch(self, path: str, limit: int) -> bytes:
        """GET base_url + path, at most `limit` bytes, retrying transient failures."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 5.0))
            try:
                return self._fetch_once(path, limit)
            except _Transient as exc:
                last = exc
        raise TransportError(f"couldn't fetch {self.base_url}{path} "
                             f"after {self.retries + 1} attempts: {last}")

    def _fetch_once(self, path: str, limit: int) -> bytes:
        url = self.base_url + path
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return self._read_capped(resp, url, limit, started)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotFound(f"{url}: 404 not found") from exc
            if exc.code in _RETRY_STATUSES:
                raise _Transient(f"HTTP {exc.code}") from exc
            raise TransportError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise _Transient(str(getattr(exc, "reason", exc))) from exc

    def _read_capped(self, resp: Any, url: str, limit: int, started: float) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TransportError(f"{url}: response of {declared} bytes exceeds the limit {limit}")
        chunks: list[bytes] = []
        total = 0
        while chunk := resp.read(min(1 << 16, limit + 1 - total) or 1):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise TransportError(f"{url}: response exceeds the limit of {limit} bytes")
            if time.monotonic() - started > self.deadline:
                raise TransportError(f"{url}: response took longer than {self.deadline:.0f} s")
        return b"".join(chunks)

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self, key: Verifier) -> tuple[Checkpoint, str]:
        """The log's current checkpoint, verified with the pinned `key`, and its note text."""
        data = self.fetch("checkpoint", MAX_NOTE_SIZE)
        try:
            text = data.decode("utf-8")
            return open_checkpoint(text, key), text
        except ValueError as exc:
            raise VerificationFailed(f"the log's checkpoint does not verify with the pinned key "
                                     f"{key.name}: {exc}") from exc

    # -- tiles and entries -----------------------------------------------------------------

    def _cached(self, path: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        try:
            return (self.cache_dir / path).read_bytes()
        except OSError:
            return None

    def _store(self, path: str, data: bytes) -> None:
        if self.cache_dir is None:
            return
        target = self.cache_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)

    def _tile_data(self, level: int, n: int, width: int, limit: int) -> tuple[bytes, int]:
        """Tile bytes for `width`, falling back to the full tile when the partial is gone.

        Returns (data, width of what was fetched). Full tiles come from the disk cache when
        present: they are immutable, and every use of them is checked against a signed root.
        """
        full = tile_path(level, n)
        cached = self._cached(full)
        if cached is not None:
            return cached, TILE_WIDTH
        try:
            data = self.fetch(tile_path(level, n, width), limit)
            fetched = width
        except NotFound:
            if width == TILE_WIDTH:
                raise
            data, fetched = self.fetch(full, limit), TILE_WIDTH
        if fetched == TILE_WIDTH:
            self._store(full, data)
        return data, fetched

    def hash_tile(self, level: int, n: int, size: int) -> bytes:
        """Hash tile (level, n) as of a tree of `size` leaves: exactly its hashes at that size."""
        width = tile_width(level, n, size)
        if width == 0:
            raise UsageError(f"tile {level}/{n} does not exist in a tree of size {size}")
        data, fetched = self._tile_data(level, n, width, MAX_TILE_BYTES)
        if len(data) != 32 * fetched:
            raise VerificationFailed(f"the log's tile {tile_path(level, n, fetched)} has "
                                     f"{len(data)} bytes, not {32 * fetched}")
        return data[:32 * width]

    def entry_bundle(self, n: int, size: int) -> list[bytes]:
        """Entries n*256 .. of a tree of `size` leaves, from entry bundle n, strictly decoded."""
        width = tile_width(ENTRIES_LEVEL, n, size)
        if width == 0:
            raise UsageError(f"entry bundle {n} does not exist in a tree of size {size}")
        data, fetched = self._tile_data(ENTRIES_LEVEL, n, width, MAX_BUNDLE_BYTES)
        try:
            return decode_bundle(data, fetched)[:width]
        except ValueError as exc:
            raise VerificationFailed(
                f"the log's entry bundle {tile_path(ENTRIES_LEVEL, n, fetched)}: {exc}") from exc

    def entry(self, index: int, size: int) -> bytes:
        """The bytes of entry `index` as served in its entry bundle (not yet proven)."""
        if not 0 <= index < size:
            raise UsageError(f"entry {index} is not in a tree of size {size}")
        return self.entry_bundle(index // TILE_WIDTH, size)[index % TILE_WIDTH]

    def node_hashes(self, nodes: Iterable[Node], size: int) -> dict[Node, bytes]:
        wanted = list(nodes)
        tiles: dict[TileKey, bytes] = {
            key: self.hash_tile(key[0], key[1], size) for key in tiles_for_nodes(wanted)}
        try:
            return nodes_from_tiles(wanted, tiles)
        except ValueError as exc:
            raise VerificationFailed(f"the log's tiles cannot build the proof: {exc}") from exc

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof for `index` in the tree of `size`, built from tiles. Check it!"""
        groups = inclusion_nodes(index, size)
        return combine(groups, self.node_hashes(_flat(groups), size))

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """Consistency proof from size `first` to `second`, built from tiles. Check it!"""
        groups = consistency_nodes(first, second)
        return combine(groups, self.node_hashes(_flat(groups), second))

    # -- the JSON search API (untrusted hints: callers prove what it points at) ------------

    def search(self, package: str, version: str | None = None) -> list[int]:
        """Indices the log says hold `package` (and `version`), in log order."""
        indices: list[int] = []
        after: int | None = None
        while len(indices) < MAX_SEARCH_RESULTS:
            params = {"package": package, "limit": "1000"}
            if version is not None:
                params["version"] = version
            if after is not None:
                params["after"] = str(after)
            page = self._json("v1/entries?" + urllib.parse.urlencode(params))
            raw = [e.get("index") for e in page.get("entries", []) if isinstance(e, dict)]
            found = [i for i in raw if isinstance(i, int) and i >= 0]
            if len(found) != len(raw):
                raise VerificationFailed("the log's search answer has malformed indices")
            indices.extend(found)
            after = page.get("next_after")
            if after is None or not found:
                return indices
            if not isinstance(after, int):
                raise VerificationFailed("the log's search answer has a malformed next_after")
        return indices

    def _json(self, path: str) -> dict[str, Any]:
        try:
            value = json.loads(self.fetch(path, MAX_JSON_BYTES))
        except ValueError as exc:
            raise TransportError(f"{self.base_url}{path}: not JSON") from exc
        if not isinstance(value, dict):
            raise TransportError(f"{self.base_url}{path}: not a JSON object")
        return value


def _flat(groups: Sequence[Sequence[Node]]) -> list[Node]:
    return [node for group in groups for node in group]
