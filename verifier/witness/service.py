"""The witness: what add-checkpoint does, between the HTTP layer and the store.

Checking a request splits in two. What depends only on the request (parsing, the log's
signature: Ed25519, CPU) runs in any worker thread. What depends on the stored state (the
old size, the proof from the stored root, then storing and cosigning) runs in the one writer
thread, in one BEGIN IMMEDIATE transaction committed before the answer: two requests can never
both pass the check against the same stored size (tlog-witness's rollback race).
"""

from __future__ import annotations

import asyncio
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
    cosign_time,
    cosigned_note,
    origin_hash,
    parse_add_checkpoint,
    trusted_keys,
)
from verifier.witness.store import WitnessStore

T = TypeVar("T")


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
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="witness-db")
        self.store = self._writer.submit(WitnessStore, state).result()

    def origins(self) -> list[str]:
        return sorted(self.keys)

    async def _write(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    def close(self) -> None:
        self._writer.submit(self.store.close).result()
        self._writer.shutdown()

    async def add_checkpoint(self, body: bytes) -> Cosigned:
        """Check and cosign a request body; Refusal says why not."""
        req = await asyncio.get_running_loop().run_in_executor(None, self._signed, body)
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
                    self.store.keep_evidence(now, cp.origin, refusal.reason, body)
                outcome: Refusal | Cosigned = refusal
            else:
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
        return await self._write(lambda: self.store.note(origin))
