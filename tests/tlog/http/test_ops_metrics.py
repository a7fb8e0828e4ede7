"""The metrics the alerts of deploy/prometheus/alerts.yml stand on, against a real PostgreSQL:
submissions waiting while a batch cannot commit, when a checkpoint was last signed, and
whether the database answers the periodic check."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import make_release
from tlog.cli.pgcluster import Cluster
from tlog.config import Config
from tlog.http import app as app_module
from tlog.store.postgres import APPEND_LOCK
from verifier.protocol.note import Signer

Client = TestClient[web.Request, web.Application]


async def scrape(client: Client) -> dict[str, float]:
    """The unlabelled samples of /metrics, by name."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    samples = {}
    for line in (await resp.text()).splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split(" ")
            samples[name] = float(value)
    return samples


async def until(client: Client, name: str, want: Any, timeout: float = 10) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(client)
        if want(samples[name]):
            return samples
        assert time.monotonic() < deadline, f"{name} stayed {samples[name]}"
        await asyncio.sleep(0.05)


async def test_a_stalled_append_shows_submissions_waiting_and_no_new_checkpoint(
        client: Client, database_url: str, publisher: Signer) -> None:
    before = await scrape(client)
    assert before["tlog_append_waiting"] == 0
    assert before["tlog_checkpoint_timestamp_seconds"] == 0  # none signed since it started
    first = await client.post("/v1/entries", json=make_release(publisher, "app", "1.0"))
    assert first.status == 201
    now = await scrape(client)
    signed, size = now["tlog_checkpoint_timestamp_seconds"], now["tlog_tree_size"]
    assert size == 2  # the entry and the batch's map root
    assert abs(signed - time.time()) < 5
    # Another process holding the append lock (a stuck transaction, a slow disk): the batch
    # taken waits for it, and what comes after queues.
    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    posts = [asyncio.ensure_future(client.post(
        "/v1/entries", json=make_release(publisher, "app", "2.0")))]
    while not await blocker.fetchval(  # its batch taken, waiting for the lock
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
        await asyncio.sleep(0.02)
    posts += [asyncio.ensure_future(client.post(
        "/v1/entries", json=make_release(publisher, "app", f"2.{i}"))) for i in range(1, 4)]
    try:
        stalled = await until(client, "tlog_append_waiting", lambda v: v == 3)
        assert stalled["tlog_checkpoint_timestamp_seconds"] == signed
        assert stalled["tlog_tree_size"] == size
    finally:
        await tx.rollback()
        await blocker.close()
    assert [r.status for r in await asyncio.gather(*posts)] == [201] * 4
    after = await until(client, "tlog_append_waiting", lambda v: v == 0)
    assert after["tlog_checkpoint_timestamp_seconds"] > signed
    assert after["tlog_tree_size"] > size


async def test_database_up_is_0_once_the_database_is_gone(
        aiohttp_client: Any, database_url: str, pg_cluster: Cluster, log_signer: Signer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "WATCH_EVERY", 0.05)
    app = app_module.create_app(Config(database_url=database_url, signer=log_signer,
                                       policy="open", host="127.0.0.1", port=0))
    client: Client = await aiohttp_client(app)
    await until(client, "tlog_database_up", lambda v: v == 1)
    conn = await asyncpg.connect(database_url)
    name = await conn.fetchval("SELECT current_database()")
    await conn.close()
    admin = await asyncpg.connect(pg_cluster.url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    await until(client, "tlog_database_up", lambda v: v == 0)
    assert (await client.get("/metrics")).status == 200  # what says so needs no database
