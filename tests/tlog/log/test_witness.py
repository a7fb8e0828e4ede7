"""The log collects witness cosignatures and publishes per quorum (tlog.log.witness).

Real PostgreSQL, real HTTP witnesses: tests/alt_witness.py, an independent implementation
of c2sp.org/tlog-witness, served on real ports. Rounds every 0.2 s keep these fast.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.alt_witness import AltWitness, LogKey, Running, WitnessKey
from tests.support import free_port, make_release, serve_app, write_key
from tests.tlog.sizes import alone, leaves, size_after
from tlog.cli.main import main as tlog_main
from tlog.config import Config
from tlog.http.app import create_app
from tlog.log.witness_client import MAX_ANSWER, Conflict, WitnessError, add_checkpoint
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.note import Signer, generate_key, parse_note
from verifier.protocol.policy import Policy, PolicyTrust, parse_policy

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
INTERVAL = 0.2


@dataclass
class Setup:
    log_signer: Signer
    witnesses: list[Running]
    policy: Policy
    policy_text: str


def make_witness(log_signer: Signer, name: str) -> Running:
    key = WitnessKey.generate(name)
    log_key = LogKey.parse(log_signer.verifier().text())
    return Running(AltWitness(key, {log_key.name: [log_key]}), free_port())


def policy_text(log_signer: Signer, witnesses: list[Running], quorum: str = "all") -> str:
    lines = [f"log {log_signer.verifier().text()}"]
    names = []
    for i, w in enumerate(witnesses, 1):
        lines.append(f"witness w{i} {w.witness.key.vkey()} {w.url}")
        names.append(f"w{i}")
    lines += [f"group g {quorum} {' '.join(names)}", "quorum g"]
    return "\n".join(lines) + "\n"


@pytest.fixture
async def setup(log_signer: Signer) -> AsyncIterator[Setup]:
    witnesses = [make_witness(log_signer, f"witness{i}.example") for i in (1, 2)]
    for w in witnesses:
        await w.start()
    text = policy_text(log_signer, witnesses)
    yield Setup(log_signer, witnesses, parse_policy(text), text)
    for w in witnesses:
        await w.stop()


def witnessed_config(database_url: str, s: Setup) -> Config:
    return Config(database_url=database_url, signer=s.log_signer, policy="open",
                  host="127.0.0.1", port=0, max_wait=0.002, witness_policy=s.policy,
                  witness_interval=INTERVAL, witness_timeout=2)


@pytest.fixture
async def log(aiohttp_client: ClientFactory, database_url: str, setup: Setup) -> Client:
    return await aiohttp_client(create_app(witnessed_config(database_url, setup)))


async def append(client: Client, publisher: Signer, version: str) -> int:
    resp = await client.post("/v1/entries", json=make_release(publisher, "com.acme", version))
    assert resp.status == 201, await resp.text()
    size: int = (await resp.json())["tree_size"]
    return size


async def published(client: Client) -> tuple[int, str] | None:
    resp = await client.get("/checkpoint")
    if resp.status == 503:
        return None
    assert resp.status == 200, await resp.text()
    note = await resp.text()
    return int(note.split("\n")[1]), note


async def wait_published(client: Client, size: int, timeout: float = 15) -> str:
    """The note /checkpoint serves once it reaches `size`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await published(client)
        if got is not None and got[0] >= size:
            assert got[0] == size, f"published {got[0]}, expected {size}"
            return got[1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"size {size} was not published within {timeout} s: {got}")


@asynccontextmanager
async def serving(path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> AsyncIterator[str]:
    """`handler` answering POST `path` on a real port; yields the base URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    async with serve_app(app) as url:
        yield url


async def readyz(client: Client) -> dict[str, Any]:
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def stored_cosigners(database_url: str, size: int) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT key_name FROM cosignatures WHERE tree_size = $1 "
                                "ORDER BY key_name", size)
        return [r["key_name"] for r in rows]
    finally:
        await conn.close()


async def test_a_two_of_two_quorum_publishes_a_cosigned_checkpoint_clients_accept(
        log: Client, setup: Setup, publisher: Signer) -> None:
    for v in ("1", "2", "3"):
        receipt_size = await append(log, publisher, v)
    assert receipt_size == size_after([1, 1, 1])
    note = await wait_published(log, receipt_size)
    witnessed = PolicyTrust.for_log(setup.policy).witnessed(note)
    assert witnessed.checkpoint.size == receipt_size
    assert set(witnessed.times) == {"w1", "w2"}
    names = [s.name for s in parse_note(note).signatures]
    assert names == [setup.log_signer.name, "witness1.example", "witness2.example"]
    # /v1/checkpoints/N: the log's note and every stored cosignature, whatever the quorum.
    at = await log.get(f"/v1/checkpoints/{receipt_size}")
    assert at.status == 200 and at.headers["Cache-Control"] == "no-cache"
    assert PolicyTrust.for_log(setup.policy).witnessed(
        await at.text()).checkpoint.size == receipt_size
    ready = await readyz(log)
    assert ready["published_size"] == receipt_size and "2 of 2" in ready["quorum"]
    assert ready["witnesses"]["w1"]["cosigned_size"] == receipt_size
    assert ready["witnesses"]["w2"]["last_error"] is None
    metrics = await (await log.get("/metrics")).text()
    assert f"tlog_published_tree_size {receipt_size}.0" in metrics
    assert 'tlog_witness_requests_total{result="cosigned",witness="w1"}' in metrics


async def test_appends_never_wait_for_witnesses_and_the_log_catches_up_when_they_return(
        log: Client, setup: Setup, publisher: Signer) -> None:
    """A witness outage must not stop the log: appends go on, /checkpoint keeps the last
    cosigned checkpoint (a freeze is the witnesses' to report, not the log's to cause)."""
    size = await append(log, publisher, "1")
    await wait_published(log, size)
    for w in setup.witnesses:
        await w.stop()  # every witness down: their ports are closed
    started = time.monotonic()
    for v in ("2", "3", "4", "5"):
        size = await append(log, publisher, v)
    assert time.monotonic() - started < 2, "appends waited for witnesses"
    await asyncio.sleep(3 * INTERVAL)
    assert (await published(log) or (0, ""))[0] == leaves(1)
    ready = await readyz(log)
    assert ready["status"] == "ready" and ready["published_size"] == leaves(1)
    assert "unreachable" in ready["witnesses"]["w1"]["last_error"]
    for w in setup.witnesses:
        await w.start()  # same witness state, same port
    note = await wait_published(log, size)
    assert PolicyTrust.for_log(setup.policy).witnessed(note).checkpoint.size == size_after(
        [1] * 5)


async def test_before_the_first_quorum_checkpoint_is_not_ready_with_retry_after(
        aiohttp_client: ClientFactory, database_url: str, setup: Setup,
        publisher: Signer) -> None:
    for w in setup.witnesses:
        await w.stop()
    client = await aiohttp_client(create_app(witnessed_config(database_url, setup)))
    assert await append(client, publisher, "1") == leaves(1)
    resp = await client.get("/checkpoint")
    assert resp.status == 503 and "Retry-After" in resp.headers
    assert (await resp.json())["error"]["code"] == "not_ready"
    for w in setup.witnesses:
        await w.start()
    await wait_published(client, leaves(1))


async def test_a_witness_answering_409_with_a_smaller_size_is_resynced(
        log: Client, setup: Setup, publisher: Signer) -> None:
    """A witness restored from a backup (at size 2 while the log recorded 4) answers the
    log's `old 4` with 409 and its size; the log sends a proof from 2 at once."""
    await wait_published(log, await append(log, publisher, "1"))
    w1 = setup.witnesses[0].witness
    at_one = copy.deepcopy(w1.state)
    await wait_published(log, await append(log, publisher, "2"))
    w1.state = at_one
    await wait_published(log, await append(log, publisher, "3"))
    assert w1.state[setup.log_signer.name].size == size_after([1, 1, 1])
    metrics = await (await log.get("/metrics")).text()
    assert 'tlog_witness_requests_total{result="conflict",witness="w1"} 1.0' in metrics
    assert 'result="error",witness="w1"' not in metrics


async def test_cosignatures_by_keys_not_in_the_policy_are_ignored(
        log: Client, setup: Setup, database_url: str, publisher: Signer) -> None:
    setup.witnesses[0].witness.extra_signer = WitnessKey.generate("stranger.example")
    note = await wait_published(log, await append(log, publisher, "1"))
    assert "stranger.example" not in note
    size = leaves(1)
    assert await stored_cosigners(database_url, size) == ["witness1.example",
                                                          "witness2.example"]
    assert "stranger.example" not in await (await log.get(f"/v1/checkpoints/{size}")).text()


async def test_an_invalid_cosignature_is_not_stored_and_does_not_count(
        log: Client, setup: Setup, database_url: str, publisher: Signer) -> None:
    """A witness returning a bad signature under its own key must not add to the quorum:
    a log that stored it would publish a note every client rejects."""
    setup.witnesses[1].witness.corrupt = True
    await append(log, publisher, "1")
    await asyncio.sleep(4 * INTERVAL)
    # The empty tree may have been cosigned by both when the log asked them at startup,
    # before w2 turned bad; the tree holding the release must not be published.
    got = await published(log)
    assert got is None or got[0] < leaves(1), got
    assert await stored_cosigners(database_url, leaves(1)) == ["witness1.example"]
    assert "invalid cosignature" in (await readyz(log))["witnesses"]["w2"]["last_error"]
    setup.witnesses[1].witness.corrupt = False
    await wait_published(log, leaves(1))


async def test_cosigned_covering_returns_the_smallest_checkpoint_holding_the_entry(
        log: Client, setup: Setup, publisher: Signer) -> None:
    await wait_published(log, await append(log, publisher, "1"))
    await append(log, publisher, "2")
    await wait_published(log, await append(log, publisher, "3"))
    # Cosigned: the trees of the first and third releases (each with its map root); the
    # second release's tree was replaced by the third before a witness saw it.
    first, last = size_after([1]), size_after([1, 1, 1])
    for index, size in ((alone(0), first), (first - 1, first), (alone(1), last),
                        (alone(2), last), (last - 1, last)):
        resp = await log.get(f"/v1/checkpoints/cosigned?covering={index}")
        assert resp.status == 200, await resp.text()
        cp = PolicyTrust.for_log(setup.policy).open(await resp.text())
        assert cp.size == size, index
    resp = await log.get(f"/v1/checkpoints/cosigned?covering={last}")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    for bad in ("covering=-1", "covering=01", "", "covering=1&covering=2", "at=1"):
        resp = await log.get("/v1/checkpoints/cosigned?" + bad)
        assert resp.status == 400, bad


async def test_cosigned_covering_without_a_policy_says_so(client: Client) -> None:
    resp = await client.get("/v1/checkpoints/cosigned?covering=0")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "no_witness_policy"
    at = await client.get("/v1/checkpoints/0")
    assert at.headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_a_witness_with_another_root_at_our_size_raises_a_fork_alarm_once(
        log: Client, setup: Setup, publisher: Signer, caplog: pytest.LogCaptureFixture) -> None:
    """A witness that cosigned another tree of this log's size (a split view) is an alarm:
    logged critical, counted, shown in /readyz, and not retried in a loop."""
    await wait_published(log, await append(log, publisher, "1"))
    w2 = setup.witnesses[1].witness
    w2.state[setup.log_signer.name].root = b"\x55" * 32
    w2.state[setup.log_signer.name].size = size_after([1, 1])
    assert await append(log, publisher, "2") == size_after([1, 1])
    await asyncio.sleep(5 * INTERVAL)
    ready = await readyz(log)
    assert "another root" in ready["witnesses"]["w2"]["fork_alarm"]
    asked = w2.requests
    await asyncio.sleep(3 * INTERVAL)
    assert w2.requests == asked, "the alarmed witness was asked again"
    assert any(r.levelname == "CRITICAL" and "FORK" in r.getMessage() for r in caplog.records)
    metrics = await (await log.get("/metrics")).text()
    assert 'tlog_witness_fork_alarms_total{witness="w2"} 1.0' in metrics


async def test_two_servers_on_one_database_both_cosign_without_errors(
        aiohttp_client: ClientFactory, database_url: str, setup: Setup, publisher: Signer,
        caplog: pytest.LogCaptureFixture) -> None:
    config = witnessed_config(database_url, setup)
    a = await aiohttp_client(create_app(config))
    b = await aiohttp_client(create_app(config))
    size = 0
    for i in range(6):
        size = await append(a if i % 2 else b, publisher, str(i))
        await asyncio.sleep(INTERVAL / 2)
    for c in (a, b):
        await wait_published(c, size)
    bad = [r for r in caplog.records if r.name.startswith("tlog") and (
        r.levelname in ("ERROR", "CRITICAL")
        or (r.name == "tlog.witness" and r.levelname == "WARNING"))]
    assert not bad, [r.getMessage() for r in bad]


async def test_witnessed_answers_match_the_openapi_document(
        log: Client, setup: Setup, publisher: Signer) -> None:
    from tests.tlog.http.test_openapi import Spec, load_spec

    spec = Spec(load_spec())
    await spec.check(await log.get("/checkpoint"), "/checkpoint")  # 503 before the first
    await wait_published(log, await append(log, publisher, "1"))
    await spec.check(await log.get("/checkpoint"), "/checkpoint")
    await spec.check(await log.get("/readyz"), "/readyz")
    for path in (f"/v1/checkpoints/{leaves(1)}", "/v1/checkpoints/1", "/v1/checkpoints/0",
                 "/v1/checkpoints/9"):
        await spec.check(await log.get(path), "/v1/checkpoints/{size}")
    for query in ("covering=0", "covering=1", "covering=x", "x=1"):
        await spec.check(await log.get("/v1/checkpoints/cosigned?" + query),
                         "/v1/checkpoints/cosigned")


def serve_args(key: Path, policy: Path, *extra: str) -> list[str]:
    return ["serve", "--database-url", "postgresql://nobody@127.0.0.1:1/none", "--listen",
            "127.0.0.1:1", "--key", str(key), "--policy", "open", "--witness-policy",
            str(policy), *extra]


@pytest.mark.parametrize("case", ["other log", "no url", "malformed", "missing",
                                  "interval 0", "interval huge", "timeout 0",
                                  "refresh below interval"])
def test_serve_refuses_a_policy_it_could_never_publish_under(
        tmp_path: Path, log_signer: Signer, case: str, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """Refused at startup (exit 2, a reason) rather than serving a log whose /checkpoint
    stays 503 forever, or whose cosigned notes no client of the policy accepts."""
    key = write_key(tmp_path / "log.key", log_signer)
    w1, w2 = (WitnessKey.generate(f"w{i}.example") for i in (1, 2))
    log_line = f"log {log_signer.verifier().text()}"
    text = f"{log_line}\nwitness a {w1.vkey()} http://127.0.0.1:1\n" \
           f"witness b {w2.vkey()} http://127.0.0.1:2\ngroup g all a b\nquorum g\n"
    extra: list[str] = []
    expected = {"other log": "do not include this log's key", "no url": "without a URL",
                "malformed": "line 1", "missing": "couldn't read",
                "interval 0": "--witness-interval", "interval huge": "--witness-interval",
                "timeout 0": "--witness-timeout",
                "refresh below interval": "--witness-refresh must be at least"}[case]
    if case == "other log":
        text = text.replace(log_line, f"log {generate_key('other.log').verifier().text()}")
    elif case == "no url":
        text = text.replace(" http://127.0.0.1:2", "")
    elif case == "malformed":
        text = "logg x\n" + text
    elif case == "interval 0":
        extra = ["--witness-interval", "0"]
    elif case == "interval huge":
        extra = ["--witness-interval", "1e9"]
    elif case == "timeout 0":
        extra = ["--witness-timeout", "0"]
    elif case == "refresh below interval":
        extra = ["--witness-interval", "5", "--witness-refresh", "1"]
    policy = tmp_path / "policy"
    if case != "missing":
        policy.write_text(text)
    assert tlog_main(serve_args(key, policy, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlog serve: ") and expected in err, err


def test_the_witness_policy_may_come_from_the_environment(
        tmp_path: Path, log_signer: Signer) -> None:
    key = write_key(tmp_path / "log.key", log_signer)
    policy = tmp_path / "policy"
    policy.write_text(f"log {generate_key('other.log').verifier().text()}\nquorum none\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tlog", "serve", "--database-url",
         "postgresql://nobody@127.0.0.1:1/none", "--key", str(key), "--policy", "open"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "TLOG_WITNESS_POLICY": str(policy)})
    assert proc.returncode == 2 and "do not include this log's key" in proc.stderr


@pytest.mark.parametrize(("answer", "expected"), [
    ("huge", "more than"), ("garbage", "malformed cosignature lines"),
    ("no newline", "malformed cosignature lines"), ("500", "HTTP 500"),
    ("hang", "unreachable"), ("409 bad size", "malformed size")])
async def test_a_hostile_witness_answer_is_a_witness_error_within_bounds(
        log_signer: Signer, answer: str, expected: str) -> None:
    """Whatever a witness sends back (too much, nonsense, nothing in time) is that
    witness's failure, read no further than MAX_ANSWER bytes and no longer than the
    timeout: never the log's crash or a stuck task."""
    released = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        if answer == "hang":
            await released.wait()
        if answer == "huge":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(b"\xe2\x80\x94 " + b"A" * (MAX_ANSWER // 8))
            return resp
        body = {"garbage": "hello\n", "no newline": "— w AAAAAAA=", "500": "oops",
                "409 bad size": "01\n"}[answer]
        status = 500 if answer == "500" else 409 if answer.startswith("409") else 200
        return web.Response(status=status, body=body.encode(), headers={
            "Content-Type": "text/x.tlog.size" if status == 409 else "text/plain"})

    note = sign_checkpoint(Checkpoint(log_signer.name, 1, b"\x01" * 32), log_signer)
    async with serving("/add-checkpoint", handler) as url:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as http:
                with pytest.raises(WitnessError, match=expected):
                    await add_checkpoint(http, url, 0, [], note)
        finally:
            released.set()


async def test_a_409_without_a_size_is_reported_as_such(log_signer: Signer) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=409, text="different root")

    note = sign_checkpoint(Checkpoint(log_signer.name, 1, b"\x01" * 32), log_signer)
    async with serving("/w/add-checkpoint", handler) as url, aiohttp.ClientSession() as http:
        got = await add_checkpoint(http, url + "/w/", 1, [], note)
    assert got == Conflict(None)
