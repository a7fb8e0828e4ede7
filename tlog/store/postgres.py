"""PostgreSQL storage: the only module that speaks SQL.

Tables (schema/migrations): `entries` (JCS leaf bytes by index), `tiles` (C2SP hash
tiles, full and the current partial ones), `checkpoints` (every signed checkpoint the
log published). Appends happen in `AppendTx`, one transaction per batch, serialized
across processes by a transaction-scoped advisory lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from tlog.store.caches import FULL_TILE_BYTES as FULL_TILE_BYTES  # tests read it here
from tlog.store.caches import LruCache, TileCache
from tlog.store.cosigned import CosignedStore
from tlog.store.explore import ExploreStore
from tlog.store.identity import CacheGuard
from tlog.store.outage import DatabaseHealth, database_health
from tlog.store.reader import (
    LogReader,
    RevokeOutcome,
    StoredCheckpoint,
    TokenLedger,
    TokenRecord,
)
from tlog.store.statemap import MapStore
from verifier.protocol.entries.kinds import KINDS
from verifier.protocol.package_state import MAP_ROOT_KIND
from verifier.protocol.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, TileKey

APPEND_LOCK = 0x746C6F67_0002  # advisory lock id serializing appends ("tlog", 2)
TILE_READAHEAD = 64  # full tiles read at once by a sequential reader (512 KiB)
BUNDLE_CACHE_SIZE = 64  # full entry bundles kept in memory (~120 KiB each, immutable)
BUNDLE_READAHEAD = 8  # full entry bundles read at once by a sequential reader
BUNDLE_PREFIX = 2  # bytes of the length before each entry of a bundle


def _page_sql(where: str, limit: str, max_bytes: str) -> str:
    """Entries matching `where`, in log order, at most `limit`, and only those whose stored
    bytes before them stay under `max_bytes`: the one crossing it is the last. octet_length
    reads a TOASTed leaf's size from its pointer, so the rows left out are never read."""
    return (
        "SELECT idx, leaf FROM (SELECT idx, leaf, "
        "sum(octet_length(leaf)) OVER (ORDER BY idx) - octet_length(leaf) AS before "
        f"FROM entries WHERE {where} ORDER BY idx LIMIT {limit}) AS page "
        f"WHERE before < {max_bytes} ORDER BY idx")


SQL_BY_PACKAGE = _page_sql("package = $1 AND idx > $2", "$3", "$4")
SQL_BY_PACKAGE_VERSION = _page_sql("package = $1 AND version = $2 AND idx > $3", "$4", "$5")
SQL_LATEST_CHECKPOINT = (
    "SELECT tree_size, root, note FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
SQL_CHECKPOINT_AT = "SELECT tree_size, root, note FROM checkpoints WHERE tree_size = $1"
SQL_ENTRY = "SELECT leaf FROM entries WHERE idx = $1"
# Each entry with its C2SP bundle prefix, a big-endian uint16 length (the low two bytes of
# int4send), so a bundle is a plain join. One value per row, not one string_agg: PostgreSQL
# spends more CPU aggregating 120 KB into one value than on sending 256 rows.
SQL_BUNDLE_PARTS = (
    "SELECT substring(int4send(length(leaf)) from 3 for 2) || leaf FROM entries "
    "WHERE idx >= $1 AND idx < $2 ORDER BY idx")
SQL_LEAF_HASH_RANGE = "SELECT leaf_hash FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx"
SQL_INDEX_OF = "SELECT idx FROM entries WHERE leaf_hash = $1"
SQL_COUNT_ENTRIES = "SELECT coalesce(max(idx) + 1, 0) FROM entries"
SQL_TILE = "SELECT data FROM tiles WHERE level = $1 AND idx = $2"
SQL_TILE_RANGE = "SELECT idx, data FROM tiles WHERE level = $1 AND idx >= $2 AND idx < $3"
SQL_TILES = (
    "SELECT t.level, t.idx, t.data FROM tiles t "
    "JOIN unnest($1::smallint[], $2::bigint[]) AS k(level, idx) "
    "ON t.level = k.level AND t.idx = k.idx")
SQL_LOCK = "SELECT pg_advisory_xact_lock($1)"
SQL_FIND_EXISTING = (
    "SELECT idx, leaf_hash, package, version FROM entries WHERE leaf_hash = ANY($1::bytea[]) "
    "UNION SELECT e.idx, e.leaf_hash, e.package, e.version FROM entries e "
    "JOIN unnest($2::text[], $3::text[]) AS k(package, version) "
    "ON e.package = k.package AND e.version = k.version AND e.kind = 'release/v1'")
# The releases and yanks of some (package, version) pairs, in log order: what lifecycle
# statements are checked against (verifier.protocol.registry.ReleaseFacts).
SQL_RELEASE_FACTS = (
    "SELECT e.idx, e.kind, e.package, e.version, e.leaf FROM entries e "
    "JOIN unnest($1::text[], $2::text[]) AS k(package, version) "
    "ON e.package = k.package AND e.version = k.version "
    "WHERE e.kind IN ('release/v1', 'yank/v1') ORDER BY e.idx")
SQL_PUT_TILE = (
    "INSERT INTO tiles (level, idx, data) VALUES ($1, $2, $3) "
    "ON CONFLICT (level, idx) DO UPDATE SET data = EXCLUDED.data")
SQL_PUT_CHECKPOINT = "INSERT INTO checkpoints (tree_size, root, note) VALUES ($1, $2, $3)"
# Registry entries (the registry kinds of KINDS), written as "none of the other kinds" (release
# and lifecycle kinds, and the log's own map-root/v1): the predicate of the partial index
# entries_registry (migration 0006, which must list the same kinds in the same order), on
# which PostgreSQL plans these queries.
SQL_IS_REGISTRY = "kind NOT IN ({})".format(", ".join(
    "'" + name.replace("'", "''") + "'"
    for name in [*(name for name, row in KINDS.items() if not row.registry), MAP_ROOT_KIND]))
SQL_REGISTRY_ENTRIES = (
    f"SELECT idx, leaf FROM entries WHERE {SQL_IS_REGISTRY} AND idx >= $1 ORDER BY idx")
SQL_REGISTRY_PAGE = _page_sql(f"{SQL_IS_REGISTRY} AND idx > $1", "$2", "$3")
SQL_MAX_COUNTERS = (
    "SELECT package, max(counter) AS max FROM entries "
    "WHERE package = ANY($1::text[]) AND counter IS NOT NULL GROUP BY package")
SQL_TOKENS = (
    "SELECT jti, publisher, scopes, expires_at, revoked_at FROM tokens "
    "WHERE jti = ANY($1::text[])")
SQL_INSERT_TOKEN = (
    "INSERT INTO tokens (jti, publisher, scopes, expires_at, issued_by) "
    "VALUES ($1, $2, $3, $4, $5)")
# One statement, so that the answer and the change come from the same snapshot: `hit` is the
# row this call revoked, `known` whether the token was issued at all.
SQL_REVOKE_TOKEN = (
    "WITH hit AS (UPDATE tokens SET revoked_at = now(), revoked_by = $2 "
    "WHERE jti = $1 AND revoked_at IS NULL RETURNING jti) "
    "SELECT EXISTS (SELECT 1 FROM hit) AS hit, "
    "EXISTS (SELECT 1 FROM tokens WHERE jti = $1) AS known")


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


def _token_records(rows: Sequence[Any]) -> dict[str, TokenRecord]:
    return {r["jti"]: TokenRecord(r["jti"], r["publisher"], list(r["scopes"]),
                                  r["revoked_at"] is not None, r["expires_at"]) for r in rows}


async def _registry_entries(conn: Any, start: int) -> list[tuple[int, bytes]]:
    rows = await conn.fetch(SQL_REGISTRY_ENTRIES, start)
    return [(int(r["idx"]), bytes(r["leaf"])) for r in rows]


def _join_bundle(parts: Sequence[bytes]) -> bytes:
    """The bundle of entries already prefixed by SQL_BUNDLE_PARTS: the same bytes as
    verifier.protocol.tiles.encode_bundle, at a fraction of the CPU. Raises ValueError for an entry
    over 65535 bytes, as encode_bundle does."""
    # The prefix keeps only the low 16 bits of a length: refuse what it cannot express.
    if parts and max(map(len, parts)) > BUNDLE_PREFIX + MAX_ENTRY_SIZE:
        raise ValueError("an entry is too large for an entry bundle")
    return b"".join(parts)


def _checkpoint(row: asyncpg.Record | None) -> StoredCheckpoint | None:
    if row is None:
        return None
    return StoredCheckpoint(int(row["tree_size"]), bytes(row["root"]), str(row["note"]))


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


class Storage(CosignedStore, ExploreStore):
    """Reads for the API (a LogReader), the token ledger, witness cosignatures
    (tlog.store.cosigned), the explorer's reads (tlog.store.explore), and `append()`
    transactions for the sequencer."""

    def __init__(self, pool: asyncpg.Pool, guard: CacheGuard | None = None) -> None:
        self.pool = pool
        self.tile_cache = TileCache()
        self.bundle_cache: LruCache[int] = LruCache(BUNDLE_CACHE_SIZE)
        self.published = 0  # the largest tree size seen published: sizes only ever grow
        # The caches above hold only what this database published (tlog.store.identity).
        self.guard = guard or CacheGuard()
        self.guard.on_change(self._drop_caches)

    @classmethod
    async def connect(cls, url: str, min_size: int = 2, max_size: int = 10,
                      **options: Any) -> Storage:
        async def no_reset(conn: asyncpg.Connection) -> None:
            # Handlers leave no session state (no SET, LISTEN or session locks), so the
            # default reset query on every release would be pure overhead.
            return None

        guard = CacheGuard()
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                         reset=no_reset, command_timeout=60, init=guard.check,
                                         **options)
        return cls(pool, guard)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        async with self.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")

    async def health(self) -> DatabaseHealth:
        return await database_health(self.pool)

    def identity(self) -> str | None:
        return self.guard.identity

    def on_swap(self, callback: Callable[[str], None]) -> None:
        self.guard.on_change(callback)

    async def check_database(self) -> None:
        async with self.pool.acquire(timeout=2) as conn:
            await self.guard.check(conn)

    def _drop_caches(self, reason: str) -> None:
        self.tile_cache.clear()
        self.bundle_cache.clear()
        self.published = 0

    def _seen(self, latest: StoredCheckpoint | None) -> None:
        """Note a latest checkpoint read: one smaller than a size already seen published
        means another database (a restore) is answering now: the caches go."""
        if latest is None:
            return
        if latest.size < self.published:
            self.guard.changed(f"the latest checkpoint went back from size {self.published} "
                               f"to {latest.size}")
        self.published = max(self.published, latest.size)
        self.guard.seen(latest.size, latest.root)

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        latest = _checkpoint(await self.pool.fetchrow(SQL_LATEST_CHECKPOINT))
        self._seen(latest)
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

    async def package_state(self, package: str, size: int
                            ) -> tuple[dict[str, Any] | None, bytes, bytes] | None:
        async with self.pool.acquire() as conn:
            return await MapStore(conn).package_state(package, size)

    async def entry(self, index: int) -> bytes | None:
        leaf = await self.pool.fetchval(SQL_ENTRY, index)
        return None if leaf is None else bytes(leaf)

    async def entry_bundle(self, n: int, width: int = TILE_WIDTH) -> bytes | None:
        """Entry bundle n of `width` entries (C2SP format), None if any of them is not stored.

        The caller checks that they are published. A full bundle never changes: it is
        cached, and a reader that just got bundle n-1 (an auditor or a monitor walking the
        log) gets the following published ones read ahead in the same query: about a third
        less CPU in PostgreSQL and in this process per bundle than one query each.
        """
        full = width == TILE_WIDTH
        if full:
            hit = self.bundle_cache.get(n)
            if hit is not None:
                return hit
            ahead = min(BUNDLE_READAHEAD, self.published // TILE_WIDTH - n)
            if ahead > 1 and n > 0 and self.bundle_cache.get(n - 1) is not None:
                bundle = await self._read_bundles_ahead(n, ahead)
                if bundle is not None:
                    return bundle
        lo = n * TILE_WIDTH
        parts = await self._bundle_parts(lo, lo + width)
        if len(parts) != width:
            return None
        bundle = _join_bundle(parts)
        if full:
            self.bundle_cache.put(n, bundle)
        return bundle

    async def _read_bundles_ahead(self, n: int, count: int) -> bytes | None:
        """Bundles n..n+count-1 into the cache; bundle n, or None if an entry is missing or
        too large (then the caller's exact read of bundle n alone tells which)."""
        lo = n * TILE_WIDTH
        parts = await self._bundle_parts(lo, lo + count * TILE_WIDTH)
        if len(parts) != count * TILE_WIDTH:
            return None
        for i in range(count):
            start = i * TILE_WIDTH
            with suppress(ValueError):  # reported when that bundle itself is asked for
                self.bundle_cache.put(n + i, _join_bundle(parts[start:start + TILE_WIDTH]))
        return self.bundle_cache.get(n)

    async def _bundle_parts(self, lo: int, hi: int) -> list[bytes]:
        """Entries lo..hi-1 that are stored, in order, each with its bundle length prefix."""
        return [r[0] for r in await self.pool.fetch(SQL_BUNDLE_PARTS, lo, hi)]

    async def leaf_hash_range(self, lo: int, hi: int) -> list[bytes]:
        return [bytes(r["leaf_hash"]) for r in await self.pool.fetch(SQL_LEAF_HASH_RANGE, lo, hi)]

    async def entry_count(self) -> int:
        return int(await self.pool.fetchval(SQL_COUNT_ENTRIES))

    async def checkpoint_and_count(self) -> tuple[StoredCheckpoint | None, int]:
        """The latest checkpoint and the entry count from one snapshot: read apart, an
        append committing in between makes them disagree on a log that is fine."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                  readonly=True):
            latest = _checkpoint(await conn.fetchrow(SQL_LATEST_CHECKPOINT))
            count = int(await conn.fetchval(SQL_COUNT_ENTRIES))
        return latest, count

    async def index_of(self, leaf_hash: bytes) -> int | None:
        idx = await self.pool.fetchval(SQL_INDEX_OF, leaf_hash)
        return None if idx is None else int(idx)

    async def by_package(self, package: str, version: str | None, after: int,
                         limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        if version is None:
            rows = await self.pool.fetch(SQL_BY_PACKAGE, package, after, limit, max_bytes)
        else:
            rows = await self.pool.fetch(SQL_BY_PACKAGE_VERSION, package, version, after, limit,
                                         max_bytes)
        return [(int(r["idx"]), bytes(r["leaf"])) for r in rows]

    async def tile(self, level: int, n: int) -> bytes | None:
        """Tile (level, n) as stored, full or partial; None if there is none.

        A reader that just got the tile before this one (an auditor or a mirror walking
        the log) gets the next TILE_READAHEAD tiles read into the cache in the same query:
        one query per tile would cost more than the rest of the request together.
        """
        hit = self.tile_cache.get((level, n))
        if hit is not None:
            return hit
        if n > 0 and self.tile_cache.get((level, n - 1)) is not None:
            return await self._read_tiles_ahead(level, n)
        data = await self.pool.fetchval(SQL_TILE, level, n)
        if data is None:
            return None
        self.tile_cache.put((level, n), bytes(data))
        return bytes(data)

    async def _read_tiles_ahead(self, level: int, n: int) -> bytes | None:
        """Tiles (level, n..n+TILE_READAHEAD-1) into the cache (the full ones); tile n."""
        rows = await self.pool.fetch(SQL_TILE_RANGE, level, n, n + TILE_READAHEAD)
        found = None
        for row in rows:
            data = bytes(row["data"])
            self.tile_cache.put((level, int(row["idx"])), data)  # keeps only full tiles
            if row["idx"] == n:
                found = data
        return found

    async def tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        return await _fetch_tiles(self.pool, keys, self.tile_cache, populate=True)

    async def registry_entries(self, start: int = 0) -> list[tuple[int, bytes]]:
        """Registry entries (of the registry kinds) from index `start`, in log order."""
        return await _registry_entries(self.pool, start)

    async def registry_page(self, after: int, limit: int,
                            max_bytes: int) -> list[tuple[int, bytes]]:
        rows = await self.pool.fetch(SQL_REGISTRY_PAGE, after, limit, max_bytes)
        return [(int(r["idx"]), bytes(r["leaf"])) for r in rows]

    async def insert_token(self, jti: str, publisher: str, scopes: Sequence[str],
                           expires_at: datetime, issued_by: str) -> None:
        """Record an issued token: the audit trail and the list revocation works on."""
        await self.pool.execute(SQL_INSERT_TOKEN, jti, publisher, list(scopes), expires_at,
                                issued_by)

    async def revoke_token(self, jti: str, revoked_by: str) -> RevokeOutcome:
        """Revoke a token; an already revoked one keeps its first revocation."""
        row = await self.pool.fetchrow(SQL_REVOKE_TOKEN, jti, revoked_by)
        if row["hit"]:
            return "revoked"
        return "already_revoked" if row["known"] else "unknown"

    async def token(self, jti: str) -> TokenRecord | None:
        """The record of a token as issued (and whether it was revoked); None if unknown."""
        return _token_records(await self.pool.fetch(SQL_TOKENS, [jti])).get(jti)

    @asynccontextmanager
    async def append(self) -> AsyncIterator[AppendTx]:
        """One append transaction holding the log-wide append lock until commit."""
        # READ COMMITTED whatever the database's default: under the lock each batch must
        # see the batch committed just before it, which a snapshot taken at BEGIN may not.
        async with self.pool.acquire() as conn, conn.transaction(isolation="read_committed"):
            await conn.execute(SQL_LOCK, APPEND_LOCK)
            yield AppendTx(conn, self.tile_cache)


if TYPE_CHECKING:  # mypy checks that the PostgreSQL store is what the HTTP layer reads
    _READER: type[LogReader] = Storage
    _LEDGER: type[TokenLedger] = Storage


class AppendTx:
    """The writes of one batch. Nothing is visible to anyone until the transaction commits."""

    def __init__(self, conn: asyncpg.Connection, cache: TileCache) -> None:
        self._conn = conn
        self._cache = cache

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        return _checkpoint(await self._conn.fetchrow(SQL_LATEST_CHECKPOINT))

    @property
    def state_map(self) -> MapStore:
        """The package state map's reads and writes, in this transaction."""
        return MapStore(self._conn)

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

    async def release_facts(self, names: Sequence[tuple[str, str]]
                            ) -> list[tuple[int, str, str, str, bytes]]:
        """(index, kind, package, version, leaf) of the releases and yanks of `names`."""
        rows = await self._conn.fetch(SQL_RELEASE_FACTS, [n[0] for n in names],
                                      [n[1] for n in names])
        return [(int(r["idx"]), r["kind"], r["package"], r["version"], bytes(r["leaf"]))
                for r in rows]

    async def max_counters(self, packages: Sequence[str]) -> dict[str, int]:
        rows = await self._conn.fetch(SQL_MAX_COUNTERS, list(packages))
        return {r["package"]: int(r["max"]) for r in rows}

    async def tokens(self, jtis: Sequence[str]) -> dict[str, TokenRecord]:
        return _token_records(await self._conn.fetch(SQL_TOKENS, list(jtis)))

    async def put_tiles(self, tiles: dict[TileKey, bytes]) -> None:
        await self._conn.executemany(
            SQL_PUT_TILE, [(level, n, data) for (level, n), data in sorted(tiles.items())])

    async def put_checkpoint(self, size: int, root: bytes, note: str) -> None:
        await self._conn.execute(SQL_PUT_CHECKPOINT, size, root, note)
