"""The embedded PostgreSQL cluster is private: no other local account gets in, and no
connection gets in without the superuser's password (a superuser runs programs as the
server's OS user with COPY ... TO PROGRAM)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tlog.cli.pgcluster import PORT, SERVER_USER, Cluster, find_bindir

OTHER_USER = "nobody"


def _connect_as_other_user(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    """psql as another local account, even holding the password, from a neutral directory."""
    return subprocess.run(
        ["runuser", "-u", OTHER_USER, "--", str(find_bindir() / "psql"), "-X", "-w",
         "-d", cluster.url(), "-c", "COPY (SELECT 1) TO PROGRAM 'id'"],
        capture_output=True, text=True, timeout=30, check=False, cwd="/")


def test_other_local_users_cannot_connect_to_the_cluster(pg_cluster: Cluster) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another local user (runuser)")
    proc = _connect_as_other_user(pg_cluster)
    assert proc.returncode != 0
    assert ".s.PGSQL" in proc.stderr and "Permission denied" in proc.stderr, proc.stderr
    for d in (pg_cluster.home, pg_cluster.socket_dir):
        assert d.stat().st_mode & 0o077 == 0, d
    assert pg_cluster.password_file.stat().st_mode & 0o777 == 0o600


async def _refused_without_password(cluster: Cluster) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://{SERVER_USER}@/postgres"
                              f"?host={cluster.socket_dir}&port={PORT}")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://{SERVER_USER}:wrong@/postgres"
                              f"?host={cluster.socket_dir}&port={PORT}")
    conn = await asyncpg.connect(cluster.url())
    try:
        rules = await conn.fetch("SELECT type, auth_method FROM pg_hba_file_rules")
        listen = await conn.fetchval("SHOW listen_addresses")
    finally:
        await conn.close()
    assert rules and {r["auth_method"] for r in rules} == {"scram-sha-256"}
    assert listen == ""


def test_a_connection_without_the_password_is_refused(pg_cluster: Cluster) -> None:
    asyncio.run(_refused_without_password(pg_cluster))


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tlog-test-pgc-"))
    d.chmod(0o755)  # the postgres user must reach it when the suite runs as root
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_cluster_made_trusting_every_local_user_is_locked_before_it_starts(
        scratch: Path) -> None:
    """A cluster an older tlog made with --auth=trust gets a password on its next start."""
    cluster = Cluster(scratch / "pg")
    cluster._prepare_dirs()
    cluster._run_as_server([str(find_bindir() / "initdb"), "-D", str(cluster.data_dir), "-U",
                            SERVER_USER, "--auth=trust", "--no-instructions"], "initdb")
    assert not cluster.password_file.exists()
    cluster.start(fsync=False)
    try:
        asyncio.run(_refused_without_password(cluster))
    finally:
        cluster.stop(mode="immediate")
