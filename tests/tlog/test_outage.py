"""Outage answers (issue 12): while PostgreSQL is away every read is 503 database_unavailable
with Retry-After, or what the server can stand behind without it (full tiles and bundles it
holds, the last checkpoint it published); writes are 503, never 500; /readyz says whether a
write could commit; caches never outlive the database they came from.

The outages are real: a PostgreSQL cluster of this module's own (never the session's, which
other tests share) is stopped and started again; a read-only database is one with
default_transaction_read_only, its sessions ended so the pool reconnects into it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import _create_database
from tests.support import make_release, start_server, write_key
from tlog.cli.pgcluster import Cluster
from tlog.config import Config
from tlog.http.app import create_app
from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.note import Signer
from verifier.protocol.tiles import TILE_WIDTH

Client = TestClient[web.Request, web.Application]

# Every read that needs the database; answered 503 database_unavailable while it is away.
# (Partial tiles and proofs to a size that is not a multiple of 256 need a partial tile,
# which is never cached.)
READS_NEEDING_THE_DATABASE = [
    "/v1/log", "/v1/entries/0", "/v1/entries?package=pkg0", "/v1/registry",
    "/v1/proof/inclusion?leaf_hash={leaf}", "/v1/proof/consistency?first=1&second={size}",
    "/v1/checkpoints/{size}", "/v1/package-state?package=pkg0", "/tile/0/001.p/{width}",
    "/tile/entries/001.p/{width}",
]


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    """A cluster these tests may stop: the session's one serves every other test."""
    home = Path(tempfile.mkdtemp(prefix="tlog-outage-pg-"))
    home.chmod(0o755)  # the postgres user must reach it when the suite runs as root
    cluster = Cluster(home)
    cluster.init()
    cluster.start(fsync=False)
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(home, ignore_errors=True)


_names = iter(range(10**6))


async def new_database(cluster: Cluster) -> str:
    return await _create_database(cluster, f"outage{next(_names)}")


async def serving(aiohttp_client: Any, url: str, signer: Signer, **kw: Any) -> Client:
    app = create_app(Config(database_url=url, signer=signer, policy="open", host="127.0.0.1",
                            port=0, max_wait=0.002, **kw))
    client: Client = await aiohttp_client(app)
    return client


async def append(client: Client, publisher: Signer, count: int, prefix: str = "2") -> int:
    """Append `count` releases at once; the tree size after them."""
    return max(r["tree_size"] for r in await receipts(client, publisher, count, prefix))


async def receipts(client: Client, publisher: Signer, count: int,
                   prefix: str = "2") -> list[dict[str, Any]]:
    async def post(i: int) -> dict[str, Any]:
        resp = await client.post("/v1/entries",
                                 json=make_release(publisher, f"pkg{i % 5}", f"{prefix}.{i}"))
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    return list(await asyncio.gather(*(post(i) for i in range(count))))


async def error_of(resp: Any) -> str:
    code: str = (await resp.json())["error"]["code"]
    return code


async def until_ok(client: Client, path: str, timeout: float = 20) -> bytes:
    """`path`'s 200 body once the log answers again (the pool replaces dead connections
    as requests meet them: a few 503s first are expected, never a 500)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get(path)
        body = await resp.read()
        if resp.status == 200:
            return body
        assert resp.status == 503, (path, resp.status, body[:300])
        assert time.monotonic() < deadline, f"{path} still {resp.status}: {body[:300]!r}"
        await asyncio.sleep(0.2)


def requests_by_status(metrics: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("tlog_http_requests_total{"):
            status = line.split('status="')[1].split('"')[0]
            out[status] = out.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return out


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Tracebacks logged by the log's server (asyncpg's pool may say why it reconnects)."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.exc_info and r.name.startswith(("tlog", "aiohttp"))]


async def test_every_read_is_503_with_retry_after_while_postgres_is_down_and_recovers_after(
        aiohttp_client: Any, own_cluster: Cluster, log_signer: Signer, publisher: Signer,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = await serving(aiohttp_client, await new_database(own_cluster), log_signer,
                           tile_cache=tmp_path / "tiles")
    got = await receipts(client, publisher, TILE_WIDTH + 20)
    size = max(r["tree_size"] for r in got)
    assert TILE_WIDTH < size < 2 * TILE_WIDTH
    reads = [p.format(size=size, width=size - TILE_WIDTH, leaf=got[0]["leaf_hash"])
             for p in READS_NEEDING_THE_DATABASE]
    held = {path: await until_ok(client, path)
            for path in ["/checkpoint", "/tile/entries/000", "/tile/0/000"]}
    before = {path: await until_ok(client, path) for path in reads}
    await asyncio.to_thread(own_cluster.stop)
    try:
        for path in reads:
            resp = await client.get(path)
            assert resp.status == 503, (path, await resp.text())
            assert await error_of(resp) == "database_unavailable", path
            assert resp.headers["Retry-After"] == "5", path
        # What the server holds it still serves: the full tiles (memory and tile files) and
        # the last checkpoint it published.
        for path, body in held.items():
            resp = await client.get(path)
            assert resp.status == 200, (path, await resp.text())
            assert await resp.read() == body, path
        assert open_checkpoint(held["/checkpoint"], log_signer.verifier()).size == size
        # Writes: 503 with Retry-After, nothing acknowledged.
        resp = await client.post("/v1/entries", json=make_release(publisher, "pkg0", "9.9"))
        assert resp.status == 503, await resp.text()
        assert "Retry-After" in resp.headers
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["error"]["database"] == {"reachable": False}
    finally:
        await asyncio.to_thread(own_cluster.start, False)
    for path, body in before.items():
        assert await until_ok(client, path) == body, path
    await until_ok(client, "/readyz")
    assert await append(client, publisher, 3, prefix="3") > size
    statuses = requests_by_status(await (await client.get("/metrics")).text())
    assert "500" not in statuses and statuses["503"] >= len(reads) + 2
    assert tracebacks(caplog) == []


def test_a_client_hanging_up_mid_body_or_mid_answer_is_no_server_error(
        database_url: str, log_signer: Signer, publisher: Signer, tmp_path: Path) -> None:
    """2,000 hang-ups once made 2,000 tracebacks and 500s: a client's hang-up is its own
    doing, counted as a 400 at most, and logged as no error (a real `tlog serve`)."""
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path)
    try:
        asyncio.run(hang_ups(server.url, publisher))
        with urllib.request.urlopen(server.url + "/metrics") as resp:
            statuses = requests_by_status(resp.read().decode())
    finally:
        server.stop()
    assert "500" not in statuses
    assert statuses["400"] >= 2 * HANG_UPS  # seen, and blamed on the client
    output = server.output()
    assert "Traceback" not in output and " ERROR " not in output, output[-3000:]


HANG_UPS = 20


async def hang_ups(url: str, publisher: Signer) -> None:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(make_release(publisher, "pkg0", "5.0")).encode()
    head = (b"POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    chunked = (b"POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n10\r\n{{{")
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/entries", json=make_release(publisher, "pkg0",
                                                                         "1.0")) as resp:
            assert resp.status == 201
        for _ in range(HANG_UPS):
            for start in (head + body[:len(body) // 2], chunked):  # a body cut short
                _, writer = await asyncio.open_connection(host, int(port))
                writer.write(start)
                await writer.drain()
                await asyncio.sleep(0.02)  # the handler is reading the body by now
                writer.transport.abort()
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /tile/entries/000.p/1 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await reader.read(10)  # the start of the answer, then gone
            writer.transport.abort()
        await asyncio.sleep(0.3)
        async with session.post(url + "/v1/entries", json=make_release(publisher, "pkg0",
                                                                         "5.0")) as resp:
            assert resp.status == 201  # the entry sent in halves was never logged


async def set_read_only(url: str, on: bool) -> None:
    """default_transaction_read_only on the database, and its sessions ended so that the
    pool reconnects under the new setting."""
    name = url.split("@/")[1].split("?")[0]
    admin = await asyncpg.connect(url.replace(f"@/{name}?", "@/postgres?"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = '
                            f'{"on" if on else "off"}')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await admin.close()


async def test_readyz_is_not_ready_while_the_database_is_read_only_and_writes_are_503(
        client: Client, database_url: str, publisher: Signer,
        caplog: pytest.LogCaptureFixture) -> None:
    """The probe's read-only database: /readyz said ready while every write failed."""
    await append(client, publisher, 3)
    await set_read_only(database_url, True)
    try:
        deadline = time.monotonic() + 20
        while True:  # the first requests meet the ended sessions: 503s, never a 500
            resp = await client.get("/readyz")
            body = await resp.json()
            assert resp.status == 503, body
            assert resp.headers["Retry-After"] == "5"
            if body["error"]["database"].get("read_only"):
                break
            assert time.monotonic() < deadline, body
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["database"] == {"reachable": True, "read_only": True,
                                             "in_recovery": False}
        assert body["error"]["appends"] == "running"
        for _ in range(3):
            resp = await client.post("/v1/entries",
                                     json=make_release(publisher, "pkg0", "7.0"))
            assert resp.status == 503, await resp.text()
            assert "Retry-After" in resp.headers
        assert (await until_ok(client, "/v1/entries/0"))  # reads still work
    finally:
        await set_read_only(database_url, False)
    await until_ok(client, "/readyz")
    assert await append(client, publisher, 2, prefix="8") > 0
    statuses = requests_by_status(await (await client.get("/metrics")).text())
    assert "500" not in statuses
    assert tracebacks(caplog) == []
