"""PostgreSQL storage: the only module that speaks SQL.

Tables (schema/migrations): `entries` (JCS leaf bytes by index), `tiles` (C2SP hash
tiles, full and the current partial ones), `checkpoints` (every signed checkpoint the
log published). Appends happen in `AppendTx`, one transaction per batch, serialized
across processes by a transaction-scoped advisory lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from verifier.tiles import TILE_WIDTH, TileKey

APPEND_LOCK = 0x746C6F67_0002  # advisory lock id serializing appends ("tlog", 2)
FULL_TILE_BYTES = 32 * TILE_WIDTH
TILE_CACHE_SIZE = 4096  # full tiles kept in memory (8 KiB each, immutable)

SQL_LATEST_CHECKPOINT = (
    "SELECT tree_size, root, note FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
SQL_CHECKPOINT_AT = "SELECT tree_size, root, note FROM checkpoints WHERE tree_size = $1"
SQL_ENTRY = "SELECT leaf FROM entries WHERE idx = $1"
SQL_ENTRY_RANGE = "SELECT leaf FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx"
SQL_LEAF_HASH_RANGE = "SELECT leaf_hash FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx"
SQL_INDEX_OF = "SELECT idx FROM entries WHERE leaf_hash = $1"
SQL_COUNT_ENTRIES = "SELECT coalesce(max(idx) + 1, 0) FROM entries"
SQL_BY_PACKAGE = (
    "SELECT idx, leaf FROM entries WHERE package = $1 AND idx > $2 ORDER BY idx LIMIT $3")
SQL_BY_PACKAGE_VERSION = (
    "SELECT idx, leaf FROM entries WHERE package = $1 AND version = $2 AND idx > $3 "
    "ORDER BY idx LIMIT $4")
SQL_TILE = "SELECT data FROM tiles WHERE level = $1 AND idx = $2"
SQL_TILES = (
    "SELECT t.level, t.idx, t.data FROM tiles t "
    "JOIN unnest($1::smallint[], $2::bigint[]) AS k(level, idx) "
    "ON t.level = k.level AND t.idx = k.idx")
SQL_LOCK = "SELECT pg_advisory_xact_lock($1)"
SQL_FIND_EXISTING = (
    "SELECT idx, leaf_hash, package, version FROM entries WHERE leaf_hash = ANY($1::bytea[]) "
    "UNION SELECT e.idx, e.leaf_hash, e.package, e.version FROM entries e "
    "JOIN unnest($2::text[], $3::text[]) AS k(package, version) "
    "ON e.package = k.package AND e.version = k.version")
SQL_PUT_TILE = (
    "INSERT INTO tiles (level, idx, data) VALUES ($1, $2, $3) "
    "ON CONFLICT (level, idx) DO UPDATE SET data = EXCLUDED.data")
SQL_PUT_CHECKPOINT = "INSERT INTO checkpoints (tree_size, root, note) VALUES ($1, $2, $3)"
SQL_REGISTRY_PAGE = (
    "SELECT idx, leaf FROM entries WHERE kind <> 'release/v1' AND idx > $1 "
    "ORDER BY idx LIMIT $2")
SQL_REGISTRY_ENTRIES = (
    "SELECT idx, leaf FROM entries WHERE kind <> 'release/v1' AND idx >= $1 ORDER BY idx")
SQL_MAX_COUNTERS = (
    "SELECT package, max(counter) AS max FROM entries "
    "WHERE package = ANY($1::text[]) AND counter IS NOT NULL GROUP BY package")
SQL_TOKENS = "SELECT jti, publisher, scopes, revoked_at FROM tokens WHERE jti = ANY($1::text[])"
SQL_INSERT_TOKEN = (
    "INSERT INTO tokens (jti, publisher, scopes, expires_at, issued_by) "
    "VALUES ($1, $2, $3, $4, $5)")
SQL_REVOKE_TOKEN = (
    "UPDATE tokens SET revoked_at = now(), revoked_by = $2 "
    "WHERE jti = $1 AND revoked_at IS NULL RETURNING jti")


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class ExistingEntry:
    index: int
    leaf_hash: bytes
    package: str
    version: str


@dataclass(frozen=True)
class NewEntry:
    index: int
    leaf: bytes
    leaf_hash: bytes
    package: str | None
    version: str | None
    kind: str = "release/v1"
    counter: int | None = None


@dataclass(frozen=True)
class TokenRecord:
    jti: str
    publisher: str
    scopes: list[str]
    revoked: bool


async def _registry_entries(conn: Any, start: int) -> list[tuple[int, bytes]]:
    rows = await conn.fetch(SQL_REGISTRY_ENTRIES, start)
    return [(int(r["idx"]), bytes(r["leaf"])) for r in rows]


def _checkpoint(row: asyncpg.Record | None) -> StoredCheckpoint | None:
    if row is None:
        return None
    return StoredCheckpoint(int(row["tree_size"]), bytes(row["root"]), str(row["note"]))


class TileCache:
    """An LRU of full tiles: they never change once written, so caching is always safe."""

    def __init__(self, capacity: int = TILE_CACHE_SIZE) -> None:
        self._tiles: OrderedDict[TileKey, bytes] = OrderedDict()
        self._capacity = capacity

    def get(self, key: TileKey) -> bytes | None:
        data = self._tiles.get(key)
        if data is not None:
            self._tiles.move_to_end(key)
        return data

    def put(self, key: TileKey, data: bytes) -> None:
        if len(data) != FULL_TILE_BYTES:
            return
        self._tiles[key] = data
        self._tiles.move_to_end(key)
        while len(self._tiles) > self._capacity:
            self._tiles.popitem(last=False)


async def _fetch_tiles(conn: Any, keys: Sequence[TileKey], cache: TileCache,
                       populate: bool) -> dict[TileKey, bytes]:
    """Read tiles by key in one query, serving full tiles from `cache` where possible.

    Only committed data may `populate` the cache: a tile read inside an append
    transaction could be one that transaction wrote and then rolled back.
    """
    out: dict[TileKey, bytes] = {}
    missing = []
    for key in keys:
        hit = cache.get(key)
        if hit is None:
            missing.append(key)
        else:
            out[key] = hit
    if missing:
        rows = await conn.fetch(SQL_TILES, [k[0] for k in missing], [k[1] for k in missing])
        for row in rows:
            key = (int(row["level"]), int(row["idx"]))
            out[key] = bytes(row["data"])
            if populate:
                cache.put(key, out[key])
    return out


class Storage:
    """Reads for the API, and `append()` transactions for the sequencer."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.tile_cache = TileCache()
        self.published = 0  # the largest tree size seen published: sizes only ever grow

    @classmethod
    async def connect(cls, url: str, min_size: int = 2, max_size: int = 10) -> Storage:
        async def no_reset(conn: asyncpg.Connection) -> None:
            # Handlers leave no session state (no SET, LISTEN or session locks), so the
            # default reset query on every release would be pure overhead.
            return None

        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                         reset=no_reset, command_timeout=60)
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        async with self.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        latest = _checkpoint(await self.pool.fetchrow(SQL_LATEST_CHECKPOINT))
        if latest is not None and latest.size > self.published:
            self.published = latest.size
        return latest

    async def published_at_least(self, size: int) -> bool:
        """Whether a tree of at least `size` leaves is published; a query only when `size`
        is beyond the largest size seen so far (serving entry bundles of a long log would
        otherwise read the latest checkpoint once per bundle)."""
        if size <= self.published:
            return True
        latest = await self.latest_checkpoint()
        return latest is not None and latest.size >= size

    async def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        return _checkpoint(await self.pool.fetchrow(SQL_CHECKPOINT_AT, size))

    async def entry(self, index: int) -> bytes | None:
        leaf = await self.pool.fetchval(SQL_ENTRY, index)
        return None if leaf is None else bytes(leaf)

    async def entry_range(self, lo: int, hi: int) -> list[bytes]:
        return [bytes(r["leaf"]) for r in await self.pool.fetch(SQL_ENTRY_RANGE, lo, hi)]

    async def leaf_hash_range(self, lo: int, hi: int) -> list[bytes]:
        return [bytes(r["leaf_hash"]) for r in await self.pool.fetch(SQL_LEAF_HASH_RANGE, lo, hi)]

    async def entry_count(self) -> int:
        return int(await self.pool.fetchval(SQL_COUNT_ENTRIES))

    async def index_of(self, leaf_hash: bytes) -> int | None:
        idx = await self.pool.fetchval(SQL_INDEX_OF, leaf_hash)
        return None if idx is None else int(idx)

    async def by_package(self, package: str, version: str | None, after: int,
                         limit: int) -> list[tuple[int, bytes]]:
        if version is None:
            rows = await self.pool.fetch(SQL_BY_PACKAGE, package, after, limit)
        else:
            rows = await self.pool.fetch(SQL_BY_PACKAGE_VERSION, package, version, after, limit)
        return [(int(r["idx"]), bytes(r["leaf"])) for r in rows]

    async def tile(self, level: int, n: int) -> bytes | None:
        hit = self.tile_cache.get((level, n))
        if hit is not None:
            return hit
        data = await self.pool.fetchval(SQL_TILE, level, n)
        if data is None:
            return None
        self.tile_cache.put((level, n), bytes(data))
        return bytes(data)

    async def tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        return await _fetch_tiles(self.pool, keys, self.tile_cache, populate=True)

    async def registry_entries(self, start: int = 0) -> list[tuple[int, bytes]]:
        """Registry entries (every kind but release/v1) from index `start`, in log order."""
        return await _registry_entries(self.pool, start)

    async def registry_page(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        rows = await self.pool.fetch(SQL_REGISTRY_PAGE, after, limit)
        return [(int(r["idx"]), bytes(r["leaf"])) for r in rows]

    async def insert_token(self, jti: str, publisher: str, scopes: Sequence[str],
                           expires_at: datetime, issued_by: str) -> None:
        """Record an issued token: the audit trail and the list revocation works on."""
        await self.pool.execute(SQL_INSERT_TOKEN, jti, publisher, list(scopes), expires_at,
                                issued_by)

    async def revoke_token(self, jti: str, revoked_by: str) -> bool:
        """Revoke a token; False if it is unknown or already revoked."""
        return await self.pool.fetchval(SQL_REVOKE_TOKEN, jti, revoked_by) is not None

    @asynccontextmanager
    async def append(self) -> AsyncIterator[AppendTx]:
        """One append transaction holding the log-wide append lock until commit."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL_LOCK, APPEND_LOCK)
            yield AppendTx(conn, self.tile_cache)


class AppendTx:
    """The writes of one batch. Nothing is visible to anyone until the transaction commits."""

    def __init__(self, conn: asyncpg.Connection, cache: TileCache) -> None:
        self._conn = conn
        self._cache = cache

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        return _checkpoint(await self._conn.fetchrow(SQL_LATEST_CHECKPOINT))

    async def tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        return await _fetch_tiles(self._conn, keys, self._cache, populate=False)

    async def find_existing(self, leaf_hashes: Sequence[bytes],
                            names: Sequence[tuple[str, str]]) -> list[ExistingEntry]:
        rows = await self._conn.fetch(SQL_FIND_EXISTING, list(leaf_hashes),
                                      [n[0] for n in names], [n[1] for n in names])
        return [ExistingEntry(int(r["idx"]), bytes(r["leaf_hash"]), r["package"], r["version"])
                for r in rows]

    async def insert_entries(self, entries: Sequence[NewEntry]) -> None:
        await self._conn.copy_records_to_table(
            "entries",
            columns=["idx", "leaf", "leaf_hash", "package", "version", "kind", "counter"],
            records=[(e.index, e.leaf, e.leaf_hash, e.package, e.version, e.kind, e.counter)
                     for e in entries])

    async def registry_entries(self, start: int) -> list[tuple[int, bytes]]:
        return await _registry_entries(self._conn, start)

    async def max_counters(self, packages: Sequence[str]) -> dict[str, int]:
        rows = await self._conn.fetch(SQL_MAX_COUNTERS, list(packages))
        return {r["package"]: int(r["max"]) for r in rows}

    async def tokens(self, jtis: Sequence[str]) -> dict[str, TokenRecord]:
        rows = await self._conn.fetch(SQL_TOKENS, list(jtis))
        return {r["jti"]: TokenRecord(r["jti"], r["publisher"], list(r["scopes"]),
                                      r["revoked_at"] is not None) for r in rows}

    async def put_tiles(self, tiles: dict[TileKey, bytes]) -> None:
        await self._conn.executemany(
            SQL_PUT_TILE, [(level, n, data) for (level, n), data in sorted(tiles.items())])

    async def put_checkpoint(self, size: int, root: bytes, note: str) -> None:
        await self._conn.execute(SQL_PUT_CHECKPOINT, size, root, note)
