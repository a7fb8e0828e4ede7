"""Serving entry bundles and hash tiles cheaply: bundles built from SQL-prefixed rows, the
bundle and tile caches and their read-ahead, and the errors that must survive all of it.

Storage-level tests write rows straight into the tables, so they can hold what the API never
appends (0-byte entries, entries too large for a bundle, holes); the API tests append through
POST and then break the stored data underneath the running service.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import make_release
from tests.tlog.sizes import with_map_roots
from tlog.config import Config
from tlog.http.app import create_app
from tlog.http.handlers import VKEY
from tlog.store.postgres import (
    BUNDLE_READAHEAD,
    FULL_TILE_BYTES,
    SQL_IS_REGISTRY,
    SQL_REGISTRY_ENTRIES,
    SQL_REGISTRY_PAGE,
    Storage,
)
from tlog.store.tilecache import RECORD
from tlog.store.tilecache import namespace as tile_namespace
from verifier.protocol.entries.kinds import KINDS, REGISTRY_KINDS
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.note import Signer
from verifier.protocol.package_state import MAP_ROOT_KIND
from verifier.protocol.tiles import TILE_WIDTH, decode_bundle, encode_bundle

Client = TestClient[web.Request, web.Application]
IMMUTABLE = "public, max-age=31536000, immutable"
# Lengths around every byte boundary of the 16-bit prefix, the empty entry and the largest.
EDGE_SIZES = [0, 1, 2, 127, 128, 255, 256, 257, 1000, 4095, 4096, 65279, 65280, 65534, 65535]


# -- helpers --------------------------------------------------------------------------------


async def sql(url: str, query: str, *args: Any) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


async def insert_entries(url: str, leaves: Sequence[bytes], start: int = 0) -> None:
    """Rows as the sequencer writes them, except that any bytes are a leaf here."""
    idx = list(range(start, start + len(leaves)))
    hashes = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in idx]  # unique, 32 bytes
    await sql(url, "INSERT INTO entries (idx, leaf, leaf_hash) "
                   "SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])",
              idx, list(leaves), hashes)


async def publish(url: str, storage: Storage, size: int) -> None:
    """A checkpoint row of `size` (its note is not checked here) that `storage` has seen."""
    await sql(url, "INSERT INTO checkpoints (tree_size, root, note) VALUES ($1, $2, 'x')",
              size, bytes(32))
    assert await storage.published_at_least(size)


def sized_leaves(count: int, sizes: Sequence[int] = (0, 3, 300)) -> list[bytes]:
    """`count` distinct-looking leaves whose lengths cycle through `sizes`."""
    return [bytes([i % 251]) * sizes[i % len(sizes)] for i in range(count)]


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    s = await Storage.connect(database_url, min_size=1, max_size=2)
    try:
        yield s
    finally:
        await s.close()


async def expected_bundle(storage: Storage, n: int, width: int = TILE_WIDTH) -> bytes:
    """The bundle as verifier.protocol.tiles.encode_bundle makes it from the stored rows."""
    lo = n * TILE_WIDTH
    rows = await storage.pool.fetch(
        "SELECT leaf FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx", lo, lo + width)
    return encode_bundle([bytes(r["leaf"]) for r in rows])


# -- bundles built from SQL -----------------------------------------------------------------


async def test_bundle_from_sql_equals_encode_bundle_for_entries_of_every_edge_size(
        storage: Storage, database_url: str) -> None:
    leaves = [bytes([i % 256]) * EDGE_SIZES[i % len(EDGE_SIZES)] for i in range(TILE_WIDTH + 37)]
    leaves[:3] = [b"", b"", b""]  # a bundle may start with empty entries
    await insert_entries(database_url, leaves)
    full = await storage.entry_bundle(0)
    assert full == encode_bundle(leaves[:TILE_WIDTH])
    assert decode_bundle(full, TILE_WIDTH) == leaves[:TILE_WIDTH]
    for width in (1, 3, 4, 36, 37):
        assert await storage.entry_bundle(1, width) == encode_bundle(
            leaves[TILE_WIDTH:TILE_WIDTH + width]), width


async def test_narrower_view_of_a_bundle_is_its_prefix_and_is_not_cached(
        storage: Storage, database_url: str) -> None:
    leaves = sized_leaves(TILE_WIDTH)
    await insert_entries(database_url, leaves)
    assert await storage.entry_bundle(0, 100) == encode_bundle(leaves[:100])
    assert storage.bundle_cache.get(0) is None  # only full bundles are immutable
    assert await storage.entry_bundle(0) == encode_bundle(leaves)
    assert storage.bundle_cache.get(0) == encode_bundle(leaves)


async def test_entry_too_large_for_a_bundle_is_refused_as_by_encode_bundle(
        storage: Storage, database_url: str) -> None:
    leaves = [b"a", b"b", b"c" * 65536, b"d"]
    await insert_entries(database_url, leaves)
    with pytest.raises(ValueError):
        encode_bundle(leaves)
    with pytest.raises(ValueError):
        await storage.entry_bundle(0, 4)
    assert await storage.entry_bundle(0, 2) == encode_bundle(leaves[:2])


async def test_missing_entry_row_gives_no_bundle(storage: Storage, database_url: str) -> None:
    leaves = sized_leaves(TILE_WIDTH)
    await insert_entries(database_url, leaves)
    await sql(database_url, "DELETE FROM entries WHERE idx = 10")
    assert await storage.entry_bundle(0) is None
    assert await storage.entry_bundle(0, 11) is None
    assert await storage.entry_bundle(0, 10) == encode_bundle(leaves[:10])
    assert storage.bundle_cache.get(0) is None


# -- read-ahead -----------------------------------------------------------------------------


async def test_sequential_reader_gets_full_published_bundles_read_ahead(
        storage: Storage, database_url: str) -> None:
    await insert_entries(database_url, sized_leaves(TILE_WIDTH * 6))
    await publish(database_url, storage, TILE_WIDTH * 4 + 10)  # bundles 0..3 full
    assert await storage.entry_bundle(0) == await expected_bundle(storage, 0)
    assert storage.bundle_cache.get(1) is None  # one bundle alone is not a sequence
    assert await storage.entry_bundle(1) == await expected_bundle(storage, 1)
    for n in (2, 3):  # read ahead with bundle 1
        assert storage.bundle_cache.get(n) == await expected_bundle(storage, n)
    # Stored but beyond the published tree: never read ahead.
    assert storage.bundle_cache.get(4) is None and storage.bundle_cache.get(5) is None


async def test_read_ahead_is_bounded_and_continues_where_it_stopped(
        storage: Storage, database_url: str) -> None:
    count = 2 * BUNDLE_READAHEAD + 2
    await insert_entries(database_url, sized_leaves(TILE_WIDTH * count))
    await publish(database_url, storage, TILE_WIDTH * count)
    for n in range(count):
        assert await storage.entry_bundle(n) == await expected_bundle(storage, n), n
        if n == 1:
            assert storage.bundle_cache.get(BUNDLE_READAHEAD) is not None
            assert storage.bundle_cache.get(BUNDLE_READAHEAD + 1) is None


async def test_read_ahead_over_a_missing_entry_still_serves_the_bundles_before_it(
        storage: Storage, database_url: str) -> None:
    await insert_entries(database_url, sized_leaves(TILE_WIDTH * 6))
    await publish(database_url, storage, TILE_WIDTH * 6)
    await sql(database_url, "DELETE FROM entries WHERE idx = $1", TILE_WIDTH * 3 + 7)
    for n in (0, 1, 2):
        assert await storage.entry_bundle(n) == await expected_bundle(storage, n), n
    assert await storage.entry_bundle(3) is None
    assert await storage.entry_bundle(4) == await expected_bundle(storage, 4)


async def test_read_ahead_over_an_entry_too_large_still_serves_the_bundles_before_it(
        storage: Storage, database_url: str) -> None:
    leaves = sized_leaves(TILE_WIDTH * 5)
    leaves[TILE_WIDTH * 3 + 1] = b"x" * 65536
    await insert_entries(database_url, leaves)
    await publish(database_url, storage, TILE_WIDTH * 5)
    for n in (0, 1, 2):
        assert await storage.entry_bundle(n) == await expected_bundle(storage, n), n
    with pytest.raises(ValueError):
        await storage.entry_bundle(3)
    assert await storage.entry_bundle(4) == await expected_bundle(storage, 4)


async def test_sequential_tile_reader_gets_full_tiles_read_ahead_and_partial_ones_not_cached(
        storage: Storage, database_url: str) -> None:
    tiles = {n: bytes([n]) * FULL_TILE_BYTES for n in range(10)}
    tiles[10] = b"\x0a" * 32 * 5  # the partial tile at the right edge
    del tiles[6]  # a hole: the published tree's tile is missing from storage
    await sql(database_url, "INSERT INTO tiles (level, idx, data) "
                            "SELECT 0, * FROM unnest($1::bigint[], $2::bytea[])",
              list(tiles), list(tiles.values()))
    assert await storage.tile(0, 0) == tiles[0]
    assert await storage.tile(0, 1) == tiles[1]  # reads ahead
    for n in (2, 3, 4, 5, 7, 8, 9):
        assert storage.tile_cache.get((0, n)) == tiles[n], n
    assert storage.tile_cache.get((0, 10)) is None
    assert await storage.tile(0, 6) is None
    assert await storage.tile(0, 10) == tiles[10]
    assert await storage.tile(0, 11) is None
    assert await storage.tile(1, 0) is None


# -- through the API ------------------------------------------------------------------------


async def append(client: Client, publisher: Signer, count: int) -> list[bytes]:
    """Append `count` entries at once (the sequencer batches them); every leaf of the tree in
    log order, the map-root/v1 leaf ending each batch included: bundles and tiles hold them
    too (tests.tlog.sizes.with_map_roots)."""
    async def post(entry: dict[str, Any]) -> tuple[int, bytes, int]:
        resp = await client.post("/v1/entries", json=entry)
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        return body["index"], validate_entry(entry).leaf, body["tree_size"]

    entries = [make_release(publisher, f"pkg{i % 5}", f"2.{i}") for i in range(count)]
    done = await asyncio.gather(*(post(e) for e in entries))
    leaves = await with_map_roots(client, {i: leaf for i, leaf, _ in done},
                                  [size for _, _, size in done])
    assert len(leaves) < 2 * TILE_WIDTH  # the tests below look at the first two bundles
    return leaves


async def get(client: Client, path: str, status: int = 200) -> bytes:
    resp = await client.get(path)
    body = await resp.read()
    assert resp.status == status, (path, body[:300])
    assert resp.headers["X-Request-Id"]
    if status != 200:
        assert json.loads(body)["error"]["code"] == {500: "internal", 404: "not_found"}[status]
    return body


async def test_full_bundle_and_tile_are_the_same_from_storage_and_from_the_cache(
        client: Client, publisher: Signer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tlog.access")
    leaves = await append(client, publisher, TILE_WIDTH + 2)
    for _ in range(2):
        resp = await client.get("/tile/entries/000")
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == IMMUTABLE
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert decode_bundle(await resp.read(), TILE_WIDTH) == leaves[:TILE_WIDTH]
        tile = await client.get("/tile/0/000")
        assert tile.headers["Cache-Control"] == IMMUTABLE
        assert len(await tile.read()) == FULL_TILE_BYTES
    width = len(leaves) - TILE_WIDTH
    partial = await client.get(f"/tile/entries/001.p/{width}")
    assert partial.headers["Cache-Control"] == "public, max-age=60"
    assert decode_bundle(await partial.read(), width) == leaves[TILE_WIDTH:]
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tlog.access"]
    served = [a for a in access if a["route"] == "/tile/{rest}"]
    assert [a["status"] for a in served] == [200] * 5


async def test_published_bundle_with_a_missing_entry_is_500_and_unpublished_ones_404(
        client: Client, publisher: Signer, database_url: str) -> None:
    width = len(await append(client, publisher, TILE_WIDTH + 3)) - TILE_WIDTH
    await sql(database_url, "DELETE FROM entries WHERE idx IN (7, $1)", TILE_WIDTH + 1)
    await get(client, "/tile/entries/000", 500)
    await get(client, "/tile/entries/000.p/8", 500)
    assert len(decode_bundle(await get(client, "/tile/entries/000.p/7"), 7)) == 7
    await get(client, "/tile/entries/001.p/3", 500)
    assert len(decode_bundle(await get(client, "/tile/entries/001.p/1"), 1)) == 1
    await get(client, f"/tile/entries/001.p/{width}", 500)
    await get(client, f"/tile/entries/001.p/{width + 1}", 404)
    await get(client, "/tile/entries/001", 404)


async def test_published_tile_missing_from_storage_is_500(
        client: Client, publisher: Signer, database_url: str) -> None:
    width = len(await append(client, publisher, TILE_WIDTH + 1)) - TILE_WIDTH
    await sql(database_url, "DELETE FROM tiles WHERE level = 0 AND idx = 1")
    await get(client, "/tile/0/000")  # the sequencer's proofs may have cached it: fine
    await get(client, "/tile/0/001.p/1", 500)  # the tile after a cached one: read ahead
    await get(client, f"/tile/0/001.p/{width + 1}", 404)
    await get(client, "/tile/1/000.p/1")


# -- the registry listing ---------------------------------------------------------------------


async def test_registry_queries_return_the_registry_kinds_on_their_partial_index(
        storage: Storage, database_url: str) -> None:
    """Rows of every kind of the table: the registry queries keep exactly the registry kinds,
    in log order, and PostgreSQL plans them on the partial index entries_registry (migration
    0006) exactly as it plans that index's own predicate, read back from the database: a
    kind added to the table without a migration recreating the index fails here. The log's
    own map-root/v1 rows are among them: they are not registry entries either."""
    kinds = [*KINDS, MAP_ROOT_KIND, *reversed(KINDS), MAP_ROOT_KIND]
    await insert_entries(database_url, [f"leaf {i}".encode() for i in range(len(kinds))])
    for index, kind in enumerate(kinds):
        await sql(database_url, "UPDATE entries SET kind = $2 WHERE idx = $1", index, kind)
    want = [(i, f"leaf {i}".encode()) for i, k in enumerate(kinds) if k in REGISTRY_KINDS]
    assert await storage.registry_entries(0) == want
    assert await storage.registry_entries(want[1][0]) == want[1:]
    assert await storage.registry_page(want[0][0], 2, 1 << 20) == want[1:3]
    async with storage.pool.acquire() as conn, conn.transaction():
        await conn.execute("ANALYZE entries")
        await conn.execute("SET LOCAL enable_seqscan = off")
        predicate = await conn.fetchval(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
            "WHERE indexrelid = 'entries_registry'::regclass")
        for query, args in ((SQL_REGISTRY_ENTRIES, (0,)), (SQL_REGISTRY_PAGE, (0, 10, 1 << 20))):
            plan = [r[0] for r in await conn.fetch("EXPLAIN " + query, *args)]
            assert "entries_registry" in "\n".join(plan), plan
            as_indexed = query.replace(SQL_IS_REGISTRY, predicate)
            assert plan == [r[0] for r in await conn.fetch("EXPLAIN " + as_indexed, *args)]


# -- the disk cache of full tiles (tlog serve --tile-cache) ----------------------------------


@pytest.fixture
async def cached_client(aiohttp_client: object, database_url: str, log_signer: Signer,
                        tmp_path: Path) -> AsyncIterator[Client]:
    app = create_app(Config(database_url=database_url, signer=log_signer, policy="open",
                            host="127.0.0.1", port=0, max_wait=0.002,
                            tile_cache=tmp_path / "tiles"))
    c: Client = await aiohttp_client(app)  # type: ignore[operator]
    yield c


def kept_files(root: Path) -> dict[str, Path]:
    """The tile files (not the record of the database they came from)."""
    return {str(p.relative_to(next(root.iterdir()))): p
            for p in root.rglob("*") if p.is_file() and p.name != RECORD}


async def test_full_tiles_are_kept_on_disk_and_served_from_there_without_the_database(
        cached_client: Client, publisher: Signer, database_url: str, tmp_path: Path) -> None:
    leaves = await append(cached_client, publisher, TILE_WIDTH + 2)
    bundle, tile = await get(cached_client, "/tile/entries/000"), await get(cached_client,
                                                                             "/tile/0/000")
    width = len(leaves) - TILE_WIDTH
    await get(cached_client, f"/tile/entries/001.p/{width}")  # partial: never kept
    files = kept_files(tmp_path / "tiles")
    assert sorted(files) == ["tile/0/000", "tile/entries/000"]
    assert files["tile/entries/000"].read_bytes()[:-32] == bundle
    # With the rows gone, only the cache can still answer for the full tiles.
    await sql(database_url, "DELETE FROM entries WHERE idx < 256")
    await sql(database_url, "DELETE FROM tiles WHERE level = 0 AND idx = 0")
    resp = await cached_client.get("/tile/entries/000")
    assert resp.headers["Cache-Control"] == IMMUTABLE
    assert decode_bundle(await resp.read(), TILE_WIDTH) == leaves[:TILE_WIDTH]
    assert await get(cached_client, "/tile/0/000") == tile


async def test_a_rotten_cache_file_is_dropped_and_the_database_answers(
        cached_client: Client, publisher: Signer, tmp_path: Path) -> None:
    await append(cached_client, publisher, TILE_WIDTH)
    bundle = await get(cached_client, "/tile/entries/000")
    file = kept_files(tmp_path / "tiles")["tile/entries/000"]
    rotten = bytearray(file.read_bytes())
    rotten[100] ^= 1
    file.write_bytes(bytes(rotten))
    assert await get(cached_client, "/tile/entries/000") == bundle
    assert file.read_bytes()[:-32] == bundle  # kept again, sound


async def test_cached_tiles_beyond_the_published_tree_are_not_served(
        cached_client: Client, publisher: Signer, tmp_path: Path) -> None:
    await append(cached_client, publisher, 3)
    await get(cached_client, "/tile/entries/000.p/3")
    # A file for a tile the tree does not have (a database restored to an earlier tree):
    # the published size decides, not the file.
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # partial: never kept
    kept = tmp_path / "tiles" / tile_namespace(cached_client.app[VKEY])
    for path in ("tile/entries/000", "tile/0/000"):
        stray = kept / path
        stray.parent.mkdir(parents=True)
        stray.write_bytes(b"x" + hashlib.sha256(b"x").digest())  # sound: only size refuses
    await get(cached_client, "/tile/entries/000", 404)
    await get(cached_client, "/tile/0/000", 404)


async def test_an_unwritable_cache_costs_speed_not_answers(
        aiohttp_client: object, database_url: str, log_signer: Signer, publisher: Signer,
        tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    app = create_app(Config(database_url=database_url, signer=log_signer, policy="open",
                            host="127.0.0.1", port=0, max_wait=0.002, tile_cache=blocker))
    client: Client = await aiohttp_client(app)  # type: ignore[operator]
    leaves = await append(client, publisher, TILE_WIDTH)
    for _ in range(2):
        assert decode_bundle(await get(client, "/tile/entries/000"),
                             TILE_WIDTH) == leaves[:TILE_WIDTH]
