"""The reliability scenarios, shared by tests/reliability and bench/soak.py: a real `tlog
serve` (or several) on a real PostgreSQL, the load of tests.reliability.load, one kind of
trouble made while the load runs, and the invariant check once the load has finished.

Everything that blocks (starting processes, PostgreSQL commands) runs in a thread, so the
load clients on the event loop keep submitting through the trouble.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.reliability.invariants import Report, check
from tests.reliability.load import Load, Stats, Submission
from tests.support import Server, free_port, start_server, write_key
from tlog.cli.pgcluster import Cluster
from tlog.store import migrate
from verifier.protocol.note import Signer, generate_key


@dataclass
class Outcome:
    """One scenario run: what was done to the log, what the clients saw, what held."""

    scenario: str
    disruptions: int  # kills, crashes or failures survived
    stats: Stats
    submitted: list[Submission]  # with every receipt the log returned
    report: Report

    @property
    def acknowledged(self) -> int:
        return sum(s.acknowledged for s in self.submitted)

    @property
    def found_on_retry(self) -> int:
        """Submissions the log had appended although the client saw the attempt fail."""
        return sum(s.found_on_retry for s in self.submitted)


class LogUnderTest:
    """`tlog serve` processes on one database; `urls` is the list the load clients use."""

    def __init__(self, database_url: str, signer: Signer, workdir: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.database_url = database_url
        self.signer = signer
        self.workdir = workdir
        self.env = dict(env or {})
        self.key_file = write_key(workdir / "log.key", signer)
        self.vkey_file = workdir / "log.vkey"
        self.vkey_file.write_text(signer.verifier().text() + "\n")
        self.servers: list[Server | None] = []
        self.ports: list[int] = []
        self.urls: list[str] = []

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            port = free_port()
            self.ports.append(port)
            self.servers.append(None)
            self.urls.append(f"http://127.0.0.1:{port}")
            self.restart(len(self.ports) - 1)

    def restart(self, i: int) -> None:
        """(Re)start server i on its port, so the clients find it where it was."""
        self.servers[i] = start_server(self.database_url, self.key_file, self.workdir,
                                       env=self.env, port=self.ports[i])

    def kill(self, i: int) -> None:
        server = self.servers[i]
        assert server is not None and server.proc.poll() is None, f"server {i} is not running"
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        self.servers[i] = None

    def stop(self) -> None:
        for server in self.servers:
            if server is not None:
                server.stop()

    def output(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.workdir.glob("serve-*.log")))

    def live_url(self) -> str:
        return next(url for url, s in zip(self.urls, self.servers, strict=True) if s is not None)


Action = Callable[[LogUnderTest, Load], Awaitable[int]]


async def run(name: str, log: LogUnderTest, action: Action, *, clients: int = 8,
              disconnect_rate: float = 0.0, seed: int | None = None) -> Outcome:
    """Load the log, run `action` (it returns how many disruptions it made), let every
    client finish its submission, then check the invariants."""
    load = Load(log.urls, generate_key(f"{name}-publisher"), name, clients,
                disconnect_rate=disconnect_rate, seed=seed)
    clients_done = asyncio.create_task(load.run())
    try:
        await load.until(clients)  # the log is taking load before the trouble starts
        disruptions = await action(log, load)
    finally:
        load.stop()
        await clients_done
    report = await asyncio.to_thread(check, log.database_url, log.live_url(),
                                     log.signer.verifier(), log.vkey_file, load.submissions,
                                     log.workdir)
    return Outcome(name, disruptions, load.stats, load.submissions, report)


async def progress(load: Load, more: int, timeout: float = 60) -> None:
    """Wait until `more` further submissions are acknowledged: the log is working again."""
    await load.until(load.acknowledged + more, timeout)


def kill_serve(kills: int, rng: random.Random, pause: float = 0.3) -> Action:
    """SIGKILL the (single) server at random moments under load, restarting it each time."""

    async def act(log: LogUnderTest, load: Load) -> int:
        for _ in range(kills):
            await progress(load, 2)
            await asyncio.sleep(rng.uniform(0.0, pause))
            log.kill(0)
            await asyncio.to_thread(log.restart, 0)
        await progress(load, load.clients)
        return kills

    return act


def crash_postgres(cluster: Cluster, crashes: int, rng: random.Random,
                   outage: float = 1.0) -> Action:
    """Crash PostgreSQL (immediate stop: no checkpoint, as if killed) and start it again,
    with tlog left running: it must find its database again by itself."""

    async def act(log: LogUnderTest, load: Load) -> int:
        for _ in range(crashes):
            await progress(load, 2)
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            await asyncio.to_thread(cluster.stop, "immediate")
            await asyncio.sleep(outage)
            await asyncio.to_thread(cluster.start)
            await progress(load, load.clients, timeout=60)
        return crashes

    return act


def kill_one_of(rng: random.Random, run_for: float = 1.0) -> Action:
    """With several servers on one database, SIGKILL one of them under load; the clients
    move on to the others."""

    async def act(log: LogUnderTest, load: Load) -> int:
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        log.kill(rng.randrange(len(log.servers)))
        await progress(load, load.clients * 2)
        await asyncio.sleep(run_for)
        return 1

    return act


def keep_loading(acknowledged: int) -> Action:
    """No trouble of our own: the server's (faults, failing COMMITs) or the clients'."""

    async def act(log: LogUnderTest, load: Load) -> int:
        await progress(load, acknowledged, timeout=120)
        return 0

    return act


def keep_loading_until(done: Callable[[LogUnderTest, Load], bool], acknowledged: int,
                       timeout: float = 120) -> Action:
    """Load until `acknowledged` more are acknowledged and `done` says what had to happen
    did (a random fault fired, say), so that a test does not depend on luck."""

    async def act(log: LogUnderTest, load: Load) -> int:
        await progress(load, acknowledged, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(log, load):
            if loop.time() > deadline:
                raise TimeoutError("what the test waits for never happened")
            await progress(load, load.clients, timeout)
        return 0

    return act


# A COMMIT that PostgreSQL itself refuses: a deferred constraint trigger runs at COMMIT and
# fails a share of the append transactions (each writes one checkpoint).
FAILING_COMMIT_SQL = """
CREATE FUNCTION chaos_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF random() < {probability} THEN
    RAISE EXCEPTION 'chaos: COMMIT refused';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER chaos_fail_commit AFTER INSERT ON checkpoints
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION chaos_fail_commit();
"""
HEAL_COMMIT_SQL = ("DROP TRIGGER chaos_fail_commit ON checkpoints; "
                   "DROP FUNCTION chaos_fail_commit();")


def refuse_commits(probability: float, acknowledged: int) -> Action:
    """PostgreSQL refuses a share of the COMMITs while `acknowledged` more are acknowledged
    (installed once the log has started: publishing its first checkpoint must succeed)."""

    async def act(log: LogUnderTest, load: Load) -> int:
        await sql(log.database_url, FAILING_COMMIT_SQL.format(probability=probability))
        try:
            await progress(load, acknowledged, timeout=120)
        finally:
            await sql(log.database_url, HEAL_COMMIT_SQL)
        return log.output().count("chaos: COMMIT refused")

    return act


async def sql(database_url: str, statements: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(statements)
    finally:
        await conn.close()


@contextmanager
def separate_cluster() -> Iterator[tuple[Cluster, str]]:
    """A PostgreSQL cluster of its own (never the session's: it will be crashed) with one
    migrated database; yields the cluster and the database URL."""
    # Not under pytest's tmp_path: as root, the postgres user must reach the directory.
    home = Path(tempfile.mkdtemp(prefix="tlog-chaos-pg-"))
    home.chmod(0o755)
    cluster = Cluster(home)
    cluster.init()
    cluster.start(fsync=os.environ.get("TLOG_TEST_FSYNC", "on") != "off")
    try:
        asyncio.run(_create_database(cluster.url("postgres")))
        yield cluster, cluster.url("chaos")
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(home, ignore_errors=True)


async def _create_database(admin_url: str) -> None:
    await sql(admin_url, 'CREATE DATABASE "chaos"')
    conn = await asyncpg.connect(admin_url.replace("/postgres?", "/chaos?"))
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()


def count_in_output(log: LogUnderTest, text: str) -> int:
    return log.output().count(text)
