"""The package state map, kept by the sequencer: the map-root/v1 entry that ends each batch.

The entry commits to every package's state over all entries before it
(verifier.protocol.package_state), so a checkpoint, whose last leaf it is, commits to them
too. Its nodes are written in the batch's transaction: a crash before COMMIT leaves neither
the entry nor its nodes, after COMMIT both, so the root of the log's last leaf can always be
walked. A log written before the map existed builds it from all its entries in its first
batch after the upgrade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tlog.log.mapcache import MapBatch, MapCache
from tlog.store.postgres import NewEntry
from tlog.store.statemap import MapStore
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.package_state import (
    MAP_ROOT_KIND,
    PackageState,
    Record,
    StateBuilder,
    StateError,
    build_states,
    map_root_entry,
    package_key,
    parse_map_root_entry,
)
from verifier.protocol.statemap import EMPTY, ROOT_ID, SparseMap, Update, stored_hash


class MapError(Exception):
    """The map cannot be extended from what is stored: the log's own state is wrong."""


async def next_map_root(store: MapStore, size: int, new: Sequence[NewEntry],
                        cache: MapCache | None = None) -> tuple[NewEntry, MapBatch]:
    """The map-root/v1 entry ending a batch: `size` entries were logged before it, `new`
    are the batch's (indices size, size + 1, ...), and it takes the next index. The MapBatch
    goes to cache.commit once the batch's COMMIT succeeded."""
    cache = cache if cache is not None else MapCache(max_nodes=0, max_releases=0)
    index = size + len(new)
    known = cache.root_at(size)
    root, rebuild = (known, False) if known is not None else await _previous_root(store, size)
    batch = [Record(e.index, e.leaf_hash, e.kind, e.package, e.version, e.counter)
             for e in new if e.package is not None and e.version is not None]
    packages = sorted({r.package for r in batch})
    if rebuild:
        seed = build_states(await store.all_records(size))
        packages = sorted(set(seed) | set(packages))
    else:
        seed = cache.states_at(size, packages)
        uncached = [p for p in packages if p not in seed]
        seed.update(build_states(await store.records(uncached, size)) if uncached else {})
    done = MapBatch(size, index + 1, {}, {})
    if packages:
        nodes = await _paths(store, cache, root, [package_key(p) for p in packages], done)
        if root != EMPTY and (ROOT_ID not in nodes or stored_hash(nodes[ROOT_ID]) != root):
            raise MapError(f"the map root of entry {size - 1} is not in the stored map")
        # Hashing states and nodes is CPU work: off the event loop.
        update, states = await asyncio.to_thread(_update, seed, size, batch, packages, nodes)
        written = {stored_hash(node): node for node in update.writes.values()}
        # Every node is written, even one the cache holds: the cache may have it from
        # another database (a restore), and the insert ignores one already stored.
        await store.put_nodes(written)
        done.nodes.update(written)
        done.states.update(states)
        root = update.root
    # A batch of registry entries only changes no package: the map, and its root, stay.
    done.root = root
    leaf = map_root_entry(index, root)
    return NewEntry(index, leaf, leaf_hash(leaf), None, None, kind=MAP_ROOT_KIND), done


async def _paths(store: MapStore, cache: MapCache, root: bytes, keys: list[bytes],
                 done: MapBatch) -> dict[int, bytes]:
    """The nodes on the keys' paths: from the cache, and the rest from the database (kept
    for the cache: stored nodes are durable whatever this batch becomes)."""
    if root == EMPTY:
        return {}
    nodes, missing = cache.walk(root, keys)
    if missing:
        stored = await store.paths(root, missing)
        nodes.update(stored)
        done.nodes.update((stored_hash(n), n) for n in stored.values())
    return nodes


async def _previous_root(store: MapStore, size: int) -> tuple[bytes, bool]:
    """The map root of the log's last leaf, and whether the map must be built from scratch
    (a log that has entries but no map root at its end predates the map)."""
    if size == 0:
        return EMPTY, False
    leaf = await store.leaf(size - 1)
    if leaf is None:
        raise MapError(f"entry {size - 1} of the published tree is not stored")
    try:
        covered, root = parse_map_root_entry(leaf)
    except StateError:
        return EMPTY, True
    if covered != size - 1:
        raise MapError(f"the map root at entry {size - 1} covers {covered} entries")
    return root, False


def _update(seed: dict[str, PackageState], size: int, batch: list[Record],
            packages: list[str], nodes: dict[int, bytes]
            ) -> tuple[Update, dict[str, PackageState]]:
    """The map's update for the packages' states after the batch's records, over the stored
    `nodes` on their paths; and those states."""
    builder = StateBuilder(seed, after=size - 1)
    try:
        builder.apply(batch)
    except StateError as exc:
        raise MapError(f"the entries do not make a package state: {exc}") from exc
    try:
        update = SparseMap(nodes).update(builder.updates(packages))
    except LookupError as exc:
        raise MapError(f"the stored map is incomplete: {exc}") from exc
    return update, {p: builder.states[p] for p in packages}
