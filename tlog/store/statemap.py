"""SQL of the package state map: its nodes (table map_nodes, by hash) and the entries a
package's state is built from (verifier.protocol.package_state).

Nodes are addressed by hash, so one walk from any root reaches the nodes of that root's map:
a proof against an old checkpoint reads the same table as the sequencer's next update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from verifier.protocol.package_state import (
    PackageState,
    Record,
    StateError,
    build_states,
    package_key,
    parse_map_root_entry,
)
from verifier.protocol.statemap import EMPTY, SparseMap, node_id

# Every node on the path of each key, from the node of hash $2 (a root) down to the key's
# leaf, another key's leaf or an empty child (whose hash, EMPTY, no row has). One query
# instead of one round trip per level. get_bit numbers bits from the least significant bit
# of each byte; the map's bit `depth` is the most significant first, hence 7 - depth % 8.
# 78 is b"N", an inner node; its left child's hash is bytes 2-33, its right one's 34-65.
SQL_MAP_PATHS = """
WITH RECURSIVE walk(key, depth, data) AS (
    SELECT k.key, 0, n.data FROM unnest($1::bytea[]) AS k(key)
    JOIN map_nodes n ON n.hash = $2
  UNION ALL
    SELECT w.key, w.depth + 1, n.data FROM walk w
    JOIN map_nodes n ON n.hash = CASE
        WHEN get_bit(w.key, (w.depth / 8) * 8 + 7 - w.depth % 8) = 1
        THEN substring(w.data FROM 34 FOR 32) ELSE substring(w.data FROM 2 FOR 32) END
    WHERE get_byte(w.data, 0) = 78 AND w.depth < 256
)
SELECT key, depth, data FROM walk"""
# Identical nodes are one row: the same subtree under two roots, or a leaf set back.
SQL_PUT_MAP_NODES = (
    "INSERT INTO map_nodes (hash, data) SELECT * FROM unnest($1::bytea[], $2::bytea[]) "
    "ON CONFLICT (hash) DO NOTHING")
_RECORD_COLUMNS = "idx, leaf_hash, kind, package, version, counter"
SQL_PACKAGE_RECORDS = (
    f"SELECT {_RECORD_COLUMNS} FROM entries "
    "WHERE package = ANY($1::text[]) AND idx < $2 ORDER BY idx")
# Releases and lifecycle statements are the entries with a package (migration 0005).
SQL_ALL_RECORDS = (
    f"SELECT {_RECORD_COLUMNS} FROM entries WHERE package IS NOT NULL AND idx < $1 ORDER BY idx")


async def map_paths(conn: Any, root: bytes, keys: Sequence[bytes]) -> dict[int, bytes]:
    """The stored nodes on the paths of `keys` in the map of `root`, by node id: all that
    SparseMap needs to update those keys or prove one of them."""
    rows = await conn.fetch(SQL_MAP_PATHS, list(keys), root)
    return {node_id(bytes(r["key"]), int(r["depth"])): bytes(r["data"]) for r in rows}


async def put_map_nodes(conn: Any, nodes: Mapping[bytes, bytes]) -> None:
    """Store nodes by hash (inside the caller's transaction)."""
    if nodes:
        await conn.execute(SQL_PUT_MAP_NODES, list(nodes), list(nodes.values()))


def _record(row: Any) -> Record:
    counter = row["counter"]
    return Record(int(row["idx"]), bytes(row["leaf_hash"]), str(row["kind"]),
                  str(row["package"]), str(row["version"]),
                  None if counter is None else int(counter))


async def package_records(conn: Any, packages: Sequence[str], before: int) -> list[Record]:
    """The releases and lifecycle statements of `packages` at indices below `before`, in
    log order."""
    rows = await conn.fetch(SQL_PACKAGE_RECORDS, list(packages), before)
    return [_record(r) for r in rows]


async def all_records(conn: Any, before: int) -> list[Record]:
    """Every release and lifecycle statement below `before`: a log written before the map
    existed builds it from these once."""
    return [_record(r) for r in await conn.fetch(SQL_ALL_RECORDS, before)]


class MapStore:
    """The map reads and writes on one connection: inside an append transaction for the
    sequencer, or on a pooled connection for a proof."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def paths(self, root: bytes, keys: Sequence[bytes]) -> dict[int, bytes]:
        return await map_paths(self._conn, root, keys)

    async def put_nodes(self, nodes: Mapping[bytes, bytes]) -> None:
        await put_map_nodes(self._conn, nodes)

    async def records(self, packages: Sequence[str], before: int) -> list[Record]:
        return await package_records(self._conn, packages, before)

    async def all_records(self, before: int) -> list[Record]:
        return await all_records(self._conn, before)

    async def leaf(self, index: int) -> bytes | None:
        leaf = await self._conn.fetchval("SELECT leaf FROM entries WHERE idx = $1", index)
        return None if leaf is None else bytes(leaf)

    async def package_state(self, package: str, size: int) -> tuple[PackageState | None, bytes,
                                                                     bytes] | None:
        """The state of `package` that the tree of `size` commits to (None: never released),
        the map proof of it, and the map root; None when that tree does not end with a
        map-root/v1 entry (it predates the map, or is not a batch's end)."""
        leaf = await self.leaf(size - 1) if size > 0 else None
        if leaf is None:
            return None
        try:
            covered, root = parse_map_root_entry(leaf)
        except StateError:
            return None
        if covered != size - 1:
            return None
        key = package_key(package)
        records = await self.records([package], covered)
        nodes = await self.paths(root, [key]) if root != EMPTY else {}
        return build_states(records).get(package), SparseMap(nodes).prove(key), root
