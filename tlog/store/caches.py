"""The in-memory caches of immutable data: full hash tiles and full entry bundles.

What they hold never changes in the log they came from, but another database (a restore,
a failover to another cluster) may hold another log under the same name: tlog.store.identity
says when the database changed, and Storage then clears them (clear()).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from verifier.protocol.tiles import TILE_WIDTH, TileKey

FULL_TILE_BYTES = 32 * TILE_WIDTH
TILE_CACHE_SIZE = 1024  # full tiles kept in memory (8 KiB each, immutable; --tile-cache keeps all)

KeyT = TypeVar("KeyT")


class LruCache(Generic[KeyT]):
    """A bounded LRU of immutable byte strings."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[KeyT, bytes] = OrderedDict()
        self._capacity = capacity

    def get(self, key: KeyT) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: KeyT, data: bytes) -> None:
        self._items[key] = data
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class TileCache(LruCache[TileKey]):
    """An LRU of full tiles: they never change once written, so caching is always safe."""

    def __init__(self, capacity: int = TILE_CACHE_SIZE) -> None:
        super().__init__(capacity)

    def put(self, key: TileKey, data: bytes) -> None:
        if len(data) == FULL_TILE_BYTES:
            super().put(key, data)
