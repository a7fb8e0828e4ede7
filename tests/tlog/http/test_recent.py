"""GET /checkpoint and proofs without a tree size read the latest checkpoint at most once per
--checkpoint-ttl (tlog.http.recent), yet never answer older than what this server published,
and a proof of an entry another server just appended is found at once."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import make_release
from tlog.config import Config
from tlog.http.app import create_app
from tlog.http.recent import RecentCheckpoint
from tlog.store.reader import StoredCheckpoint
from verifier.protocol.note import Signer

Client = TestClient[web.Request, web.Application]


async def _app(aiohttp_client: Any, database_url: str, signer: Signer, ttl: float) -> Client:
    app = create_app(Config(database_url=database_url, signer=signer, policy="open",
                            host="127.0.0.1", port=0, max_wait=0.002, checkpoint_ttl=ttl))
    c: Client = await aiohttp_client(app)
    return c


async def _size(client: Client) -> int:
    resp = await client.get("/checkpoint")
    assert resp.status == 200
    return int((await resp.text()).split("\n")[1])


async def test_a_server_never_serves_older_than_its_own_receipts(
        aiohttp_client: Any, database_url: str, log_signer: Signer, publisher: Signer) -> None:
    client = await _app(aiohttp_client, database_url, log_signer, ttl=30)
    for i in range(3):
        resp = await client.post("/v1/entries", json=make_release(publisher, "p", f"1.{i}"))
        receipt = await resp.json()
        assert resp.status == 201
        assert await _size(client) >= receipt["tree_size"]


async def test_another_servers_append_shows_within_the_ttl_and_proofs_at_once(
        aiohttp_client: Any, database_url: str, log_signer: Signer, publisher: Signer) -> None:
    reader = await _app(aiohttp_client, database_url, log_signer, ttl=1.0)
    writer = await _app(aiohttp_client, database_url, log_signer, ttl=1.0)
    await writer.post("/v1/entries", json=make_release(publisher, "p", "1.0"))
    before = await _size(reader)
    resp = await writer.post("/v1/entries", json=make_release(publisher, "p", "1.1"))
    receipt = await resp.json()
    # A proof of the new entry by leaf hash: found though the kept checkpoint predates it.
    proof = await reader.get(f"/v1/proof/inclusion?leaf_hash={receipt['leaf_hash']}")
    assert proof.status == 200, await proof.text()
    assert (await proof.json())["tree_size"] >= receipt["tree_size"]
    await asyncio.sleep(1.1)
    assert await _size(reader) >= receipt["tree_size"] > before


async def test_concurrent_requests_share_one_read() -> None:
    reads = 0

    async def fetch() -> StoredCheckpoint:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return StoredCheckpoint(reads, bytes(32), "note")

    recent = RecentCheckpoint(fetch, lambda: 0, ttl=10)
    got = await asyncio.gather(*(recent.get() for _ in range(20)))
    assert reads == 1 and {c.size for c in got} == {1}
    stale = RecentCheckpoint(fetch, lambda: 5, ttl=10)  # this server published size 5
    await stale.get()
    await stale.get()
    # each read was older than 5: not served from memory, and read once more at once
    assert reads == 5


async def test_a_dropped_checkpoint_is_read_again() -> None:
    sizes = [7, 3]

    async def fetch() -> StoredCheckpoint:
        return StoredCheckpoint(sizes.pop(0), bytes(32), "note")

    recent = RecentCheckpoint(fetch, lambda: 0, ttl=10)
    assert (await recent.get()).size == 7  # type: ignore[union-attr]
    assert (await recent.get()).size == 7  # type: ignore[union-attr]
    recent.drop()  # another database now (the storage's identity guard calls this)
    assert (await recent.get()).size == 3  # type: ignore[union-attr]
