"""A primary with a streaming-replication hot standby, and PgBouncer, on this machine.

Both clusters are tlog.cli.pgcluster Clusters (Unix sockets in their own homes, the same
superuser password). initdb's defaults already allow replication: wal_level replica,
max_wal_senders 10, hot_standby on, and pg_hba's `local replication all` line. As root,
every server program runs as `postgres` (PgBouncer refuses to run as root, too).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tlog.cli.pgcluster import PORT, SERVER_USER, Cluster, find_bindir


def as_server(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def give_to_server(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SERVER_USER, SERVER_USER)


@dataclass
class Replicated:
    primary: Cluster
    standby: Cluster


@contextmanager
def replicated_clusters() -> Iterator[Replicated]:
    """A fresh primary and a hot standby made from it by `pg_basebackup -R`."""
    root = Path(tempfile.mkdtemp(prefix="tlog-test-standby-"))
    root.chmod(0o755)  # the postgres user must reach it when the suite runs as root
    primary, standby = Cluster(root / "primary"), Cluster(root / "standby")
    primary.init()
    try:
        primary.start(fsync=False)
        standby.home.mkdir(mode=0o700)
        give_to_server(standby.home)
        env = {**os.environ, "PGPASSWORD": primary.password()}
        # -R writes standby.signal and primary_conninfo (with the password from the
        # environment) into the copy: started, it follows the primary.
        subprocess.run(as_server([
            str(find_bindir() / "pg_basebackup"), "-D", str(standby.data_dir), "-R",
            "-X", "stream", "-c", "fast", "-h", str(primary.socket_dir), "-p", str(PORT),
            "-U", SERVER_USER]), env=env, check=True, capture_output=True)
        shutil.copy(primary.password_file, standby.password_file)
        give_to_server(standby.password_file)
        standby.start(fsync=False)
        yield Replicated(primary, standby)
    finally:
        standby.stop(mode="immediate")
        primary.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


async def wait_replayed(pair: Replicated, timeout: float = 20) -> None:
    """Until the standby has replayed everything the primary wrote so far."""
    conn = await asyncpg.connect(pair.primary.url())
    try:
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()")
    finally:
        await conn.close()
    conn = await asyncpg.connect(pair.standby.url())
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT pg_last_wal_replay_lsn() < $1::pg_lsn", lsn):
            if time.monotonic() > deadline:
                raise TimeoutError("the standby did not catch up")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def run_sql(url: str, query: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


@dataclass
class Bouncer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, cluster: Cluster, database: str) -> str:
        base = cluster.url(database).split("@")[0]  # postgresql://postgres:PASSWORD
        return f"{base}@127.0.0.1:{self.port}/{database}"


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None)


@contextmanager
def pgbouncer(cluster: Cluster, port: int) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode on 127.0.0.1:`port`, in front of `cluster`'s socket,
    authenticating clients (SCRAM) with the cluster's superuser password."""
    binary = find_pgbouncer()
    assert binary is not None
    home = Path(tempfile.mkdtemp(prefix="tlog-test-pgbouncer-"))
    home.chmod(0o700)
    users = home / "userlist.txt"
    users.write_text(f'"{SERVER_USER}" "{cluster.password()}"\n')
    users.chmod(0o600)
    ini = home / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={cluster.socket_dir} port={PORT}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {users}\n"
        "pool_mode = transaction\ndefault_pool_size = 8\nmax_client_conn = 200\n"
        f"logfile = {home / 'pgbouncer.log'}\npidfile = {home / 'pgbouncer.pid'}\n")
    for path in (home, users, ini):
        give_to_server(path)
    proc = subprocess.Popen(as_server([binary, str(ini)]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    bouncer = Bouncer(proc, port, home / "pgbouncer.log")
    try:
        _wait_listening(bouncer)
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)


def _wait_listening(bouncer: Bouncer, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bouncer.proc.poll() is not None:
            log = bouncer.log.read_text() if bouncer.log.exists() else ""
            raise RuntimeError(f"pgbouncer exited {bouncer.proc.returncode}: {log}")
        try:
            socket.create_connection(("127.0.0.1", bouncer.port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("pgbouncer did not listen")
