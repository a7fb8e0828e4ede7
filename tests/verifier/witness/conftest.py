"""Fixtures of the in-process witness tests: a settable clock, a witness on a real SQLite
store in tmp_path, and an aiohttp test client on its app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.verifier.witness.helpers import LOG, WITNESS_KEY, Client, Clock
from verifier.witness.server import create_app
from verifier.witness.service import Witness


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
