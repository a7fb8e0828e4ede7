"""Backup and restore, as docs/BACKUP.md says to do it: pg_dump of the log's database,
pg_restore into a NEW database, `tlog serve` on it.

The log keeps the largest checkpoint it published in a file outside the database
(tlog.log.highwater; beside its key by default). A restore at least that new is served and
stays consistent with what clients saw (tlog-verify audit --full with their state from
before); an older one, or another log's database under the same key, is refused.
Real PostgreSQL 15 tools from the install the suite's cluster runs on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.audit_support import LiveLog, releases, write_log
from tests.conftest import _create_database
from tests.support import Server, free_port, make_release
from tlog.cli.pgcluster import Cluster, find_bindir
from verifier.errors import EXIT_FAILED, EXIT_OK
from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.note import Signer, generate_key

_restores = itertools.count()


@pytest.fixture
def signer() -> Signer:
    """A log key of this test alone: the published file belongs to one log."""
    return generate_key("backup.example.org/log")


def pg_dump(database_url: str, out: Path) -> Path:
    """The runbook's backup: one consistent snapshot, custom format."""
    subprocess.run([str(find_bindir() / "pg_dump"), "--format=custom", "--file", str(out),
                    "--dbname", database_url], check=True, capture_output=True)
    return out


def restore(cluster: Cluster, dump: Path) -> str:
    """The runbook's restore: a new, empty database, then pg_restore into it."""
    name = f"restored{os.getpid()}_{next(_restores)}"

    async def create() -> None:
        conn = await asyncpg.connect(cluster.url("postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    url = cluster.url(name)
    subprocess.run([str(find_bindir() / "pg_restore"), "--no-owner", "--exit-on-error",
                    "--dbname", url, str(dump)], check=True, capture_output=True)
    return url


def serve_refused(live: LiveLog, database_url: str, *extra: str
                  ) -> subprocess.CompletedProcess[str]:
    """`tlog serve` on `database_url` with the log's key, expected to exit by itself."""
    cmd = [sys.executable, "-m", "tlog", "serve", "--database-url", database_url,
           "--key", str(live.key_file), "--listen", f"127.0.0.1:{free_port()}",
           "--policy", "open", *extra]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"tlog serve kept running: {exc.stderr!r}") from exc


def audit(live: LiveLog, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", "audit", "--log", live.url, "--key",
         str(live.vkey_file), "--state", str(state), "--workers", "0", *args],
        capture_output=True, text=True, timeout=120)


def published(live: LiveLog) -> tuple[int, bytes]:
    """(size, root) of the log's published-checkpoint file (beside its key)."""
    cp = open_checkpoint((live.workdir / "log.published").read_bytes(),
                         live.signer.verifier())
    return cp.size, cp.root


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_entry(url: str, entry: dict[str, object]) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url + "/v1/entries", data=json.dumps(entry).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def live(database_url: str, signer: Signer, tmp_path: Path) -> Iterator[LiveLog]:
    log = LiveLog(database_url, signer, tmp_path)
    yield log
    log.stop()


def restore_empty(cluster: Cluster) -> str:
    """A new, migrated, empty database (to stage another log in)."""
    return asyncio.run(_create_database(cluster, f"other{os.getpid()}_{next(_restores)}"))


def test_a_restore_of_a_current_dump_resumes_consistent_with_what_clients_saw(
        live: LiveLog, pg_cluster: Cluster, publisher: Signer, tmp_path: Path) -> None:
    live.start().append(publisher, "a", 6)
    state = tmp_path / "client-state"  # what a client saw before the disaster
    assert audit(live, state).returncode == EXIT_OK
    seen = (state / "checkpoint").read_text()
    dump = pg_dump(live.database_url, tmp_path / "log.dump")
    live.stop()

    live.database_url = restore(pg_cluster, dump)
    live.start()
    run = audit(live, state, "--full")
    assert run.returncode == EXIT_OK, run.stdout + run.stderr
    live.append(publisher, "b", 4)  # appends continue on the restored database
    run = audit(live, state, "--full")
    assert run.returncode == EXIT_OK, run.stdout + run.stderr
    size = open_checkpoint(get(live.url + "/checkpoint")[1], live.signer.verifier()).size
    assert size > open_checkpoint(seen, live.signer.verifier()).size
    assert published(live)[0] == size


def test_a_restore_older_than_what_the_log_published_is_refused(
        live: LiveLog, pg_cluster: Cluster, publisher: Signer, tmp_path: Path) -> None:
    """The attack (or accident): serve an old backup, so the log signs new trees at sizes
    it already published with other entries, a fork for everyone who saw them."""
    live.start().append(publisher, "a", 3)
    current_url = live.database_url
    old = pg_dump(live.database_url, tmp_path / "old.dump")
    old_size = open_checkpoint(get(live.url + "/checkpoint")[1], live.signer.verifier()).size
    live.append(publisher, "b", 3)
    size, _ = published(live)
    assert size > old_size
    live.stop()

    old_url = restore(pg_cluster, old)
    run = serve_refused(live, old_url)
    assert run.returncode == EXIT_FAILED, run.stderr
    assert "restored from a backup older than what the log published" in run.stderr
    assert f"published size {size}" in run.stderr and "--allow-behind-published" in run.stderr
    assert published(live)[0] == size, "the refused start moved the published file"

    # Reads only, with the override: the old tree is served, nothing is ever signed.
    reader = start_reader(live, old_url, tmp_path)
    try:
        status, note = get(reader.url + "/checkpoint")
        assert status == 200
        assert open_checkpoint(note, live.signer.verifier()).size == old_size
        status, body = post_entry(reader.url, make_release(publisher, "c-pkg", "9.9"))
        assert status == 503 and "behind" in json.dumps(body), body
        assert get(reader.url + "/readyz")[0] == 503
    finally:
        reader.stop()
    assert "CRITICAL" in reader.output() and "appends stopped" in reader.output()
    assert published(live)[0] == size

    # The way out: restore a backup holding everything published; appends continue.
    live.database_url = restore(pg_cluster, pg_dump(current_url, tmp_path / "new.dump"))
    live.start().append(publisher, "d", 2)
    assert published(live)[0] > size


def start_reader(live: LiveLog, database_url: str, workdir: Path) -> Server:
    """`tlog serve --allow-behind-published`, ready once /checkpoint answers (/readyz says
    not ready: appends are stopped)."""
    port = free_port()
    log_path = workdir / f"reader-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlog", "serve", "--database-url", database_url, "--key",
         str(live.key_file), "--listen", f"127.0.0.1:{port}", "--policy", "open",
         "--allow-behind-published"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if get(server.url + "/checkpoint")[0] == 200:
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise AssertionError(f"the reader did not start:\n{server.output()}")


@pytest.mark.parametrize("extra", [0, 3], ids=["same-size", "larger"])
def test_a_database_of_another_log_under_the_same_key_is_refused(
        live: LiveLog, database_url: str, pg_cluster: Cluster, publisher: Signer,
        extra: int) -> None:
    """Another log's database (a staging log run with the production key, say) signs
    with our key and self-checks fine; only what we published tells it apart."""
    live.start().append(publisher, "a", 3)
    size, _ = published(live)
    live.stop()
    other = restore_empty(pg_cluster)
    write_log(other, live.signer, releases(publisher, size + extra, tag="other"))
    run = serve_refused(live, other)
    assert run.returncode == EXIT_FAILED, run.stderr
    assert "another log's database" in run.stderr
    assert published(live)[0] == size
