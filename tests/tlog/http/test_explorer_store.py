"""The explorer's reads on a real PostgreSQL (tlog.store.explore), through the store and
through the standby router (tlog.store.routing), which sends them to a caught-up standby:
here a second pool on the same database, which is a standby that replayed everything."""

from __future__ import annotations

import json
from typing import Any

from tests.support import make_release
from tests.tlog.http.test_lifecycle import post, statement
from tlog.store.postgres import Storage
from tlog.store.routing import RoutingReader
from verifier.protocol.entries.lifecycle import HALT_KIND
from verifier.protocol.note import Signer

NAMES = ["a", "a+b", "a-b", "a.b", "a/b", "a@b", "a_b", "ab", "abc", "b", "A"]


async def test_explorer_reads_through_the_store_and_the_router(
        client: Any, publisher: Signer, database_url: str) -> None:
    entries = [make_release(publisher, name, "1.0") for name in NAMES]
    resp = await client.post("/v1/entries/batch", json={"entries": entries})
    assert resp.status in (200, 201)
    await post(client, make_release(publisher, "ab", "2.0"), 201)
    await post(client, statement(publisher, HALT_KIND, "ab", "2.0"), 201)
    primary, standby = await Storage.connect(database_url), await Storage.connect(database_url)
    counted: list[str] = []
    router = RoutingReader(primary, standby, counted.append)
    try:
        await router.refresh()
        for reader in (primary, router):
            # Every name with the prefix, in byte order, whatever its punctuation.
            assert await reader.packages_with_prefix("a", 50) == sorted(
                n for n in NAMES if n.startswith("a"))
            assert await reader.packages_with_prefix("ab", 50) == ["ab", "abc"]
            assert await reader.packages_with_prefix("a", 3) == ["a", "a+b", "a-b"]
            assert await reader.packages_with_prefix("zz", 50) == []
            latest = await reader.package_latest("ab", 10, 1 << 20)
            kinds = [json.loads(leaf)["kind"] for _, leaf in latest]
            assert kinds == ["halt/v1", "release/v1", "release/v1"]  # newest first
            assert [i for i, _ in latest] == sorted((i for i, _ in latest), reverse=True)
            assert len(await reader.package_latest("ab", 2, 1 << 20)) == 2
            assert len(await reader.package_latest("ab", 10, 1)) == 1  # the byte bound
            recent = await reader.recent_releases(3, 1 << 20)
            assert [json.loads(leaf)["version"] for _, leaf in recent] == ["2.0", "1.0", "1.0"]
            assert all(json.loads(leaf)["kind"] == "release/v1"
                       for _, leaf in await reader.recent_releases(50, 1 << 20))
        assert counted.count("standby") >= 7
    finally:
        await primary.close()
        await standby.close()
