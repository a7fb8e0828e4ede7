"""The full audit's recomputed tree: its right edge, the tiles it completes, and the log's
tiles to compare them with.

The tree is rebuilt from the leaf hashes of checked entries, one entry bundle (a `Chunk`) at
a time. Memory stays bounded: only the right edge of the tree is held, and only the few tiles
fetched ahead. `Tree` does no I/O; `TileFeed` fetches the log's tiles with threads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from verifier.client.log import LogClient
from verifier.protocol.map_replay import MapItem
from verifier.protocol.merkle import HASH_SIZE
from verifier.protocol.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileKey,
    TreeBuilder,
    hash_up,
    split_hashes,
)

__all__ = ["FULL_TILE_BYTES", "Chunk", "TileFeed", "Tree", "completed_tiles"]

FULL_TILE_BYTES = HASH_SIZE * TILE_WIDTH


class Chunk(NamedTuple):
    """Checked entries of one entry bundle: one small object per 256 entries."""

    first: int  # index of the first entry
    hashes: bytes  # their leaf hashes, concatenated
    tile_hash: bytes | None  # hash_up of `hashes` when they are exactly one level-0 tile
    errors: tuple[tuple[int, str], ...]  # (index, reason) of each invalid entry
    served: bytes | None  # the log's level-0 tile that these entries complete, if they do
    items: tuple[MapItem, ...] = ()  # what the package state map needs of them (map_replay)

    @property
    def end(self) -> int:
        return self.first + len(self.hashes) // HASH_SIZE


class Tree:
    """The right edge of the tree being recomputed, in TreeBuilder's edge format.

    Level-0 tiles are whole bundles, hashed up by the workers, so this process only appends
    one hash per 256 entries: to a TreeBuilder over the level-8 hashes, whose level-L tiles
    are the log's level-(L+1) tiles. The leaf hashes of the last, partial tile are kept apart.
    """

    def __init__(self, size: int, edge: Mapping[int, bytes]) -> None:
        TreeBuilder(size, edge)  # checks the edge fits a tree of `size` (ValueError)
        self.size = size
        self._low = bytearray(edge.get(0, b""))
        self._high = {level - 1: data for level, data in edge.items() if level > 0}
        self._upper = TreeBuilder(size >> TILE_HEIGHT, self._high)

    def add(self, chunk: Chunk) -> list[tuple[TileKey, bytes]]:
        """Append a chunk's hashes; return the full tiles it completes, lowest level first."""
        if chunk.first != self.size:
            raise RuntimeError(f"chunk at {chunk.first} does not continue size {self.size}")
        if not self._low and chunk.tile_hash is not None:
            data, tile_hash = chunk.hashes, chunk.tile_hash
        else:
            self._low += chunk.hashes
            if len(self._low) > FULL_TILE_BYTES:
                raise RuntimeError(f"chunk at {chunk.first} crosses a tile boundary")
            if len(self._low) < FULL_TILE_BYTES:
                self.size = chunk.end
                return []
            data, tile_hash = bytes(self._low), None
            self._low.clear()
        self.size = chunk.end
        self._upper.append(tile_hash or hash_up(split_hashes(data)))
        return [((0, (self.size >> TILE_HEIGHT) - 1), data), *self._take_upper()]

    def _take_upper(self) -> list[tuple[TileKey, bytes]]:
        changed = self._upper.take_changed()
        live = {level: n for level, n, _ in TreeBuilder.edge_keys(self._upper.size)}
        self._high = {level: changed.get((level, n)) or self._high[level]
                      for level, n in live.items()}
        return [((level + 1, n), data) for (level, n), data in sorted(changed.items())
                if len(data) == FULL_TILE_BYTES]

    def edge(self) -> dict[int, bytes]:
        """The partial tiles of the right edge: level -> data (TreeBuilder's edge format)."""
        edge = {level + 1: data for level, data in self._high.items()}
        if self._low:
            edge[0] = bytes(self._low)
        return edge

    def root(self) -> bytes:
        return TreeBuilder(self.size, self.edge()).root()


def completed_tiles(start: int, size: int) -> Iterator[TileKey]:
    """The full tiles above level 0 completed while leaves start..size-1 are appended, in
    that order (level-0 tiles come with their entry bundles)."""
    for bundle in range(start // TILE_WIDTH, size // TILE_WIDTH):
        end, level = (bundle + 1) * TILE_WIDTH, 1
        while end % (1 << (TILE_HEIGHT * (level + 1))) == 0:
            yield level, (end >> (TILE_HEIGHT * (level + 1))) - 1
            level += 1


def _completed_at(key: TileKey) -> int:
    """The tree size at which tile `key` becomes full."""
    level, n = key
    return (n + 1) << (TILE_HEIGHT * (level + 1))


class TileFeed:
    """The log's full tiles above level 0 that the recomputation completes, fetched ahead
    by threads.

    Threads start on first use, after the worker processes were forked (forking a process
    whose other threads hold locks can deadlock the child).
    """

    def __init__(self, client: LogClient, size: int, start: int, ahead: int) -> None:
        self._client, self._size, self._ahead = client, size, max(1, ahead)
        self._keys = completed_tiles(start, size)
        self._pending: deque[tuple[TileKey, Future[bytes]]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def upto(self, end: int) -> list[tuple[TileKey, bytes]]:
        """The log's tiles completed at tree sizes up to `end`, in order (TransportError...)."""
        out: list[tuple[TileKey, bytes]] = []
        while True:
            self._fill()
            if not self._pending or _completed_at(self._pending[0][0]) > end:
                return out
            key, future = self._pending.popleft()
            out.append((key, future.result()))

    def _fill(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._ahead)
        while len(self._pending) < self._ahead:
            key = next(self._keys, None)
            if key is None:
                return
            self._pending.append((key, self._pool.submit(self._client.hash_tile, *key,
                                                         self._size)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
