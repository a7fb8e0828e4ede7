"""The witness's HTTP service, in process (aiohttp test server, real SQLite store): every
status of c2sp.org/tlog-witness, and the attacks a witness exists to stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.verifier.witness.support import ORIGIN, TestLog
from verifier.protocol.cosignature import generate_witness_key, verify_cosignature
from verifier.protocol.note import generate_key, open_note, parse_note
from verifier.protocol.witness import origin_hash
from verifier.witness.server import create_app
from verifier.witness.service import Witness
from verifier.witness.store import WitnessStore

WITNESS_KEY = generate_witness_key("witness.example/w1")
LOG = TestLog(size=300)
FORK = TestLog(LOG.signer, size=300, tag="b", shared=6)
CHECKPOINT_PATH = f"/{origin_hash(ORIGIN)}/checkpoint"
Client = TestClient[Any, Any]


class Clock:
    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_witness(tmp_path: Path, clock: Clock) -> Callable[[], Witness]:
    def make() -> Witness:
        return Witness(WITNESS_KEY, [LOG.signer.verifier()], tmp_path / "state", clock=clock)
    return make


@pytest.fixture
async def witness(make_witness: Callable[[], Witness]) -> AsyncIterator[Witness]:
    w = make_witness()
    yield w
    w.close()


@pytest.fixture
async def http(aiohttp_client: Any, witness: Witness) -> Client:
    client: Client = await aiohttp_client(create_app(witness, max_body=8192))
    return client


async def post(http: Client, body: bytes) -> tuple[int, str, str]:
    async with http.post("/add-checkpoint", data=body) as resp:
        return resp.status, resp.content_type, await resp.text()


async def cosign(http: Client, old: int, new: int, log: TestLog = LOG) -> str:
    status, _, text = await post(http, log.body(old, new))
    assert status == 200, text
    return text


def evidence(tmp_path: Path) -> list[tuple[str, str]]:
    store = WitnessStore(tmp_path / "state")
    try:
        return [(e.reason, e.body.decode()) for e in store.evidence()]
    finally:
        store.close()


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
    assert len(evidence(tmp_path)) == 2
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


async def test_a_replayed_refusal_is_kept_once(http: Client, tmp_path: Path) -> None:
    await cosign(http, 0, 10)
    for _ in range(5):
        assert (await post(http, LOG.body(3, 8)))[0] == 409
    assert len(evidence(tmp_path)) == 1


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
    clock.now -= 3600
    assert time_of(await cosign(http, 3, 7), 7) == t0
    clock.now += 7200
    assert time_of(await cosign(http, 7, 9), 9) == t0 + 3600


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


def test_evidence_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("verifier.witness.store.MAX_EVIDENCE_ROWS", 5)
    store = WitnessStore(tmp_path)
    try:
        for i in range(12):
            with store.transaction():
                store.keep_evidence(i, ORIGIN, "r", f"body {i}".encode())
        assert [e.body for e in store.evidence()] == [f"body {i}".encode() for i in range(7, 12)]
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
