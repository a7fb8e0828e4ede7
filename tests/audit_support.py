"""Logs to audit: a real `tlog serve` on its own database, a log written straight into the
database (to stage what an honest server would refuse), and an in-memory log behind the
client's one transport method."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tests.support import Server, make_release, start_server, submit_all, write_key
from verifier.client.log import LogClient, NotFound
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import LIFECYCLE_KINDS, parse_log_leaf
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import Signer
from verifier.protocol.package_state import Record, StateBuilder, map_root_entry
from verifier.protocol.statemap import SparseMap, stored_hash
from verifier.protocol.tiles import (
    ENTRIES_LEVEL,
    TILE_WIDTH,
    TileKey,
    TreeBuilder,
    encode_bundle,
    parse_tile_path,
    tile_width,
)


def sql(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on the log's database (to play the operator)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@dataclass
class LiveLog:
    """A `tlog serve` process on `database_url`, with the key files a verifier needs."""

    database_url: str
    signer: Signer
    workdir: Path
    server: Server | None = None

    def __post_init__(self) -> None:
        self.key_file = write_key(self.workdir / "log.key", self.signer)
        self.vkey_file = self.workdir / "log.vkey"
        self.vkey_file.write_text(self.signer.verifier().text() + "\n")

    @property
    def url(self) -> str:
        assert self.server is not None, "the log is not running"
        return self.server.url

    def start(self) -> LiveLog:
        self.server = start_server(self.database_url, self.key_file, self.workdir)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def restart(self) -> None:
        """Restart, so the server drops its in-memory tile cache and re-reads the database."""
        self.stop()
        self.start()

    def append(self, publisher: Signer, tag: str, count: int) -> int:
        """Submit `count` releases at once; the tree size after them (each batch the server
        makes of them adds its map-root entry, so more than `count` leaves)."""
        entries = [make_release(publisher, f"{tag}-pkg{i % 7}", f"1.{i}") for i in range(count)]
        results = asyncio.run(submit_all([self.url], entries))
        assert [r.status for r in results] == [201] * count, results[0].body
        return int(self.sql("SELECT max(tree_size) AS n FROM checkpoints")[0]["n"])

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return sql(self.database_url, query, *args)


def build_tiles(leaves: Sequence[bytes]) -> tuple[dict[TileKey, bytes], bytes]:
    """The hash tiles (level, n) -> data of a tree over `leaves`, and its root."""
    builder = TreeBuilder()
    tiles: dict[TileKey, bytes] = {}
    for leaf in leaves:
        builder.append(leaf_hash(leaf))
    tiles.update(builder.take_changed())
    return tiles, builder.root()


def entry_columns(leaf: bytes) -> tuple[str, str | None, str | None, int | None]:
    """(kind, package, version, counter) of a leaf as the log's entries table holds them:
    a map-root entry, or anything that is not an entry object, has no package."""
    try:
        obj = json.loads(leaf)
    except ValueError:
        return "release/v1", None, None, None
    if not isinstance(obj, dict):
        return "release/v1", None, None, None
    kind = str(obj.get("kind"))
    if kind != "release/v1" and kind not in LIFECYCLE_KINDS:
        return kind, None, None, None
    counter = obj.get("counter")
    return (kind, obj.get("package"), obj.get("version"),
            counter if isinstance(counter, int) else None)


def with_map_roots(entries: Sequence[bytes], batches: Sequence[int],
                   root: Callable[[bytes], bytes] | None = None) -> list[bytes]:
    """`entries` in batches of the given sizes (summing to len(entries)), each followed by the
    map-root/v1 leaf the log appends (package_state over every entry before it), as the
    sequencer writes them. `root(honest_root)`, when given, picks the root each map-root leaf
    commits to: a test's lying log. Entries that are not valid make no state."""
    assert sum(batches) == len(entries)
    builder, smap, out, it = StateBuilder(), SparseMap({}), [], iter(entries)
    for count in batches:
        touched: set[str] = set()
        for leaf in [next(it) for _ in range(count)]:
            touched |= _apply(builder, len(out), leaf)
            out.append(leaf)
        smap.apply(smap.update(builder.updates(touched)))
        honest = smap.root()
        out.append(map_root_entry(len(out), honest if root is None else root(honest)))
    return out


def _apply(builder: StateBuilder, index: int, leaf: bytes) -> set[str]:
    """Add a leaf's record to the states; the packages it changed (none for leaves that are
    not valid or have no package state)."""
    try:
        entry = parse_log_leaf(leaf).entry
    except EntryError:
        return set()
    kind = entry["kind"]
    if kind != "release/v1" and kind not in LIFECYCLE_KINDS:
        return set()
    counter = entry.get("counter") if kind == "release/v1" else None
    return builder.apply([Record(index, leaf_hash(leaf), kind, entry["package"],
                                 entry["version"], counter)])


def honest_map_root(leaves: Sequence[bytes]) -> bytes:
    """The map root over every package state `leaves` make (map-root leaves among them make
    none): what an honest log's map-root entry after them commits to."""
    builder, touched = StateBuilder(), set()
    for index, leaf in enumerate(leaves):
        if not leaf.startswith(b'{"kind":"map-root/v1"'):
            touched |= _apply(builder, index, leaf)
    smap = SparseMap({})
    return smap.update(builder.updates(touched)).root


def map_nodes(leaves: Sequence[bytes]) -> dict[bytes, bytes]:
    """The map nodes (by hash) the log stores for the honest map roots of `leaves`, as
    tlog.log.statemap writes them per batch, so a staged log's server can extend its map."""
    builder, smap, nodes = StateBuilder(), SparseMap({}), {}
    touched: set[str] = set()
    for index, leaf in enumerate(leaves):
        if leaf.startswith(b'{"kind":"map-root/v1"'):
            update = smap.update(builder.updates(touched))
            smap.apply(update)
            nodes.update((stored_hash(n), n) for n in update.writes.values())
            touched = set()
        else:
            touched |= _apply(builder, index, leaf)
    return nodes


def write_log(database_url: str, signer: Signer, leaves: Sequence[bytes]) -> str:
    """Store a whole log (entries, tiles, one signed checkpoint) as the service would.

    Nothing is validated: this is how a test stages a log that accepted a bad entry.
    Returns the checkpoint note.
    """
    tiles, root = build_tiles(leaves)
    note = sign_checkpoint(Checkpoint(signer.name, len(leaves), root), signer)

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "entries", columns=["idx", "leaf", "leaf_hash", "kind", "package",
                                        "version", "counter"],
                    records=[(i, leaf, leaf_hash(leaf), *entry_columns(leaf))
                             for i, leaf in enumerate(leaves)])
                nodes = map_nodes(leaves)
                await conn.executemany("INSERT INTO map_nodes (hash, data) VALUES ($1, $2)",
                                       list(nodes.items()))
                await conn.executemany("INSERT INTO tiles (level, idx, data) VALUES ($1, $2, $3)",
                                       [(lv, n, data) for (lv, n), data in tiles.items()])
                await conn.execute("INSERT INTO checkpoints (tree_size, root, note) "
                                   "VALUES ($1, $2, $3)", len(leaves), root, note)
        finally:
            await conn.close()

    asyncio.run(run())
    return note


class MemoryLog(LogClient):
    """A LogClient whose transport serves a log held in memory (C2SP tlog-tiles paths).

    Tests rewrite `leaves` or `tiles` to play a misbehaving log; `fetched` lists requests.
    """

    def __init__(self, signer: Signer, leaves: Sequence[bytes]) -> None:
        super().__init__("http://memory.invalid/", retries=0)
        self.leaves = list(leaves)
        self.tiles, root = build_tiles(self.leaves)
        self.note = sign_checkpoint(Checkpoint(signer.name, len(self.leaves), root), signer)
        self.fetched: list[str] = []

    def fetch(self, path: str, limit: int) -> bytes:
        self.fetched.append(path)
        if path == "checkpoint":
            return self.note.encode()
        level, n, width = parse_tile_path(path)
        if tile_width(level, n, len(self.leaves)) < width:
            raise NotFound(f"{path}: 404 not found")
        if level == ENTRIES_LEVEL:
            return encode_bundle(self.leaves[n * TILE_WIDTH:n * TILE_WIDTH + width])
        return self.tiles[(level, n)][:32 * width]


def releases(publisher: Signer, count: int, tag: str = "r") -> list[bytes]:
    """`count` valid, distinct release leaves."""
    from verifier.protocol.entries.release import validate_entry

    return [validate_entry(make_release(publisher, f"{tag}{i % 5}", f"0.{i}")).leaf
            for i in range(count)]

