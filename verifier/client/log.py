"""A careful client for a C2SP tlog-tiles log, over any `Fetcher` (HTTP, a directory).

Everything the log sends is capped in size (and, over HTTP, in time), and full tiles and entry
bundles (immutable by C2SP tlog-tiles) are cached on disk, but only once a proof built from
them verified (keep_verified): one bad answer must not fail every later run. Nothing returned
here is trusted by itself: tiles become proofs that are checked against a checkpoint verified
with a key the caller pinned.
"""

from __future__ import annotations

import copy
import json
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

from verifier.client.fetch import DirectoryFetcher, Fetcher, NotFound
from verifier.client.files import atomic_write
from verifier.client.http import HttpFetcher
from verifier.errors import TransportError, UsageError, VerificationFailed
from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import MAX_NOTE_SIZE
from verifier.protocol.tiles import (
    ENTRIES_LEVEL,
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    TileProof,
    consistency_from_tiles,
    decode_bundle,
    inclusion_from_tiles,
    tile_path,
    tile_width,
)
from verifier.protocol.trust import LogTrust

MAX_TILE_BYTES = 32 * TILE_WIDTH
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)
MAX_JSON_BYTES = 8 << 20
BUNDLE_PREFIX = tile_path(ENTRIES_LEVEL, 0).rsplit("/", 1)[0] + "/"
# Bytes of full tiles and bundles held in memory until a proof using them verified: a release
# check or a consistency proof needs a few dozen tiles; beyond this, they are not cached.
MAX_PENDING_BYTES = 32 << 20
# Listings are read to their end: a client that stopped early would miss what comes later
# (say, a revocation behind the first 10,000 registry entries). This bound only stops a log
# that lists without end, and fails loudly naming it rather than truncating.
MAX_SEARCH_RESULTS = 1_000_000


class LogClient:
    """Fetches checkpoints, tiles and entries of one log from a `Fetcher`.

    `source` is a Fetcher, an http(s) URL (the settings are HttpFetcher's) or a file: URL of
    a directory holding a static copy of the log. Full tiles and entry bundles are cached
    under `cache_dir` once the caller's proof from them verified (keep_verified; immutable by
    C2SP tlog-tiles, and checked at every use all the same).
    """

    def __init__(self, source: str | Fetcher, *, cache_dir: Path | None = None,
                 timeout: float = 10.0, deadline: float = 60.0, retries: int = 3,
                 backoff: float = 0.25) -> None:
        self.fetcher = source if not isinstance(source, str) else open_source(
            source, timeout=timeout, deadline=deadline, retries=retries, backoff=backoff)
        self.cache_dir = cache_dir
        self._cache_used = False
        self._pending: dict[str, bytes] = {}  # fetched, checked in shape, not yet proven

    def copy(self) -> LogClient:
        """A client for the same log with the same settings (and class) but connections of
        its own: a forked worker process must not share its parent's sockets."""
        twin = copy.copy(self)
        twin._cache_used = False
        twin._pending = {}
        twin.fetcher = self.fetcher.copy()
        return twin

    def fetch(self, path: str, limit: int) -> bytes:
        """The bytes at `path` of the log, at most `limit` (see Fetcher)."""
        return self.fetcher.fetch(path, limit)

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self, trust: LogTrust) -> tuple[Checkpoint, str]:
        """The log's current checkpoint, verified as `trust` requires, and its note text."""
        data = self.fetch("checkpoint", MAX_NOTE_SIZE)
        try:
            text = data.decode("utf-8")
            return trust.latest(text), text
        except ValueError as exc:
            raise VerificationFailed(f"the log's checkpoint does not verify with "
                                     f"{trust.describe()}: {exc}") from exc

    def cosigned_checkpoint(self, covering: int) -> str:
        """The note (with cosignatures) the log names as its smallest quorum-cosigned
        checkpoint holding entry `covering` (GET v1/checkpoints/cosigned?covering=N). Not
        verified here: open it under the policy, and prove what it holds. NotFound when
        there is none yet (or the log has no witness policy)."""
        path = f"v1/checkpoints/cosigned?covering={covering}"
        data = self.fetch(path, MAX_NOTE_SIZE)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationFailed(f"{self.fetcher.where(path)}: not UTF-8") from exc

    # -- tiles and entries -----------------------------------------------------------------

    def _cached(self, path: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        try:
            return (self.cache_dir / path).read_bytes()
        except OSError:
            return None

    def _hold(self, path: str, data: bytes) -> None:
        """Keep a full tile or bundle that passed its structural check until a proof using
        it verified (keep_verified); only then may it enter the disk cache."""
        if self.cache_dir is None:
            return
        if sum(map(len, self._pending.values())) + len(data) <= MAX_PENDING_BYTES:
            self._pending[path] = data
        # Else not cached at all: a tile missing from the cache is simply fetched again.

    def keep_verified(self) -> None:
        """Write what was fetched since the last call to the disk cache: for a caller whose
        proof from those tiles and bundles just verified against a signed root."""
        pending, self._pending = self._pending, {}
        if self.cache_dir is None:
            return
        for path, data in pending.items():
            if path.startswith(BUNDLE_PREFIX) and not self._bundle_matches_tile(path, data,
                                                                              pending):
                continue  # an entry not proven: a later run fetches the bundle again
            # Not durable: every use of a cached tile is checked, a lost one is fetched again.
            atomic_write(self.cache_dir / path, data, durable=False)

    def _bundle_matches_tile(self, path: str, data: bytes, pending: dict[str, bytes]) -> bool:
        """Whether every entry of a full bundle hashes to its leaf hash in the level-0 tile
        of the same number, itself used by a verified proof (held with it, or cached).

        A proof verifies one entry of a bundle; this check vouches for the other 255.
        """
        tile_name = "tile/0/" + path[len(BUNDLE_PREFIX):]
        tile = pending.get(tile_name) or self._cached(tile_name)
        if tile is None:
            return False
        entries = decode_bundle(data, TILE_WIDTH)
        return b"".join(leaf_hash(e) for e in entries) == tile

    def drop_cache(self) -> bool:
        """Forget what awaits keep_verified, and delete the disk cache if this client read
        from it; True if it did.

        For a check that failed with cached tiles or bundles: only verified ones are cached,
        but the hashes a proof does not use are checked only by later proofs, so checking
        once more with fresh copies tells a bad cache from a log that misbehaves now.
        """
        self._pending = {}
        if not self._cache_used or self.cache_dir is None:
            return False
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        self._cache_used = False
        return True

    def _tile_data(self, level: int, n: int, width: int, limit: int) -> tuple[bytes, int]:
        """Tile bytes for `width`, falling back to the full tile when the partial is gone.

        Returns (data, width of what was fetched). Full tiles come from the disk cache when
        present: they are immutable, and every use of them is checked against a signed root.
        Nothing is cached here: the caller checks the bytes' structure, then calls _hold.
        """
        full = tile_path(level, n)
        cached = self._cached(full)
        if cached is not None:
            self._cache_used = True
            return cached, TILE_WIDTH
        try:
            return self.fetch(tile_path(level, n, width), limit), width
        except NotFound:
            if width == TILE_WIDTH:
                raise
            return self.fetch(full, limit), TILE_WIDTH

    def hash_tile(self, level: int, n: int, size: int) -> bytes:
        """Hash tile (level, n) as of a tree of `size` leaves: exactly its hashes at that size."""
        width = tile_width(level, n, size)
        if width == 0:
            raise UsageError(f"tile {level}/{n} does not exist in a tree of size {size}")
        data, fetched = self._tile_data(level, n, width, MAX_TILE_BYTES)
        if len(data) != 32 * fetched:
            raise VerificationFailed(f"the log's tile {tile_path(level, n, fetched)} has "
                                     f"{len(data)} bytes, not {32 * fetched}")
        if fetched == TILE_WIDTH:
            self._hold(tile_path(level, n), data)
        return data[:32 * width]

    def entry_bundle(self, n: int, size: int) -> list[bytes]:
        """Entries n*256 .. of a tree of `size` leaves, from entry bundle n, strictly decoded."""
        width = tile_width(ENTRIES_LEVEL, n, size)
        if width == 0:
            raise UsageError(f"entry bundle {n} does not exist in a tree of size {size}")
        data, fetched = self._tile_data(ENTRIES_LEVEL, n, width, MAX_BUNDLE_BYTES)
        try:
            entries = decode_bundle(data, fetched)
        except ValueError as exc:
            raise VerificationFailed(
                f"the log's entry bundle {tile_path(ENTRIES_LEVEL, n, fetched)}: {exc}") from exc
        if fetched == TILE_WIDTH:
            self._hold(tile_path(ENTRIES_LEVEL, n), data)
        return entries[:width]

    def entry(self, index: int, size: int) -> bytes:
        """The bytes of entry `index` as served in its entry bundle (not yet proven)."""
        if not 0 <= index < size:
            raise UsageError(f"entry {index} is not in a tree of size {size}")
        return self.entry_bundle(index // TILE_WIDTH, size)[index % TILE_WIDTH]

    def _proof(self, proof: TileProof, size: int) -> list[bytes]:
        try:
            tiles = {key: self.hash_tile(key[0], key[1], size) for key in proof.tiles}
        except BaseException:
            # A proof cut short (a transport error, an interrupt) is never checked: nothing
            # it fetched may wait for a later keep_verified.
            self._pending = {}
            raise
        try:
            return proof.finish(tiles)
        except ValueError as exc:
            raise VerificationFailed(f"the log's tiles cannot build the proof: {exc}") from exc

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof for `index` in the tree of `size`, built from tiles. Check it!"""
        return self._proof(inclusion_from_tiles(index, size), size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """Consistency proof from size `first` to `second`, built from tiles. Check it!"""
        return self._proof(consistency_from_tiles(first, second), second)

    # -- the package state (untrusted: callers prove it against their checkpoint) ---------

    def package_state(self, package: str, size: int) -> dict[str, Any]:
        """The log's answer to GET v1/package-state?package=P&size=S: the state the tree of
        `size` commits to, with its map proof (verifier.client.proven_state proves it)."""
        if isinstance(self.fetcher, DirectoryFetcher):
            raise UsageError(f"this log source ({self.fetcher.root}) cannot prove package "
                             "state: a static copy of a log answers no queries; give the "
                             "log's http(s) URL")
        path = "v1/package-state?" + urllib.parse.urlencode({"package": package,
                                                              "size": str(size)})
        try:
            return self._json(path)
        except NotFound as exc:
            raise VerificationFailed(f"the log cannot prove the state of {package} at its "
                                     f"checkpoint of size {size}: {exc}") from exc

    # -- the JSON search API (untrusted hints: callers prove what it points at) ------------

    def search(self, package: str, version: str | None = None) -> list[int]:
        """Indices the log says hold `package` (and `version`), in log order."""
        params = {"package": package, "limit": "1000"}
        if version is not None:
            params["version"] = version
        return self._paged_indices("v1/entries", params)

    def registry_indices(self) -> list[int]:
        """Indices the log says hold registry entries (publisher/v1, keys/v1, revoke/v1)."""
        return self._paged_indices("v1/registry", {"limit": "1000"})

    def _paged_indices(self, path: str, base: dict[str, str]) -> list[int]:
        """Every index of a paged listing, in order; TransportError past MAX_SEARCH_RESULTS."""
        indices: list[int] = []
        after: int | None = None
        while True:
            params = dict(base)
            if after is not None:
                params["after"] = str(after)
            found, next_after = self._page(path + "?" + urllib.parse.urlencode(params))
            if after is not None and any(i <= after for i in found):
                raise VerificationFailed(f"the log's listing {path} goes backwards after "
                                         f"index {after}")
            indices.extend(found)
            if len(indices) > MAX_SEARCH_RESULTS:
                raise TransportError(f"the log's listing {path} has more than "
                                     f"{MAX_SEARCH_RESULTS} entries, this client's limit")
            if next_after is None or not found:
                return indices
            after = next_after

    def _page(self, path: str) -> tuple[list[int], int | None]:
        """One page of a listing: its indices and its next_after."""
        page = self._json(path)
        entries = page.get("entries", [])
        if not isinstance(entries, list):
            raise VerificationFailed("the log's search answer has no list of entries")
        raw = [e.get("index") for e in entries if isinstance(e, dict)]
        found = [i for i in raw if isinstance(i, int) and i >= 0]
        if len(found) != len(raw):
            raise VerificationFailed("the log's search answer has malformed indices")
        after = page.get("next_after")
        if after is not None and not isinstance(after, int):
            raise VerificationFailed("the log's search answer has a malformed next_after")
        return found, after

    def _json(self, path: str) -> dict[str, Any]:
        try:
            value = json.loads(self.fetch(path, MAX_JSON_BYTES))
        except (ValueError, RecursionError) as exc:
            raise TransportError(f"{self.fetcher.where(path)}: not JSON") from exc
        if not isinstance(value, dict):
            raise TransportError(f"{self.fetcher.where(path)}: not a JSON object")
        return value



def open_source(source: str, **http: Any) -> Fetcher:
    """The Fetcher for `source`: a file: URL names a directory holding a static copy of a
    log (its tlog-tiles paths as files); anything else must be an http(s) URL."""
    parsed = urllib.parse.urlsplit(source)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        root = Path(urllib.parse.unquote(parsed.path))
        if not root.is_dir():
            raise UsageError(f"--log {source!r}: {root} is not a directory")
        return DirectoryFetcher(root)
    return HttpFetcher(source, **http)
