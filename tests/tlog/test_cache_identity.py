"""Caches are tied to the database they came from (issue 12: "the in-memory tile cache
outlives a database swap"). A restore from a backup, or another database put under the same
name, may hold another tree under the same log key: a full tile of the old one served next
to the new one's checkpoints would show two trees. Neither the memory caches nor the tile
files (tlog serve --tile-cache) may serve what the database now behind them did not publish.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import _create_database
from tests.support import make_release
from tlog.cli.pgcluster import Cluster
from tlog.config import Config
from tlog.http.app import create_app
from tlog.store.identity import read_identity
from tlog.store.tilecache import RECORD
from verifier.protocol.note import Signer
from verifier.protocol.package_state import verify_state
from verifier.protocol.tiles import TILE_WIDTH

Client = TestClient[web.Request, web.Application]
_numbers = itertools.count()


async def new_database(cluster: Cluster) -> tuple[str, str]:
    name = f"ident{os.getpid()}_{next(_numbers)}"
    return name, await _create_database(cluster, name)


async def serving(aiohttp_client: Any, url: str, signer: Signer, **kw: Any) -> Client:
    app = create_app(Config(database_url=url, signer=signer, policy="open", host="127.0.0.1",
                            port=0, max_wait=0.002, **kw))
    client: Client = await aiohttp_client(app)
    return client


async def fill(client: Client, publisher: Signer, prefix: str) -> None:
    """A full first bundle whose releases say `prefix`: two logs filled with two prefixes
    differ in every tile."""
    async def post(i: int) -> None:
        resp = await client.post("/v1/entries",
                                 json=make_release(publisher, f"pkg{i % 5}", f"{prefix}.{i}"))
        assert resp.status == 201, await resp.text()

    await asyncio.gather(*(post(i) for i in range(TILE_WIDTH)))


async def read(client: Client, path: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get(path)
        body = await resp.read()
        if resp.status == 200:
            return body
        assert resp.status == 503, (path, resp.status, body[:300])  # reconnecting
        assert time.monotonic() < deadline, (path, body[:300])
        await asyncio.sleep(0.1)


def tile_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != RECORD]


async def test_tile_files_kept_from_another_database_are_deleted_not_served(
        aiohttp_client: Any, pg_cluster: Cluster, log_signer: Signer, publisher: Signer,
        tmp_path: Path) -> None:
    """Same key, same tile-files directory, another database (a new cluster, a logical
    restore that then grew another way): the old files go at startup."""
    tiles = tmp_path / "tiles"
    _, url_a = await new_database(pg_cluster)
    _, url_b = await new_database(pg_cluster)
    a = await serving(aiohttp_client, url_a, log_signer, tile_cache=tiles)
    await fill(a, publisher, "1")
    bundle_a = await read(a, "/tile/entries/000")
    assert len(tile_files(tiles)) == 1
    await a.close()
    b = await serving(aiohttp_client, url_b, log_signer)
    await fill(b, publisher, "2")
    bundle_b = await read(b, "/tile/entries/000")
    assert bundle_b != bundle_a
    await b.close()
    b = await serving(aiohttp_client, url_b, log_signer, tile_cache=tiles)
    assert tile_files(tiles) == []  # deleted at startup: not B's
    assert await read(b, "/tile/entries/000") == bundle_b
    assert [p.read_bytes()[:-32] for p in tile_files(tiles)] == [bundle_b]


async def test_tile_files_go_when_the_same_database_no_longer_holds_their_tree(
        aiohttp_client: Any, pg_cluster: Cluster, log_signer: Signer, publisher: Signer,
        tmp_path: Path) -> None:
    """A physical restore keeps the database's identifiers: the anchor checkpoint (size and
    root) the files were kept under is what tells. Here the log is emptied and grown again
    another way in the same database."""
    tiles = tmp_path / "tiles"
    _, url = await new_database(pg_cluster)
    first = await serving(aiohttp_client, url, log_signer, tile_cache=tiles)
    await fill(first, publisher, "1")
    old = await read(first, "/tile/entries/000")
    await first.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE entries, tiles, checkpoints, published, cosignatures, "
                           "map_nodes")
    finally:
        await conn.close()
    second = await serving(aiohttp_client, url, log_signer)
    await fill(second, publisher, "2")
    new = await read(second, "/tile/entries/000")
    assert new != old
    await second.close()
    third = await serving(aiohttp_client, url, log_signer, tile_cache=tiles)
    assert await read(third, "/tile/entries/000") == new


async def _without_sessions(admin: asyncpg.Connection, name: str, sql: str) -> None:
    """Run `sql` (a rename, a copy) on database `name` once its sessions are ended; new
    connections are refused meanwhile."""
    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = $1", name)
    for _ in range(100):  # the ended sessions take a moment to go
        try:
            await admin.execute(sql)
            return
        except asyncpg.ObjectInUseError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"sessions of {name} did not end")


async def swap(cluster: Cluster, serving_name: str, other_name: str) -> None:
    """Put database `other_name` under `serving_name` while a server uses that name: its
    sessions are ended and it reconnects to the other database."""
    admin = await asyncpg.connect(cluster.url("postgres"))
    try:
        await _without_sessions(admin, serving_name,
                                f'ALTER DATABASE "{serving_name}" RENAME TO "{serving_name}_old"')
        await admin.execute(f'ALTER DATABASE "{other_name}" RENAME TO "{serving_name}"')
    finally:
        await admin.close()


async def test_a_database_swapped_under_a_running_server_empties_its_caches(
        aiohttp_client: Any, pg_cluster: Cluster, log_signer: Signer, publisher: Signer,
        tmp_path: Path) -> None:
    """The probe's finding: the in-memory tile cache outlived a database swap. After the
    swap the server answers with the new database's tiles and checkpoint, from memory and
    from its tile files alike."""
    tiles = tmp_path / "tiles"
    name_a, url_a = await new_database(pg_cluster)
    name_b, url_b = await new_database(pg_cluster)
    b = await serving(aiohttp_client, url_b, log_signer)
    await fill(b, publisher, "2")
    bundle_b, tile_b = await read(b, "/tile/entries/000"), await read(b, "/tile/0/000")
    checkpoint_b = await read(b, "/checkpoint")
    await b.close()
    a = await serving(aiohttp_client, url_a, log_signer, tile_cache=tiles)
    await fill(a, publisher, "1")
    bundle_a, tile_a = await read(a, "/tile/entries/000"), await read(a, "/tile/0/000")
    assert (bundle_a, tile_a) != (bundle_b, tile_b)
    assert await read(a, "/checkpoint") != checkpoint_b
    assert len(tile_files(tiles)) == 2
    await swap(pg_cluster, name_a, name_b)
    # Cache hits make no query: the server's own check (every 5 s) notices the swap.
    deadline = time.monotonic() + 15
    while (served := await read(a, "/tile/entries/000")) != bundle_b:
        assert served == bundle_a
        assert time.monotonic() < deadline, "the old database's bundle is still served"
        await asyncio.sleep(0.2)
    assert await read(a, "/tile/0/000") == tile_b
    assert await read(a, "/checkpoint") == checkpoint_b
    assert tile_files(tiles) == [] or all(  # deleted (in a thread) and none kept since
        p.read_bytes()[:-32] in (bundle_b, tile_b) for p in tile_files(tiles))


async def test_a_role_that_may_not_read_the_cluster_identifier_still_gets_an_identity(
        pg_cluster: Cluster) -> None:
    """pg_control_system() may be refused to a role: the database's OID still tells."""
    _, url = await new_database(pg_cluster)
    role = f"plain{os.getpid()}_{next(_numbers)}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
        full = await read_identity(admin)
        rest = url.partition("@")[2]
        plain = await asyncpg.connect(f"postgresql://{role}:pw@{rest}")
        try:
            assert await read_identity(plain) == "/" + full.split("/")[1]
        finally:
            await plain.close()
        assert full.split("/")[0].isdigit()
    finally:
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def _logged(client: Client, entry: dict[str, Any]) -> None:
    """POST until appended anew (201); 503 while the server reconnects."""
    for _ in range(100):
        resp = await client.post("/v1/entries", json=entry)
        if resp.status == 201:
            return
        assert resp.status == 503, await resp.text()
        await asyncio.sleep(0.1)
    raise AssertionError("never appended")


async def test_a_batch_made_again_on_a_restored_database_stores_its_map_nodes(
        aiohttp_client: Any, pg_cluster: Cluster, log_signer: Signer, publisher: Signer) -> None:
    """The sequencer keeps map nodes between batches. A database restored to before a batch
    (here: a copy taken before it, swapped in), given the same entry again, gets the very
    same nodes made again: they must be stored there too, or its package-state proofs break."""
    name_a, url_a = await new_database(pg_cluster)
    a = await serving(aiohttp_client, url_a, log_signer)
    first = make_release(publisher, "pkg", "1.0")
    assert (await a.post("/v1/entries", json=first)).status == 201
    copy_name = f"{name_a}_copy"
    admin = await asyncpg.connect(pg_cluster.url("postgres"))
    try:  # the restore point: the log before the second release
        await _without_sessions(admin, name_a,
                                f'CREATE DATABASE "{copy_name}" TEMPLATE "{name_a}"')
        await admin.execute(f'ALTER DATABASE "{name_a}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()
    second = make_release(publisher, "pkg", "2.0")
    await _logged(a, second)  # the server reconnects after its sessions were ended
    await swap(pg_cluster, name_a, copy_name)
    await _logged(a, second)  # the same entry again, on the database that never had it
    answer = json.loads(await read(a, "/v1/package-state?package=pkg"))
    assert [r["version"] for r in answer["state"]["releases"]] == ["1.0", "2.0"]
    # the proof verifies against the map root: the nodes are in this database
    verify_state(bytes.fromhex(answer["map_root"]), "pkg", answer["state"],
                 base64.b64decode(answer["proof"]))
