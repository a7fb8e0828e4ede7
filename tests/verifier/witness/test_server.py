"""The witness's HTTP service, in process (aiohttp test server, real SQLite store): every
status of c2sp.org/tlog-witness, and the attacks a witness exists to stop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.verifier.witness.helpers import (
    CHECKPOINT_PATH,
    FORK,
    LOG,
    WITNESS_KEY,
    Client,
    Clock,
    cosign,
    evidence,
    post,
)
from tests.verifier.witness.support import ORIGIN, TestLog
from verifier.protocol.cosignature import verify_cosignature
from verifier.protocol.note import generate_key, open_note, parse_note
from verifier.protocol.witness import MAX_CLOCK_SKEW, origin_hash
from verifier.witness.server import create_app
from verifier.witness.service import Witness
from verifier.witness.store import WitnessStore


async def test_a_consistent_checkpoint_is_cosigned_and_served_to_monitors(
        http: Client, clock: Clock) -> None:
    async with http.get(CHECKPOINT_PATH) as resp:
        assert resp.status == 404
    text = await cosign(http, 0, 5)
    assert text.startswith("— witness.example/w1 ") and text.endswith("\n")
    assert text.count("\n") == 1
    sig = parse_note(LOG.checkpoint(5) + text).signatures[-1]
    body = parse_note(LOG.checkpoint(5)).text
    assert verify_cosignature(WITNESS_KEY.verifier(), body, sig) == int(clock.now)
    text = await cosign(http, 5, 17)
    async with http.get(CHECKPOINT_PATH) as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        served = await resp.text()
    assert served == LOG.checkpoint(17) + text
    open_note(served, [LOG.signer.verifier()])  # the log's signature is kept


async def test_every_refusal_status(http: Client) -> None:
    await cosign(http, 0, 10)
    other = TestLog(generate_key("other.example/log"))
    impostor = TestLog(generate_key(ORIGIN))
    cases = [
        (other.body(0, 3), 404),
        (impostor.body(10, 20, proof=LOG.proof(10, 20)), 403),
        (b"old 10\nnot a proof\n\n" + LOG.checkpoint(20).encode(), 400),
        (LOG.body(10, 20).replace(b"old 10", b"old 21"), 400),
        (LOG.body(10, 20, proof=LOG.proof(9, 20)), 422),
        (LOG.body(0, 20, proof=[]), 409),
    ]
    for body, want in cases:
        status, ctype, text = await post(http, body)
        assert status == want, text
        if want == 409:
            assert (ctype, text) == ("text/x.tlog.size", "10\n")
        else:
            assert ctype == "text/plain" and 0 < len(text) < 300


async def test_a_fork_of_the_same_size_signed_by_the_log_is_refused_and_kept(
        http: Client, tmp_path: Path) -> None:
    await cosign(http, 0, 10)
    status, ctype, text = await post(http, FORK.body(10, 10))
    assert (status, ctype) == (409, "text/plain") and "fork" in text
    async with http.get(CHECKPOINT_PATH) as resp:
        assert (await resp.text()).startswith(LOG.checkpoint(10))
    assert [r for r, _ in evidence(tmp_path)] == [text.strip()]
    assert FORK.checkpoint(10) in evidence(tmp_path)[0][1]


async def test_a_larger_fork_signed_by_the_log_is_refused_and_kept(
        http: Client, tmp_path: Path) -> None:
    await cosign(http, 0, 10)
    for proof in (LOG.proof(10, 40), FORK.proof(10, 40)):
        status, _, _ = await post(http, FORK.body(10, 40, proof=proof))
        assert status == 422
    # Kept once per signed checkpoint: the first body.
    assert [b for _, b in evidence(tmp_path)] == [FORK.body(10, 40, LOG.proof(10, 40)).decode()]
    await cosign(http, 10, 40)  # the real log goes on


async def test_a_rollback_is_refused(http: Client) -> None:
    await cosign(http, 0, 10)
    await cosign(http, 10, 20)
    status, _, _ = await post(http, LOG.body(10, 15))  # a stale old size
    assert status == 409
    status, _, _ = await post(http, LOG.body(20, 15, proof=[]))
    assert status == 400  # a smaller checkpoint from the stored size
    async with http.get(CHECKPOINT_PATH) as resp:
        assert (await resp.text()).startswith(LOG.checkpoint(20))


async def test_refusals_without_a_valid_log_signature_are_not_kept(
        http: Client, tmp_path: Path) -> None:
    await cosign(http, 0, 10)
    impostor = TestLog(generate_key(ORIGIN), tag="x")
    for _ in range(3):
        assert (await post(http, impostor.body(10, 10)))[0] == 403
    assert (await post(http, TestLog(generate_key("o.example/x")).body(0, 3)))[0] == 404
    assert evidence(tmp_path) == []


async def test_a_replayed_fork_is_kept_once_whatever_junk_surrounds_it(
        http: Client, tmp_path: Path) -> None:
    await cosign(http, 0, 10)
    for n in range(5):
        note = FORK.checkpoint(10, [generate_key(f"junk.example/{n}")])
        assert (await post(http, FORK.body(10, 10, note=note)))[0] == 409
    assert len(evidence(tmp_path)) == 1


async def test_the_old_size_probe_and_retries_are_not_evidence(
        http: Client, tmp_path: Path) -> None:
    await cosign(http, 0, 10)
    assert (await post(http, LOG.body(0, 10))) == (409, "text/x.tlog.size", "10\n")
    assert (await post(http, LOG.body(3, 8)))[0] == 409
    assert evidence(tmp_path) == []


async def test_a_racing_flood_from_one_old_size_gets_one_cosignature_never_a_rollback(
        http: Client) -> None:
    await cosign(http, 0, 10)
    results = await asyncio.gather(*(post(http, LOG.body(10, 10 + n)) for n in range(1, 51)))
    ok = [n + 1 for n, r in enumerate(results) if r[0] == 200]
    assert len(ok) == 1
    winner = 10 + ok[0]
    assert sorted(r[0] for r in results) == [200] + [409] * 49
    assert {r[2] for r in results if r[0] == 409} == {f"{winner}\n"}
    async with http.get(CHECKPOINT_PATH) as resp:
        assert (await resp.text()).startswith(LOG.checkpoint(winner))


async def test_a_retry_after_a_lost_answer_is_cosigned_again(http: Client) -> None:
    await cosign(http, 0, 10)
    first = await cosign(http, 10, 20)
    assert (await post(http, LOG.body(10, 20)))[2] == "20\n"  # retry of the lost request
    again = await cosign(http, 20, 20)  # the same checkpoint, from the size the witness has
    assert again.split()[1] == first.split()[1]


async def test_cosignature_times_never_go_back_when_the_clock_does(
        http: Client, clock: Clock) -> None:
    def time_of(line: str, size: int) -> int:
        sig = parse_note(LOG.checkpoint(size) + line).signatures[-1]
        return verify_cosignature(WITNESS_KEY.verifier(), parse_note(LOG.checkpoint(size)).text,
                                  sig)
    t0 = int(clock.now)
    assert time_of(await cosign(http, 0, 3), 3) == t0
    clock.now -= MAX_CLOCK_SKEW  # a step back within the skew
    assert time_of(await cosign(http, 3, 7), 7) == t0
    clock.now += 2 * MAX_CLOCK_SKEW
    assert time_of(await cosign(http, 7, 9), 9) == t0 + MAX_CLOCK_SKEW


async def test_one_clock_jump_ahead_does_not_stamp_every_later_cosignature(
        http: Client, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    def time_of(line: str, size: int) -> int:
        sig = parse_note(LOG.checkpoint(size) + line).signatures[-1]
        return verify_cosignature(WITNESS_KEY.verifier(), parse_note(LOG.checkpoint(size)).text,
                                  sig)
    t0 = int(clock.now)
    clock.now = 10**12  # the clock jumps years ahead once...
    assert time_of(await cosign(http, 0, 3), 3) == 10**12
    clock.now = t0 + 60  # ...and is fixed
    with caplog.at_level("ERROR", logger="verifier.witness.service"):
        assert time_of(await cosign(http, 3, 7), 7) == t0 + 60
    assert "CLOCK" in caplog.text and "Check the system clock" in caplog.text
    clock.now = t0 + 30  # from here on times do not go back again (within the skew)
    assert time_of(await cosign(http, 7, 9), 9) == t0 + 60


async def test_wrong_methods_are_405_and_large_bodies_413(http: Client) -> None:
    async with http.get("/add-checkpoint") as resp:
        assert resp.status == 405
    async with http.post("/healthz") as resp:
        assert resp.status == 405
    async with http.get("/healthz") as resp:
        assert resp.status == 200
    assert (await post(http, b"old 0\n" + b"x" * 9000))[0] == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(10):
            yield b"x" * 1000
    async with http.post("/add-checkpoint", data=chunks()) as resp:
        assert resp.status == 413


async def test_the_read_endpoint_only_answers_for_witnessed_logs(http: Client) -> None:
    await cosign(http, 0, 3)
    for path in (f"/{origin_hash('other.example/log')}/checkpoint", "/nothex/checkpoint",
                 f"/{origin_hash(ORIGIN).upper()}/checkpoint"):
        async with http.get(path) as resp:
            assert resp.status == 404


async def test_state_survives_a_restart(make_witness: Callable[[], Witness],
                                        aiohttp_client: Any) -> None:
    first = make_witness()
    client: Client = await aiohttp_client(create_app(first))
    await cosign(client, 0, 12)
    await client.close()
    first.close()
    second = make_witness()
    try:
        client = await aiohttp_client(create_app(second))
        assert (await post(client, LOG.body(0, 20)))[2] == "12\n"
        await cosign(client, 12, 20)
    finally:
        second.close()


def test_evidence_is_bounded_and_forks_are_never_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("verifier.witness.store.MAX_EVIDENCE_ROWS", 5)
    monkeypatch.setattr("verifier.witness.store.MAX_FORK_ROWS", 3)
    store = WitnessStore(tmp_path)
    try:
        for i in range(12):
            with store.transaction():
                store.keep_evidence(i, ORIGIN, 10, bytes([i]) * 32, "fork", f"fork {i}".encode(),
                                    fork=True)
                store.keep_evidence(i, ORIGIN, 20 + i, bytes(32), "r", f"body {i}".encode(),
                                    fork=False)
                # The same checkpoint again, other body: the first is kept.
                store.keep_evidence(i, ORIGIN, 20 + i, bytes(32), "r", b"other", fork=False)
        bodies = [e.body for e in store.evidence()]
        assert bodies == [b"fork 0", b"fork 1", b"fork 2"] + \
            [f"body {i}".encode() for i in range(7, 12)]
        assert [e.time for e in store.evidence(2)] == [10, 11]
    finally:
        store.close()


async def test_a_slow_body_is_cut_off(http: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("verifier.witness.server.BODY_TIMEOUT", 0.2)

    async def stalling() -> AsyncIterator[bytes]:
        yield b"old 0\n"
        await asyncio.sleep(5)
        yield b"\n"
    async with http.post("/add-checkpoint", data=stalling()) as resp:
        assert resp.status == 408


def test_a_state_with_the_first_evidence_table_opens_and_keeps_its_rows_aside(
        tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "witness.db")
    db.executescript("CREATE TABLE evidence (id INTEGER PRIMARY KEY, time INTEGER, origin TEXT,"
                     " reason TEXT, digest BLOB UNIQUE, body BLOB);"
                     "INSERT INTO evidence VALUES (1, 5, 'o', 'r', x'00', x'00');")
    db.close()
    store = WitnessStore(tmp_path)
    try:
        assert store.evidence() == []
        with store.transaction():
            store.keep_evidence(6, ORIGIN, 3, bytes(32), "fork", b"b", fork=True)
        assert [e.body for e in store.evidence()] == [b"b"]
        assert store.db.execute("SELECT count(*) FROM evidence_v1").fetchone() == (1,)
    finally:
        store.close()
