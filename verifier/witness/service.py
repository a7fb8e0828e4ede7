"""The witness: what add-checkpoint does, between the HTTP layer and the store.

Checking a request splits in two. What depends only on the request (parsing, the log's
signature: Ed25519, CPU) runs in any worker thread. What depends on the stored state (the
old size, the proof from the stored root, then storing and cosigning) runs in the one writer
thread, in one BEGIN IMMEDIATE transaction committed before the answer: two requests can never
both pass the check against the same stored size (tlog-witness's rollback race).

Only requests that may be cosigned, or are evidence, reach the writer. A first look at the
stored size, on a read-only connection in a reader thread, answers the rest (400 old > new,
the 409 on the old size: the spec's `old 0` probe, a retry, a replay with junk sizes) with
no write and no fsync; that answer is right as of the commit it read, and a request it lets
through is checked again in the transaction. Both queues are bounded: beyond MAX_PENDING,
`Busy` (the server's 503 with Retry-After), so a flood holds no unbounded memory or latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from verifier.protocol.cosignature import CosignatureSigner
from verifier.protocol.note import Verifier
from verifier.protocol.witness import (
    AddCheckpoint,
    Refusal,
    Stored,
    check_extends,
    check_signed,
    clock_behind,
    cosign_time,
    cosigned_note,
    origin_hash,
    parse_add_checkpoint,
    trusted_keys,
)
from verifier.witness.store import WitnessStore

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_PENDING = 64
"""Jobs queued or running per thread (writer, reader) before `Busy`: each is a few
milliseconds (a write is one fsync'd commit), so a full queue is a fraction of a second."""
RETRY_AFTER = 1
"""Seconds a client is told to wait when the witness is busy."""


class Busy(Exception):
    """Too many requests queued for one of the database threads; retry after RETRY_AFTER."""


class _Queue:
    """One database thread and a bound on the jobs waiting for it."""

    def __init__(self, name: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.pending = 0

    async def run(self, fn: Callable[[], T]) -> T:
        if self.pending >= MAX_PENDING:
            raise Busy(f"more than {MAX_PENDING} requests waiting; retry in {RETRY_AFTER} s")
        self.pending += 1  # only touched on the event loop: no lock needed
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn)
        finally:
            self.pending -= 1


@dataclass(frozen=True)
class Cosigned:
    """A 200: the cosignature line(s) to return."""

    lines: str


class Witness:
    """One witness key, the logs it witnesses, and its store."""

    def __init__(self, signer: CosignatureSigner, log_keys: Sequence[Verifier], state: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.keys: Mapping[str, Sequence[Verifier]] = trusted_keys(log_keys)
        self.by_hash = {origin_hash(origin): origin for origin in self.keys}
        self.clock = clock
        self._writer = _Queue("witness-db")
        self._reader = _Queue("witness-read")
        # The writer first: it creates the file and schema the read-only connection opens.
        self.store = self._writer.pool.submit(WitnessStore, state).result()
        self.reader = self._reader.pool.submit(
            lambda: WitnessStore(state, read_only=True)).result()

    def origins(self) -> list[str]:
        return sorted(self.keys)

    async def _write(self, fn: Callable[[], T]) -> T:
        return await self._writer.run(fn)

    async def _read(self, fn: Callable[[], T]) -> T:
        return await self._reader.run(fn)

    def close(self) -> None:
        for queue, store in ((self._reader, self.reader), (self._writer, self.store)):
            queue.pool.submit(store.close).result()
            queue.pool.shutdown()

    async def add_checkpoint(self, body: bytes) -> Cosigned:
        """Check and cosign a request body; Refusal says why not, Busy when overloaded."""
        req = await asyncio.get_running_loop().run_in_executor(None, self._signed, body)
        origin = req.checkpoint.origin
        try:
            check_extends(req, await self._read(lambda: self.reader.latest(origin)))
        except Refusal as refusal:
            if not refusal.evidence:
                raise  # nothing to keep, and nothing to cosign: no write
        return await self._write(lambda: self._commit(req, body))

    def _signed(self, body: bytes) -> AddCheckpoint:
        req = parse_add_checkpoint(body)
        check_signed(req, self.keys)
        return req

    def _commit(self, req: AddCheckpoint, body: bytes) -> Cosigned:
        """In the writer thread: read, check, write in one transaction. A refusal that is
        evidence is committed too (then raised); a cosignature is returned only once the
        checkpoint it covers is committed (see store.py for what recovery sees)."""
        cp = req.checkpoint
        now = int(self.clock())
        with self.store.transaction():
            stored = self.store.latest(cp.origin)
            try:
                check_extends(req, stored)
            except Refusal as refusal:
                if refusal.evidence:
                    self.store.keep_evidence(now, cp.origin, cp.size, cp.root,
                                             refusal.reason, body, fork=refusal.fork)
                outcome: Refusal | Cosigned = refusal
            else:
                if clock_behind(now, stored):
                    assert stored is not None
                    log.error("CLOCK: the last cosignature for %s is at %d, %d s ahead of "
                              "this clock (%d); cosigning at the clock's time. Check the "
                              "system clock.", cp.origin, stored.timestamp,
                              stored.timestamp - now, now)
                timestamp = cosign_time(now, stored)
                line = self.signer.cosign(cp.body(), timestamp).line()
                self.store.put(cp.origin, Stored(cp.size, cp.root, timestamp),
                               cosigned_note(req.note, line))
                outcome = Cosigned(line)
        if isinstance(outcome, Refusal):
            raise outcome
        return outcome

    async def checkpoint(self, hashed_origin: str) -> str | None:
        """The latest cosigned note of the log whose origin hashes to `hashed_origin`."""
        origin = self.by_hash.get(hashed_origin)
        if origin is None:
            return None
        return await self._read(lambda: self.reader.note(origin))
