"""What the in-process witness tests share: the witness key, the test log and a fork of it,
a settable clock, and request helpers (the fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.verifier.witness.support import ORIGIN, TestLog
from verifier.protocol.cosignature import generate_witness_key
from verifier.protocol.witness import origin_hash
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


async def post(http: Client, body: bytes) -> tuple[int, str, str]:
    async with http.post("/add-checkpoint", data=body) as resp:
        return resp.status, resp.content_type, await resp.text()


async def cosign(http: Client, old: int, new: int, log: TestLog = LOG) -> str:
    status, _, text = await post(http, log.body(old, new))
    assert status == 200, text
    return text


def evidence(tmp_path: Path) -> list[tuple[str, str]]:
    store = WitnessStore(tmp_path / "state", read_only=True)
    try:
        return [(e.reason, e.body.decode()) for e in store.evidence()]
    finally:
        store.close()
