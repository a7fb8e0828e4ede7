"""The service's own guards: the startup self-check and dedup inside one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from tests.support import make_release
from tests.tlog.sizes import leaves
from tlog.config import Config
from tlog.log.edge import EdgeError, load_edge, read_edge
from tlog.log.metrics import AppendMetrics
from tlog.log.startup import StartupError, running_log, self_check
from tlog.store import migrate
from tlog.store.postgres import Storage
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.tiles import TreeBuilder

Client = TestClient[web.Request, web.Application]


async def post_all(client: Client, entries: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    async def one(e: dict[str, Any]) -> tuple[int, Any]:
        resp = await client.post("/v1/entries", json=e)
        return resp.status, await resp.json()

    return list(await asyncio.gather(*(one(e) for e in entries)))


async def run_sql(url: str, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def check(url: str, signer: Signer) -> int:
    storage = await Storage.connect(url, min_size=1, max_size=2)
    try:
        return await self_check(storage, signer.verifier())
    finally:
        await storage.close()


async def test_identical_submissions_in_one_batch_share_one_index(
        client: Client, publisher: Signer) -> None:
    entry = make_release(publisher, "com.acme.app", "1.0")
    results = await post_all(client, [entry] * 20)
    assert sorted(s for s, _ in results) == [200] * 19 + [201]
    assert {b["index"] for _, b in results} == {0}
    log = await (await client.get("/v1/log")).json()
    assert log["tree_size"] == leaves(1)


async def test_two_artifact_sets_for_one_version_in_one_batch_yield_one_entry(
        client: Client, publisher: Signer) -> None:
    entries = [make_release(publisher, "com.acme.app", "1.0", payload=bytes([i]))
               for i in range(10)]
    results = await post_all(client, entries)
    assert sorted(s for s, _ in results) == [201] + [409] * 9
    winner = next(b["index"] for s, b in results if s == 201)
    assert all(b["error"]["index"] == winner for s, b in results if s == 409)
    assert (await (await client.get("/v1/log")).json())["tree_size"] == leaves(1)


async def fill(client: Client, n: int) -> int:
    """Append `n` entries at once; the tree size after them: the entries, and one map-root
    leaf for each batch the sequencer gathered them into (each batch has its own size)."""
    pub = generate_key("filler")
    results = await post_all(client, [make_release(pub, "fill", f"0.{i}") for i in range(n)])
    assert all(s == 201 for s, _ in results)
    size: int = (await (await client.get("/v1/log")).json())["tree_size"]
    assert size == n + len({b["tree_size"] for _, b in results})
    return size


async def test_startup_accepts_the_log_it_wrote(client: Client, database_url: str,
                                                log_signer: Signer) -> None:
    size = await fill(client, 300)
    assert await check(database_url, log_signer) == size


async def test_startup_refuses_a_checkpoint_signed_by_another_key(
        client: Client, database_url: str) -> None:
    await fill(client, 3)
    with pytest.raises(StartupError, match="does not verify"):
        await check(database_url, generate_key("log.example.org/test"))


async def test_startup_refuses_a_rewritten_edge_tile(client: Client, database_url: str,
                                                     log_signer: Signer) -> None:
    await fill(client, 300)
    await run_sql(database_url, "UPDATE tiles SET data = set_byte(data, 0, get_byte(data, 0) # 1)"
                  " WHERE level = 0 AND idx = 1")
    with pytest.raises(StartupError, match="do not reproduce the root"):
        await check(database_url, log_signer)


async def test_startup_refuses_a_rewritten_leaf_at_the_edge(client: Client, database_url: str,
                                                            log_signer: Signer) -> None:
    await fill(client, 5)
    await run_sql(database_url, "UPDATE entries SET leaf_hash = sha256(leaf) WHERE idx = 4")
    with pytest.raises(StartupError, match="do not match their tile"):
        await check(database_url, log_signer)


async def test_startup_refuses_entries_beyond_the_checkpoint(client: Client, database_url: str,
                                                             log_signer: Signer) -> None:
    size = await fill(client, 5)
    await run_sql(database_url, "DELETE FROM checkpoints WHERE tree_size = $1", size)
    with pytest.raises(StartupError, match=f"{size} entries are stored"):
        await check(database_url, log_signer)


async def test_a_second_server_starts_while_the_first_appends(
        client: Client, database_url: str, log_signer: Signer) -> None:
    """The self-check reads the latest checkpoint and the entry count in one snapshot: read
    apart, a batch committing in between made a sound log look broken and startup fail."""
    pub = generate_key("busy-bot")
    stop = asyncio.Event()
    sizes: set[int] = set()  # one per batch the sequencer made, each with its map root

    async def append_continuously() -> int:
        n = 0
        while not stop.is_set():
            batch = [make_release(pub, "busy", f"{n}.{i}") for i in range(8)]
            results = await post_all(client, batch)
            assert {status for status, _ in results} == {201}
            sizes.update(body["tree_size"] for _, body in results)
            n += 1
        return n

    appender = asyncio.create_task(append_continuously())
    config = Config(database_url=database_url, signer=log_signer, policy="open",
                    host="127.0.0.1", port=0)
    started = 0
    try:
        for _ in range(40):  # before the fix, a few starts were enough to hit the window
            async with running_log(config, AppendMetrics(CollectorRegistry())):
                started += 1
    finally:
        stop.set()
        batches = await appender
    assert started == 40 and batches > 0
    assert await check(database_url, log_signer) == 8 * batches + len(sizes)


async def test_serving_an_unmigrated_database_is_refused(pg_cluster: Any) -> None:
    admin = await asyncpg.connect(pg_cluster.url())
    await admin.execute('CREATE DATABASE "unmigrated"')
    await admin.close()
    conn = await asyncpg.connect(pg_cluster.url("unmigrated"))
    try:
        with pytest.raises(migrate.SchemaError, match="run `tlog migrate"):
            await migrate.check_version(conn)
        assert await migrate.migrate(conn) == [m.name for m in migrate.migrations()]
        await migrate.check_version(conn)
        assert await migrate.migrate(conn) == []
    finally:
        await conn.close()


def edge_tiles(size: int) -> tuple[dict[tuple[int, int], bytes], bytes]:
    """The tiles of a tree of `size` made-up leaves, and its root."""
    builder = TreeBuilder()
    for i in range(size):
        builder.append(leaf_hash(i.to_bytes(4, "big")))
    return builder.take_changed(), builder.root()


async def test_the_edge_loads_once_for_the_sequencer_startup_and_the_bench() -> None:
    tiles, root = edge_tiles(70_000)  # partial tiles at levels 0, 1 and 2

    async def fetch(keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {k: tiles[k] for k in keys if k in tiles}

    builder = await load_edge(fetch, 70_000, root)
    builder.append(leaf_hash(b"next"))
    assert builder.size == 70_001
    with pytest.raises(EdgeError, match="do not reproduce the root of size 70000"):
        await load_edge(fetch, 70_000, bytes(32))
    whole, tiles[(0, 273)] = tiles[(0, 273)], tiles[(0, 273)][:-32]  # a short partial tile
    with pytest.raises(EdgeError, match="tile 0/273 at the right edge of size 70000 is missing"):
        await load_edge(fetch, 70_000, root)
    tiles[(0, 273)] = whole
    del tiles[(1, 1)]
    with pytest.raises(EdgeError, match="tile 1/1 at the right edge of size 70000 is missing"):
        await read_edge(fetch, 70_000)
    assert (await load_edge(fetch, 0, None)).size == 0
