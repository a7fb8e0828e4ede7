"""The right edge of the stored tree: loaded from storage once, checked against its root.

A tree of `size` leaves is resumed from the rightmost partial tile of each level (C2SP
tlog-tiles); verifier.protocol.tiles.TreeBuilder does the math, this module reads the tiles
and refuses an edge that is missing, short, or does not reproduce the published root. The
sequencer loads it at the start of every batch (inside its append transaction), `tlog serve`
at startup (tlog.log.startup), and bench/build_log.py for each batch it appends.

It only reads. In the append transaction it sees the edge the last committed batch wrote
(the lock keeps other writers out), so a refusal here means the stored tree itself is
broken, never that a batch is half written: one batch's tiles and checkpoint commit together.
"""

from __future__ import annotations

from tlog.log.proofs import TileFetcher
from verifier.protocol.tiles import TreeBuilder


class EdgeError(Exception):
    """The stored right edge is incomplete or does not reproduce the published root."""


async def read_edge(fetch: TileFetcher, size: int) -> dict[int, bytes]:
    """Level -> data of the partial tile at the right edge of the tree of `size`, each cut to
    exactly its width; one read for all levels. EdgeError when a tile is missing or short."""
    keys = TreeBuilder.edge_keys(size)
    tiles = await fetch([(level, n) for level, n, _ in keys])
    edge: dict[int, bytes] = {}
    for level, n, width in keys:
        data = tiles.get((level, n), b"")
        if len(data) < 32 * width:
            raise EdgeError(f"tile {level}/{n} at the right edge of size {size} is missing")
        edge[level] = data[:32 * width]  # a wider stored tile starts with the same hashes
    return edge


def edge_builder(size: int, edge: dict[int, bytes], root: bytes | None) -> TreeBuilder:
    """A TreeBuilder resumed from `edge` (read_edge), refused (EdgeError) unless it gives
    `root`; None when there is no checkpoint yet to check against."""
    builder = TreeBuilder(size, edge)
    if root is not None and builder.root() != root:
        raise EdgeError(f"the stored tiles do not reproduce the root of size {size}")
    return builder


async def load_edge(fetch: TileFetcher, size: int, root: bytes | None) -> TreeBuilder:
    """The tree of `size` leaves, ready to append to: its stored right edge, checked to
    reproduce `root` (the latest checkpoint's; None for a log without one)."""
    return edge_builder(size, await read_edge(fetch, size), root)
