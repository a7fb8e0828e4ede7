"""Fixtures: one throwaway PostgreSQL cluster per test session, a fresh database per test.

The cluster is tlog's own embedded one (tlog.cli.pgcluster), started in a temporary
directory and stopped at the end; nothing needs to be running beforehand.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tlog.cli.pgcluster import Cluster
from tlog.config import Config
from tlog.http.app import create_app
from tlog.store import migrate
from verifier.protocol.note import Signer, generate_key

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
VECTORS = REPO / "tests" / "vectors"
_db_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    home = Path(tempfile.mkdtemp(prefix="tlog-test-pg-"))
    home.chmod(0o755)  # the postgres user must reach it when the suite runs as root
    cluster = Cluster(home)
    cluster.init()
    cluster.start(fsync=os.environ.get("TLOG_TEST_FSYNC", "on") != "off")
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")  # the data is deleted next: no checkpoint needed
        shutil.rmtree(home, ignore_errors=True)


async def _create_database(cluster: Cluster, name: str) -> str:
    conn = await asyncpg.connect(cluster.url("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = cluster.url(name)
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    return url


@pytest.fixture
def database_url(pg_cluster: Cluster) -> str:
    """A new, migrated database for this test alone."""
    name = f"t{os.getpid()}_{next(_db_numbers)}"
    return asyncio.run(_create_database(pg_cluster, name))


@pytest.fixture(scope="session")
def log_signer() -> Signer:
    return generate_key("log.example.org/test")


@pytest.fixture
def publisher() -> Signer:
    return generate_key("acme-release-bot")


@pytest.fixture
async def client(aiohttp_client: object, database_url: str,
                 log_signer: Signer) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(Config(database_url=database_url, signer=log_signer, policy="open",
                            host="127.0.0.1", port=0, max_wait=0.002))
    c: TestClient[web.Request, web.Application] = await aiohttp_client(app)  # type: ignore[operator]
    yield c
