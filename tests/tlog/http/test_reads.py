"""The read path under attack, on a real PostgreSQL: pages of large entries bounded in bytes
and built off the event loop, a read quota apart from writes, and the bare `+` stumble.

Large entries are signed releases written straight into the entries table (as
tests/tlog/store/test_serving.py does), after one release appended through the API gave the
log a checkpoint: filling pages through POST would take minutes of signing and sequencing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import release_fields
from tests.tlog.http.test_api import expect_error, log_state, query_path, refused, submit
from tests.tlog.sizes import leaves
from tlog.config import Config, Quotas
from tlog.http.app import create_app
from tlog.http.handlers import PAGES_PER_CLIENT
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import Signer

Client = TestClient[web.Request, web.Application]
PAGE_BYTES = 1024 * 1024  # the log's page bound in these tests (4 MiB by default)


def large_release(publisher: Signer, package: str, version: str) -> bytes:
    """A signed release carrying ~45 KB of metadata: 15,000 empty lists in a list, what
    costs most to parse into objects per byte."""
    fields = release_fields(package, version)
    fields["metadata"] = {"blob": [[] for _ in range(15000)], "note": "é, and: 1e-7"}
    return validate_entry(sign_entry(fields, publisher)).leaf


async def store_entries(url: str, start: int, leaves: Sequence[bytes], package: str) -> None:
    """Rows as the sequencer writes them, at indices start, start + 1, ..."""
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "entries", columns=["idx", "leaf", "leaf_hash", "package", "version", "kind"],
            records=[(start + i, leaf, leaf_hash(leaf), package, json.loads(leaf)["version"],
                      "release/v1") for i, leaf in enumerate(leaves)])
    finally:
        await conn.close()


async def app_client(aiohttp_client: Any, database_url: str, log_signer: Signer,
                     **config: Any) -> Client:
    app = create_app(Config(database_url=database_url, signer=log_signer, policy="open",
                            host="127.0.0.1", port=0, max_wait=0.002, **config))
    c: Client = await aiohttp_client(app)
    return c


@pytest.fixture
async def big_log(aiohttp_client: Any, database_url: str, log_signer: Signer,
                  publisher: Signer) -> AsyncIterator[tuple[Client, dict[int, bytes]]]:
    """A log of one appended release and 100 large ones of package "big" (~4.5 MB)."""
    client = await app_client(aiohttp_client, database_url, log_signer,
                              max_page_bytes=PAGE_BYTES)
    await submit(client, sign_entry(release_fields("seed", "0.1"), publisher))
    start = leaves(1)  # the release and its batch's map root
    big = [large_release(publisher, "big", f"1.{i}") for i in range(100)]
    await store_entries(database_url, start, big, "big")
    yield client, dict(enumerate(big, start=start))


async def all_pages(client: Client, package: str, limit: int) -> list[dict[str, Any]]:
    """Every page of `package`, following next_after; each page's raw bytes are checked."""
    pages: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params = [("package", package), ("limit", str(limit))]
        params += [("after", str(after))] if after is not None else []
        resp = await client.get(query_path("/v1/entries", params))
        assert resp.status == 200, await resp.text()
        page = json.loads(await resp.read())
        pages.append(page)
        if page["next_after"] is None:
            return pages
        assert page["next_after"] == page["entries"][-1]["index"]
        after = page["next_after"]


# -- pages of large entries ------------------------------------------------------------------


async def test_a_page_of_large_entries_does_not_freeze_the_server(
        big_log: tuple[Client, dict[int, bytes]]) -> None:
    client, _ = big_log
    before = await log_state(client)
    finished: dict[str, float] = {}

    async def big_page(name: str) -> bytes:
        resp = await client.get("/v1/entries", params={"package": "big", "limit": "1000"})
        body = await resp.read()
        assert resp.status == 200, body[:200]
        finished[name] = time.perf_counter()
        return body

    async def checkpoints() -> None:
        for _ in range(3):
            resp = await client.get("/checkpoint")
            assert resp.status == 200
        finished["checkpoints"] = time.perf_counter()

    pages = [asyncio.create_task(big_page(f"page{i}")) for i in range(4)]
    await asyncio.sleep(0.01)  # the pages are being read and built
    await checkpoints()
    bodies = await asyncio.gather(*pages)
    # Checkpoints answered while the pages were served, not queued behind them.
    assert finished["checkpoints"] < max(finished[f"page{i}"] for i in range(4))
    for body in bodies:
        assert len(body) <= PAGE_BYTES + 100  # the entries' bound, and the envelope
        page = json.loads(body)
        assert 0 < len(page["entries"]) < 100
        assert page["next_after"] == page["entries"][-1]["index"]
    assert await log_state(client) == before


async def test_next_after_pages_of_large_entries_reach_every_entry_once(
        big_log: tuple[Client, dict[int, bytes]]) -> None:
    client, leaves = big_log
    pages = await all_pages(client, "big", 1000)
    assert len(pages) > 4  # the 4.5 MB did not fit in one 1 MiB page
    got = [e for page in pages for e in page["entries"]]
    assert [e["index"] for e in got] == sorted(leaves)
    for e in got:
        assert e["entry"] == json.loads(leaves[e["index"]])
        assert e["leaf_hash"] == leaf_hash(leaves[e["index"]]).hex()


async def test_a_page_is_byte_for_byte_what_json_dumps_answered(
        big_log: tuple[Client, dict[int, bytes]]) -> None:
    """Entries are spliced from the stored bytes, and still read exactly as before."""
    client, big = big_log
    first = min(big)
    resp = await client.get("/v1/entries", params={"package": "big", "limit": "3"})
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    want = {"entries": [{"index": i, "leaf_hash": leaf_hash(big[i]).hex(),
                         "entry": json.loads(big[i])} for i in range(first, first + 3)],
            "next_after": first + 2}
    assert await resp.read() == json.dumps(want).encode()
    resp = await client.get(f"/v1/entries/{first + 1}")
    assert await resp.read() == json.dumps(want["entries"][1]).encode()


async def test_an_entry_larger_than_the_page_bound_comes_alone_and_paging_goes_on(
        aiohttp_client: Any, database_url: str, log_signer: Signer,
        publisher: Signer) -> None:
    client = await app_client(aiohttp_client, database_url, log_signer, max_page_bytes=1024)
    await submit(client, sign_entry(release_fields("seed", "0.1"), publisher))
    start = leaves(1)  # after the release and its batch's map root
    await store_entries(database_url, start,
                        [large_release(publisher, "big", f"2.{i}") for i in range(3)], "big")
    pages = await all_pages(client, "big", 1000)
    assert [[e["index"] for e in p["entries"]] for p in pages] == [
        [start], [start + 1], [start + 2], []]


async def test_a_registry_page_is_bounded_in_bytes_too(
        aiohttp_client: Any, database_url: str, log_signer: Signer,
        publisher: Signer) -> None:
    client = await app_client(aiohttp_client, database_url, log_signer, max_page_bytes=1024)
    await submit(client, sign_entry(release_fields("seed", "0.1"), publisher))
    start = leaves(1)  # after the release and its batch's map root
    await store_entries(database_url, start,
                        [large_release(publisher, "big", f"3.{i}") for i in range(3)], "big")
    conn = await asyncpg.connect(database_url)
    try:  # the rows as registry rows: the page reads them by kind
        await conn.execute("UPDATE entries SET kind = 'keys/v1' WHERE package = 'big'")
    finally:
        await conn.close()
    resp = await client.get("/v1/registry", params={"limit": "1000"})
    page = json.loads(await resp.read())
    # Neither the release nor the map root (index start - 1) is a registry entry.
    assert [e["index"] for e in page["entries"]] == [start] and page["next_after"] == start


# -- the read quota ----------------------------------------------------------------------------


async def test_a_client_reading_too_fast_is_refused_429_and_its_writes_still_go_through(
        aiohttp_client: Any, database_url: str, log_signer: Signer,
        publisher: Signer) -> None:
    quotas = Quotas(read_rate=0.001, read_burst=8)
    client = await app_client(aiohttp_client, database_url, log_signer, quotas=quotas)
    await submit(client, sign_entry(release_fields("seed", "0.1"), publisher))
    for _ in range(6):  # log_state below spends the last two reads of the burst
        assert (await client.get("/v1/entries/0")).status == 200
    assert (await log_state(client))[0] == leaves(1)
    resp = await client.get("/checkpoint")
    error = await expect_error(resp, 429, "rate_limited")
    assert "reads" in error["message"] and int(resp.headers["Retry-After"]) >= 1
    # Writes have their own quota; the refused read changed nothing: the next index is the
    # one after the first batch (its release and map root).
    receipt = await submit(client, sign_entry(release_fields("seed", "0.2"), publisher))
    assert receipt["index"] == leaves(1)


async def test_large_pages_drain_the_read_quota_by_their_size(
        aiohttp_client: Any, database_url: str, log_signer: Signer,
        publisher: Signer) -> None:
    """A page of ~1 MiB costs about 16 tokens (1, and 1 per 64 KiB): after two, a burst of
    40 has at most 8 left for small reads, not 38."""
    quotas = Quotas(read_rate=0.001, read_burst=40)
    client = await app_client(aiohttp_client, database_url, log_signer, quotas=quotas,
                              max_page_bytes=PAGE_BYTES)
    await submit(client, sign_entry(release_fields("seed", "0.1"), publisher))
    await store_entries(database_url, leaves(1),  # after the release and its map root
                        [large_release(publisher, "big", f"4.{i}") for i in range(30)], "big")
    for _ in range(2):
        resp = await client.get("/v1/entries", params={"package": "big", "limit": "1000"})
        assert resp.status == 200 and len(await resp.read()) > PAGE_BYTES // 2
    small = 0
    while (resp := await client.get("/v1/entries/0")).status == 200:
        small += 1
        assert small < 40
    await expect_error(resp, 429, "rate_limited")
    assert small <= 8


# -- the `afl++` stumble -------------------------------------------------------------------


async def test_a_bare_plus_in_a_package_is_echoed_with_a_hint_to_percent_encode(
        client: Client, publisher: Signer) -> None:
    await submit(client, sign_entry(release_fields("afl++", "4.0+r1"), publisher))
    error = await refused(client, "GET", "/v1/entries?package=afl++", 400, "bad_package")
    assert "'afl  '" in error["message"] and "%2B" in error["message"]
    error = await refused(client, "GET", "/v1/entries?package=afl%2B%2B&version=4.0+r1", 400,
                          "bad_version")
    assert "'4.0 r1'" in error["message"] and "%2B" in error["message"]
    error = await refused(client, "GET", "/v1/entries?package=a%20b", 400, "bad_package")
    assert "'a b'" in error["message"]
    error = await refused(client, "GET", "/v1/entries", 400, "bad_package")
    assert "none was given" in error["message"] and "%2B" not in error["message"]
    resp = await client.get("/v1/entries?package=afl%2B%2B&version=4.0%2Br1")
    page = await resp.json()
    assert [e["entry"]["package"] for e in page["entries"]] == ["afl++"]


async def test_parallel_page_requests_cannot_outrun_the_read_quota(
        aiohttp_client: Any, database_url: str, log_signer: Signer,
        publisher: Signer) -> None:
    """Each page pays for the largest page before it waits for a slot: requests sent together
    are refused once their worst case is spent, though every page turns out small, and one
    client never has more than PAGES_PER_CLIENT pages in progress."""
    quotas = Quotas(read_rate=0.001, read_burst=100)
    client = await app_client(aiohttp_client, database_url, log_signer, quotas=quotas,
                              max_page_bytes=1024 * 1024)  # worst case: 16 tokens, and 1
    await submit(client, sign_entry(release_fields("seed", "0.1"), publisher))
    replies = await asyncio.gather(*(client.get("/v1/entries", params={"package": "seed"})
                                     for _ in range(12)))
    statuses = sorted(r.status for r in replies)
    assert 200 in statuses and 429 in statuses
    assert statuses.count(200) <= 100 // 17 + PAGES_PER_CLIENT
    for reply in replies:
        if reply.status == 429:
            assert (await reply.json())["error"]["code"] == "rate_limited"
