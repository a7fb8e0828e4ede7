"""What an idle log, a policy change, and hostile or slow witnesses do to publication
(tlog.log.witness): the failures a review found, each stopped by a test.

Real PostgreSQL, real HTTP witnesses (tests/alt_witness.py) and hand-written hostile ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.alt_witness import Running, WitnessKey
from tests.support import free_port
from tests.tlog.log.test_witness import (
    INTERVAL,
    ClientFactory,
    Setup,
    append,
    make_witness,
    policy_text,
    published,
    readyz,
    stored_cosigners,
    wait_published,
    witnessed_config,
)
from tests.tlog.sizes import leaves
from tlog.cli.pgcluster import Cluster
from tlog.http.app import create_app
from tlog.log.witness_client import WitnessError, add_checkpoint
from tlog.store import migrate
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.note import Signer, parse_note
from verifier.protocol.policy import PolicyTrust, parse_policy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class Hostile:
    """A witness at `url` answering every add-checkpoint with `handler`."""

    url: str
    key: WitnessKey
    released: asyncio.Event


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Handler], Awaitable[Hostile]]]:
    runners: list[web.AppRunner] = []
    released = asyncio.Event()

    async def serve(handler: Handler) -> Hostile:
        app = web.Application()
        app.router.add_post("/add-checkpoint", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return Hostile(f"http://127.0.0.1:{port}", WitnessKey.generate("hostile.example"),
                       released)

    yield serve
    released.set()
    for runner in runners:
        await runner.cleanup()


async def started(log_signer: Signer, *names: str) -> list[Running]:
    witnesses = [make_witness(log_signer, name) for name in names]
    for w in witnesses:
        await w.start()
    return witnesses


def setup_of(log_signer: Signer, witnesses: list[Running], quorum: str,
             extra: str = "") -> Setup:
    """A Setup whose policy names `witnesses` (w1..wn) in group g of `quorum`, plus the
    `extra` policy lines (more witnesses, inserted before the group)."""
    text = policy_text(log_signer, witnesses, quorum)
    if extra:
        head, _, tail = text.partition("group ")
        members = " ".join(line.split()[1] for line in extra.splitlines())
        tail = tail.replace("\nquorum", f" {members}\nquorum", 1)
        text = f"{head}{extra}group {tail}"
    return Setup(log_signer, witnesses, parse_policy(text), text)


async def test_an_idle_log_stays_fresh_for_clients_with_a_max_age(
        aiohttp_client: ClientFactory, database_url: str, log_signer: Signer,
        publisher: Signer) -> None:
    """A freeze is seen by clients through witnessed time (--max-age); an honest log that
    simply has no appends must not look frozen. Its witnesses cosign the same size again
    every --witness-refresh, and /checkpoint serves the freshest note, while covering
    keeps the first (a publisher's cooldown counts from the earliest witnessed time)."""
    witnesses = await started(log_signer, "witness1.example", "witness2.example")
    s = setup_of(log_signer, witnesses, "all")
    config = dataclasses.replace(witnessed_config(database_url, s), witness_refresh=1.0)
    log = await aiohttp_client(create_app(config))
    first = await wait_published(log, await append(log, publisher, "1"))
    await asyncio.sleep(4.5)  # idle: no append, 20 intervals
    now = int(time.time())
    _, note = await published(log) or (0, "")
    trust = PolicyTrust.for_log(s.policy, now=now, max_age=3)
    assert trust.latest(note).size == leaves(1)  # not "stale"
    with pytest.raises(Exception, match="stale"):
        trust.latest(first)  # what the log served before the fix, forever
    covering = await log.get("/v1/checkpoints/cosigned?covering=0")
    assert covering.status == 200
    assert await covering.text() == first, "covering must keep the earliest cosigned note"
    assert covering.headers["Cache-Control"] == "public, max-age=10"
    # /v1/checkpoints/2 (the release and its map root) holds the newer cosignatures, one
    # line per witness.
    at = await (await log.get(f"/v1/checkpoints/{leaves(1)}")).text()
    times = PolicyTrust.for_log(s.policy).witnessed(at).times
    assert len(times) == 2 and min(times.values()) >= now - 3
    for w in witnesses:
        await w.stop()


async def test_a_stricter_policy_is_never_served_a_note_it_fails(
        aiohttp_client: ClientFactory, database_url: str, log_signer: Signer,
        publisher: Signer) -> None:
    """After the operator requires more witnesses, /checkpoint and covering must not keep
    serving a note the new policy's clients reject; the log publishes again under the new
    policy from the cosignatures it stored, even while idle and with witnesses down."""
    w1, w2 = await started(log_signer, "witness1.example", "witness2.example")
    loose = setup_of(log_signer, [w1, w2], "any")
    a = await aiohttp_client(create_app(witnessed_config(database_url, loose)))
    await wait_published(a, await append(a, publisher, "1"))
    deadline = time.monotonic() + 10
    while len(await stored_cosigners(database_url, leaves(1))) < 2:  # both within a round
        assert time.monotonic() < deadline
        await asyncio.sleep(INTERVAL)
    await a.close()
    await w1.stop()
    await w2.stop()
    # Both cosignatures are stored: the stricter "all" policy is met without asking anyone.
    strict = setup_of(log_signer, [w1, w2], "all")
    b = await aiohttp_client(create_app(witnessed_config(database_url, strict)))
    note = await wait_published(b, leaves(1))
    assert set(PolicyTrust.for_log(strict.policy).witnessed(note).times) == {"w1", "w2"}
    await b.close()
    # A third witness, never reached: nothing stored meets this policy, so nothing served.
    w3 = make_witness(log_signer, "witness3.example")
    stricter = setup_of(log_signer, [w1, w2, w3], "all")
    c = await aiohttp_client(create_app(witnessed_config(database_url, stricter)))
    await asyncio.sleep(5 * INTERVAL)
    resp = await c.get("/checkpoint")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "not_ready"
    covering = await c.get("/v1/checkpoints/cosigned?covering=0")
    assert covering.status == 404
    await w3.start()
    for w in (w1, w2):
        await w.start()
    note = await wait_published(c, leaves(1))
    assert set(PolicyTrust.for_log(stricter.policy).witnessed(note).times) == {
        "w1", "w2", "w3"}
    for w in (w1, w2, w3):
        await w.stop()


@pytest.mark.parametrize(("said", "expected"), [
    (b"9999999999999999999\n", "is not below 2**63"),
    (b"99999999999999999999\n", "malformed size")])
async def test_a_hostile_witness_409_with_a_size_beyond_any_tree_does_not_stop_publication(
        aiohttp_client: ClientFactory, database_url: str, log_signer: Signer,
        publisher: Signer, hostile: Callable[[Handler], Awaitable[Hostile]],
        caplog: pytest.LogCaptureFixture, said: bytes, expected: str) -> None:
    """A witness the quorum does not need answers 409 with a size past 2^63 - 1: it is that
    witness's error, and the log publishes with the others all the same (this size once
    reached the database and aborted the whole round before publication)."""
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=409, body=said,
                            headers={"Content-Type": "text/x.tlog.size"})

    bad = await hostile(handler)
    [good] = await started(log_signer, "good.example")
    s = setup_of(log_signer, [good], "any",
                 extra=f"witness w9 {bad.key.vkey()} {bad.url}\n")
    log = await aiohttp_client(create_app(witnessed_config(database_url, s)))
    await wait_published(log, await append(log, publisher, "1"), timeout=5)
    await asyncio.sleep(3 * INTERVAL)
    error = (await readyz(log))["witnesses"]["w9"]["last_error"]
    assert expected in error, error
    warned = [r for r in caplog.records if r.name == "tlog.witness" and "w9" in r.getMessage()]
    assert len(warned) == 1, "one line per distinct error, not one per round"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await good.stop()


async def test_a_size_past_int64_in_a_409_is_a_witness_error(
        log_signer: Signer, hostile: Callable[[Handler], Awaitable[Hostile]]) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=409, body=b"9223372036854775808\n",
                            headers={"Content-Type": "text/x.tlog.size"})

    bad = await hostile(handler)
    note = sign_checkpoint(Checkpoint(log_signer.name, 1, b"\x01" * 32), log_signer)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(WitnessError, match=r"is not below 2\*\*63"):
            await add_checkpoint(http, bad.url, 0, [], note)


async def test_a_hanging_witness_does_not_delay_the_quorum_of_the_others(
        aiohttp_client: ClientFactory, database_url: str, log_signer: Signer,
        publisher: Signer, hostile: Callable[[Handler], Awaitable[Hostile]]) -> None:
    """A witness that accepts the request and never answers (until the 10 s timeout) must
    not hold back the 2-of-3 quorum of the fast ones: each checkpoint is published about
    an interval after its append, not a timeout. Cosignature lines follow the log's
    signature sorted bytewise ("Zed" before "alpha"), whatever the database collation."""
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        await slow.released.wait()
        return web.Response(status=500)

    slow = await hostile(handler)
    fast = await started(log_signer, "Zed.example", "alpha.example")
    s = setup_of(log_signer, fast, "2", extra=f"witness w3 {slow.key.vkey()} {slow.url}\n")
    log = await aiohttp_client(create_app(witnessed_config(database_url, s)))
    for v in ("1", "2", "3"):
        began = time.monotonic()
        note = await wait_published(log, await append(log, publisher, v), timeout=5)
        assert time.monotonic() - began < 3, "publication waited for the hanging witness"
    names = [sig.name for sig in parse_note(note).signatures]
    assert names == [log_signer.name, "Zed.example", "alpha.example"]
    for w in fast:
        await w.stop()


def test_a_refresh_shorter_than_the_interval_is_refused(log_signer: Signer) -> None:
    s = setup_of(log_signer, [make_witness(log_signer, "w.example")], "all")
    with pytest.raises(ValueError, match="--witness-refresh"):
        dataclasses.replace(witnessed_config("postgresql://x@127.0.0.1:1/x", s),
                            witness_refresh=0.1)



async def test_migration_4_keeps_version_3_published_rows_but_serves_them_under_no_policy(
        pg_cluster: Cluster) -> None:
    """A note published before 0004 was checked against some earlier policy, unknown now:
    it is kept (first and latest note alike) under the empty policy ID, which no policy
    has, so the log publishes again under its current policy rather than serve it."""
    name = f"m{os.getpid()}_4"
    admin = await asyncpg.connect(pg_cluster.url("postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    conn = await asyncpg.connect(pg_cluster.url(name))
    try:
        for m in migrate.migrations()[:3]:
            await conn.execute(m.sql)
        await conn.execute("INSERT INTO schema_version (version) VALUES (3)")
        await conn.execute("INSERT INTO checkpoints (tree_size, root, note) "
                           "VALUES (1, $1, 'n')", b"\x01" * 32)
        await conn.execute("INSERT INTO published (tree_size, note) VALUES (1, 'old')")
        assert (await migrate.migrate(conn))[0] == "0004_witness_refresh.sql"
        row = await conn.fetchrow("SELECT * FROM published")
        assert (row["policy_id"], row["first_note"], row["latest_note"]) == (b"", "old", "old")
        await conn.execute("INSERT INTO published (policy_id, tree_size, first_note, "
                           "latest_note) VALUES ('\\x01', 1, 'new', 'new')")
    finally:
        await conn.close()
