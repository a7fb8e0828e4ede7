"""The sequencer's map cache (tlog.log.mapcache) must never change what the log commits to:
after batches rolled back at every write, and with two processes appending to one database
in turn, each map root is still the one a monitor recomputes from the entries."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import make_release
from tests.tlog.http.test_lifecycle import statement
from tests.tlog.http.test_package_state import leaf, recomputed_root, tree_size
from tlog.config import Config
from tlog.http.app import create_app
from tlog.log.mapcache import MapBatch, MapCache
from verifier.protocol.entries.lifecycle import HALT_KIND, ROLLOUT_KIND
from verifier.protocol.note import Signer
from verifier.protocol.package_state import (
    package_key,
    parse_map_root_entry,
)
from verifier.protocol.statemap import SparseMap, stored_hash

Client = TestClient[web.Request, web.Application]


async def _app(aiohttp_client: Any, database_url: str, signer: Signer) -> Client:
    app = create_app(Config(database_url=database_url, signer=signer, policy="open",
                            host="127.0.0.1", port=0, max_wait=0.002))
    c: Client = await aiohttp_client(app)
    return c


@pytest.fixture
def rolled_back_often() -> Iterator[None]:
    """Every write of an append fails after it is done, now and then: the transaction
    rolls back with the batch's map work done."""
    points = ",".join(f"{p}:fail-after:0.3" for p in ("map", "entries", "tiles", "checkpoint"))
    saved = {k: os.environ.get(k) for k in ("TLOG_FAULTS", "TLOG_FAULTS_I_KNOW")}
    os.environ.update(TLOG_FAULTS=points, TLOG_FAULTS_I_KNOW="1")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
async def two_logs(aiohttp_client: Any, database_url: str, log_signer: Signer,
                   rolled_back_often: None) -> AsyncIterator[tuple[Client, Client]]:
    yield (await _app(aiohttp_client, database_url, log_signer),
           await _app(aiohttp_client, database_url, log_signer))


async def _post_until_logged(client: Client, entry: dict[str, Any]) -> int:
    """POST until the entry is logged; the number of 503s (rolled-back batches) on the way."""
    for refused in range(50):
        resp = await client.post("/v1/entries", json=entry)
        if resp.status in (200, 201):
            return refused
        assert resp.status == 503, await resp.text()
    raise AssertionError("never logged")


async def test_map_roots_stay_right_with_rollbacks_and_two_writers_in_turn(
        two_logs: tuple[Client, Client], publisher: Signer) -> None:
    refused = 0
    for i in range(24):
        client = two_logs[(i // 3) % 2]  # three submissions to one process, then the other
        # "shared" is the first package after each switch: stale states would show there
        package = "shared" if i % 2 == 0 else f"pkg{i % 4}"
        refused += await _post_until_logged(client, make_release(publisher, package, f"1.{i}"))
        if i % 5 == 4:
            for kind in (ROLLOUT_KIND, HALT_KIND):
                refused += await _post_until_logged(
                    client, statement(publisher, kind, package, f"1.{i}"))
        size = await tree_size(client)
        covered, root = parse_map_root_entry(await leaf(client, size - 1))
        assert covered == size - 1
        assert root == await recomputed_root(client, size), f"after submission {i}"
    assert refused > 0  # rollbacks did happen, after the map work of their batch


def test_a_batch_not_committed_leaves_the_cache_as_it_was() -> None:
    cache = MapCache()
    m = SparseMap()
    update = m.update([(package_key("a"), b"\x01" * 32)])
    nodes = {stored_hash(n): n for n in update.writes.values()}
    cache.commit(MapBatch(0, 2, dict(nodes), {"a": {"package": "a", "releases": []}}))
    pending = MapBatch(2, 4, {b"\x02" * 32: b"N" + b"\x00" * 64}, {"b": {"package": "b"}})
    del pending  # the batch rolled back: commit is never called
    assert set(cache.nodes) == set(nodes)
    assert cache.states_at(2, ["a", "b"]) == {"a": {"package": "a", "releases": []}}
    found, missing = cache.walk(update.root, [package_key("a"), package_key("b")])
    assert missing == [] and set(found.values()) <= set(nodes.values())


def test_states_are_dropped_once_another_process_appended() -> None:
    cache = MapCache()
    a, b = {"package": "a", "releases": []}, {"package": "b", "releases": []}
    cache.commit(MapBatch(0, 2, {}, {"a": a}))
    assert cache.states_at(2, ["a"]) == {"a": a}
    assert cache.states_at(5, ["a"]) == {}  # the log grew elsewhere: rebuilt from entries
    cache.commit(MapBatch(5, 7, {}, {"b": b}))
    assert cache.states_at(7, ["a", "b"]) == {"b": b}
    cache.commit(MapBatch(9, 11, {}, {}))  # start is not 7: the states are dropped
    assert cache.states_at(11, ["b"]) == {}


def test_the_cache_stays_within_its_bounds() -> None:
    cache = MapCache(max_nodes=10, max_releases=30)
    cache.commit(MapBatch(0, 2, {bytes([i]) * 32: b"L" + bytes(64) for i in range(25)},
                 {f"p{i}": {"releases": [{}] * 10} for i in range(8)}))
    assert len(cache.nodes) == 10 and bytes([24]) * 32 in cache.nodes
    assert list(cache.states) == ["p5", "p6", "p7"] and cache.releases == 30
    cache.commit(MapBatch(2, 4, {}, {"p5": {"releases": [{}] * 25}}))  # p5 grew: newest now
    assert list(cache.states) == ["p5"] and cache.releases == 25
