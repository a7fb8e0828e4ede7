"""How many leaves the log appends, the rule the tests count with, and reading them back.

Every batch that adds entries ends with one more leaf, the log's own map-root/v1 entry
(tlog.log.statemap), so a batch of n new entries adds n + 1 leaves, and a batch that adds
nothing (only duplicates or refusals) adds none and publishes no new checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import rfc8785

from verifier.protocol.merkle import leaf_hash
from verifier.protocol.package_state import parse_map_root_entry


def leaves(entries_in_batch: int) -> int:
    """Leaves a batch of `entries_in_batch` new entries adds: them and its map-root entry."""
    return entries_in_batch + 1 if entries_in_batch else 0


def size_after(batches: Iterable[int]) -> int:
    """Tree size after batches of these many new entries each, from an empty log."""
    return sum(leaves(n) for n in batches)


def alone(n: int) -> int:
    """Index of the n-th entry (from 0) when each entry is published in a batch of its own:
    every earlier batch took its entry and a map-root leaf."""
    return 2 * n


async def logged_leaf(client: Any, index: int) -> bytes:
    """Leaf `index` as GET /v1/entries serves it (the JCS bytes of its entry), checked
    against the leaf hash served with it."""
    resp = await client.get(f"/v1/entries/{index}")
    body = await resp.json()
    assert resp.status == 200, body
    leaf = bytes(rfc8785.dumps(body["entry"]))
    assert leaf_hash(leaf).hex() == body["leaf_hash"]
    return leaf


async def with_map_roots(client: Any, stored: dict[int, bytes],
                         sizes: Iterable[int]) -> list[bytes]:
    """Every leaf of the tree in log order: the entries a test appended to an empty log
    (`stored`, index -> leaf) and, read back from the log, the map-root/v1 leaf ending each
    of its batches, whose checkpoints had these `sizes`. Fails if anything else was
    appended, or if a map root is not at its batch's end or does not cover the entries
    before it."""
    ends = sorted(set(sizes))
    size = ends[-1]
    map_roots = sorted(set(range(size)) - set(stored))
    assert map_roots == [s - 1 for s in ends]
    leaves = dict(stored)
    for index in map_roots:
        leaves[index] = await logged_leaf(client, index)
        assert parse_map_root_entry(leaves[index])[0] == index
    assert sorted(leaves) == list(range(size))
    return [leaves[i] for i in range(size)]
