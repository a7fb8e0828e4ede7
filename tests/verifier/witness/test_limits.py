"""The witness under load and abuse: floods of refused requests, a full writer queue, monitor
reads while the writer is busy, trickled headers, and too many connections."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.verifier.witness.helpers import CHECKPOINT_PATH, FORK, LOG, Client, cosign, post
from verifier.protocol.witness import AddCheckpoint
from verifier.witness.server import BUSY_RESPONSE, Serving, start
from verifier.witness.service import Cosigned, Witness
from verifier.witness.store import WitnessStore


def evidence_kinds(tmp_path: Path) -> list[str]:
    store = WitnessStore(tmp_path / "state", read_only=True)
    try:
        return [e.reason for e in store.evidence()]
    finally:
        store.close()


def count_commits(witness: Witness, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    commit = witness._commit

    def counted(req: AddCheckpoint, body: bytes) -> Cosigned:
        calls[0] += 1
        return commit(req, body)
    monkeypatch.setattr(witness, "_commit", counted)
    return calls


async def test_replaying_a_signed_checkpoint_with_other_old_sizes_evicts_no_fork_evidence(
        http: Client, witness: Witness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("verifier.witness.store.MAX_EVIDENCE_ROWS", 5)
    await cosign(http, 0, 10)
    assert (await post(http, FORK.body(10, 10)))[0] == 409  # the fork: kept
    commits = count_commits(witness, monkeypatch)
    # The attack (review-w/evict.py): one public checkpoint of the log, many junk old sizes.
    for old in [0, *range(11, 60)]:
        status, ctype, text = await post(http, LOG.body(old, 300, proof=[]))
        assert (status, ctype, text) == (409, "text/x.tlog.size", "10\n")
    # Nor bad proofs of the same signed checkpoint: one row however many are sent.
    for n in range(1, 20):
        assert (await post(http, LOG.body(10, 300, proof=[LOG.root(n)])))[0] == 422
    kinds = evidence_kinds(tmp_path)
    assert len(kinds) == 2 and "fork" in kinds[0] and "does not verify" in kinds[1]
    assert commits[0] == 19  # the 409s never reached the writer


async def test_a_flood_beyond_the_writer_queue_is_503_with_retry_after(
        http: Client, witness: Witness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("verifier.witness.service.MAX_PENDING", 2)
    await cosign(http, 0, 10)
    gate = threading.Event()
    witness._writer.pool.submit(gate.wait, 10)  # the writer is stuck on a slow disk

    async def attempt(n: int) -> tuple[int, str | None]:
        async with http.post("/add-checkpoint", data=LOG.body(10, 10 + n)) as resp:
            return resp.status, resp.headers.get("Retry-After")
    tasks = [asyncio.create_task(attempt(n)) for n in range(1, 6)]
    async with asyncio.timeout(5):  # two wait for the writer; the other three are answered
        while sum(t.done() for t in tasks) < 3:
            await asyncio.sleep(0.02)
    gate.set()
    results = sorted(await asyncio.gather(*tasks))
    assert results == [(200, None), (409, None), (503, "1"), (503, "1"), (503, "1")]


async def test_monitor_reads_do_not_wait_behind_a_stuck_writer(
        http: Client, witness: Witness) -> None:
    await cosign(http, 0, 10)
    gate = threading.Event()
    witness._writer.pool.submit(gate.wait, 10)
    try:
        async with asyncio.timeout(2):
            async with http.get(CHECKPOINT_PATH) as resp:
                assert resp.status == 200
                assert (await resp.text()).startswith(LOG.checkpoint(10))
            # The old-size probe is answered from the same read.
            assert (await post(http, LOG.body(0, 20)))[2] == "10\n"
    finally:
        gate.set()


@pytest.fixture
async def serving(witness: Witness) -> AsyncIterator[Callable[..., Awaitable[Serving]]]:
    """Start the real server (as `witness serve` does) on a free port."""
    started: list[Serving] = []

    async def run(max_connections: int = 16, header_timeout: float = 10) -> Serving:
        s = await start(witness, "127.0.0.1", 0, max_connections=max_connections,
                        header_timeout=header_timeout)
        started.append(s)
        return s
    yield run
    for s in started:
        await s.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    async with asyncio.timeout(seconds):
        return await reader.read()


async def test_trickled_header_lines_are_cut_off(
        serving: Callable[..., Awaitable[Serving]]) -> None:
    server = await serving(header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()

    async def trickle() -> None:
        while True:  # review-w/slow.py: a header line now and then, never the end
            await asyncio.sleep(0.1)
            writer.write(b"X-a: b\r\n")
    task = asyncio.create_task(trickle())
    try:
        assert await _closed_within(reader, 5) == b""
    finally:
        task.cancel()
        writer.close()
    assert time.monotonic() - t0 < 3


async def test_connections_beyond_the_cap_get_503_and_are_closed(
        serving: Callable[..., Awaitable[Serving]]) -> None:
    server = await serving(max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await _closed_within(reader, 2) == BUSY_RESPONSE
    writer.close()
    held[0][1].close()
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await _closed_within(reader, 2)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")
    writer.close()
    held[1][1].close()
