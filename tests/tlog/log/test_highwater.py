"""The published high-water mark (tlog.log.highwater), and the witnesses as its second
detector: what the log published is known outside its database, so a database that is
behind it is caught. Real PostgreSQL, real files, real HTTP witnesses (tests/alt_witness)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import make_release, write_key
from tests.test_backup import pg_dump, restore
from tests.tlog.log.test_witness import (
    INTERVAL,
    Setup,
    append,
    make_witness,
    policy_text,
    wait_published,
    witnessed_config,
)
from tlog.cli.pgcluster import Cluster
from tlog.config import Config, from_options
from tlog.http.app import create_app
from tlog.log.highwater import HighWater, HighWaterError
from tlog.log.startup import StartupError
from tlog.store.reader import StoredCheckpoint
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.policy import parse_policy

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def witnessed(log_signer: Signer) -> AsyncIterator[Setup]:
    """Two witnesses, both in the quorum (as tests/tlog/log/test_witness.py's setup)."""
    witnesses = [make_witness(log_signer, f"witness{i}.example") for i in (1, 2)]
    for w in witnesses:
        await w.start()
    text = policy_text(log_signer, witnesses)
    yield Setup(log_signer, witnesses, parse_policy(text), text)
    for w in witnesses:
        await w.stop()


def checkpoint(signer: Signer, size: int, fill: int = 1) -> StoredCheckpoint:
    root = bytes([fill]) * 32
    return StoredCheckpoint(size, root, sign_checkpoint(Checkpoint(signer.name, size, root),
                                                        signer))


async def test_the_published_file_never_goes_backwards(log_signer: Signer,
                                                       tmp_path: Path) -> None:
    """Two servers of one log share the file: the one whose batch committed first may
    write last, and must not lower what the other already recorded."""
    path = tmp_path / "log.published"
    first, second = HighWater(path, log_signer.verifier()), HighWater(path, log_signer.verifier())
    await first.record(checkpoint(log_signer, 9))
    await second.record(checkpoint(log_signer, 5))
    cp = HighWater(path, log_signer.verifier()).read()
    assert cp is not None and cp.size == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.published", "log.published.lock"]
    with pytest.raises(HighWaterError, match="another root for size 9"):
        await HighWater(path, log_signer.verifier()).record(checkpoint(log_signer, 9, fill=2))


async def test_a_published_file_of_another_log_is_refused(log_signer: Signer,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "log.published"
    await HighWater(path, generate_key("other.example/log").verifier()).record(
        checkpoint(generate_key("other.example/log"), 3))
    with pytest.raises(HighWaterError, match="does not hold a checkpoint of this log"):
        HighWater(path, log_signer.verifier()).read()
    path.write_text("size 1000000\n")  # edited by hand
    with pytest.raises(HighWaterError, match="does not hold a checkpoint of this log"):
        HighWater(path, log_signer.verifier()).read()


def open_config(database_url: str, signer: Signer, published: Path) -> Config:
    return Config(database_url=database_url, signer=signer, policy="open", host="127.0.0.1",
                  port=0, max_wait=0.002, published_file=published)


async def test_each_acknowledged_checkpoint_is_in_the_published_file_before_the_reply(
        aiohttp_client: ClientFactory, database_url: str, log_signer: Signer,
        publisher: Signer, tmp_path: Path) -> None:
    path = tmp_path / "log.published"
    log = await aiohttp_client(create_app(open_config(database_url, log_signer, path)))
    for version in ("1", "2", "3"):
        size = await append(log, publisher, version)
        cp = HighWater(path, log_signer.verifier()).read()
        assert cp is not None and cp.size == size


async def test_appends_stop_when_the_published_file_cannot_be_written(
        aiohttp_client: ClientFactory, database_url: str, log_signer: Signer,
        publisher: Signer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each batch appended without its record would widen what readers saw beyond the
    file: the first failure stops appends (the operator fixes the disk and restarts)."""
    home = tmp_path / "state"
    home.mkdir()
    log = await aiohttp_client(create_app(open_config(database_url, log_signer,
                                                      home / "log.published")))
    await append(log, publisher, "1")
    for name in os.listdir(home):
        os.unlink(home / name)
    home.rmdir()
    home.write_text("not a directory")
    resp = await log.post("/v1/entries", json=make_release(publisher, "com.acme", "2"))
    assert resp.status == 503
    resp = await log.post("/v1/entries", json=make_release(publisher, "com.acme", "3"))
    assert resp.status == 503 and "couldn't record the published checkpoint" in await resp.text()
    assert any(r.levelname == "CRITICAL" for r in caplog.records)


async def test_witnesses_catch_a_restore_older_than_what_they_cosigned(
        aiohttp_client: ClientFactory, database_url: str, witnessed: Setup, publisher: Signer,
        pg_cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The second detector, for a log run without its published file (a lost disk, a new
    machine): a witness that cosigned more than the restored database holds answers 409
    with its size, and the log stops appending rather than sign a fork of what it saw."""
    log = await aiohttp_client(create_app(witnessed_config(database_url, witnessed)))
    await wait_published(log, await append(log, publisher, "1"))
    dump = await asyncio.to_thread(pg_dump, database_url, tmp_path / "old.dump")
    await wait_published(log, await append(log, publisher, "2"))
    await log.close()

    restored = await asyncio.to_thread(restore, pg_cluster, dump)
    caplog.set_level(logging.INFO)
    log = await aiohttp_client(create_app(witnessed_config(restored, witnessed)))
    for _ in range(int(10 / INTERVAL)):
        resp = await log.get("/readyz")
        if resp.status == 503 and "published more than it holds" in await resp.text():
            break
        await asyncio.sleep(INTERVAL)
    else:
        raise AssertionError(f"appends were not stopped: {await resp.text()}")
    resp = await log.post("/v1/entries", json=make_release(publisher, "com.acme", "3"))
    assert resp.status == 503 and "published more than it holds" in await resp.text()
    assert any(r.levelname == "CRITICAL" and "appends stopped" in r.getMessage()
               for r in caplog.records)


def test_the_published_file_defaults_to_beside_the_log_key(
        log_signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A default the operator already keeps: the log key's directory, not the database's."""
    key = write_key(tmp_path / "prod.key", log_signer)
    monkeypatch.delenv("TLOG_PUBLISHED_FILE", raising=False)
    config = from_options("postgresql:///x", str(key), None, policy="open")
    assert config.published_file == tmp_path / "prod.published"
    monkeypatch.setenv("TLOG_PUBLISHED_FILE", str(tmp_path / "state" / "p"))
    assert from_options("postgresql:///x", str(key), None,
                        policy="open").published_file == tmp_path / "state" / "p"
    given = from_options("postgresql:///x", str(key), None, policy="open",
                         published_file=str(tmp_path / "given"))
    assert given.published_file == tmp_path / "given"


async def test_serve_refuses_to_start_without_a_published_file_it_can_write(
        aiohttp_client: ClientFactory, database_url: str, log_signer: Signer,
        tmp_path: Path) -> None:
    """Found at startup, not at the first append: without the file, a restore of an old
    backup would go unnoticed."""
    (tmp_path / "ro").write_text("a file where the directory should be")
    config = open_config(database_url, log_signer, tmp_path / "ro" / "log.published")
    with pytest.raises(StartupError, match="--published-file PATH"):
        await aiohttp_client(create_app(config))
