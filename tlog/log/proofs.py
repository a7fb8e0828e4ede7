"""Proofs from stored tiles: verifier/ lists the nodes and combines them, we only read.

All math lives in verifier.merkle and verifier.tiles; this module is the storage seam.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import chain

from verifier.protocol.merkle import (
    Node,
    combine,
    consistency_nodes,
    fold,
    inclusion_nodes,
    root_nodes,
)
from verifier.protocol.tiles import TileKey, nodes_from_tiles, tiles_for_nodes

TileFetcher = Callable[[Sequence[TileKey]], Awaitable[Mapping[TileKey, bytes]]]


class MissingTileError(RuntimeError):
    """Storage lacks a tile that a published tree must have: the log is inconsistent."""


async def read_nodes(nodes: Iterable[Node], fetch: TileFetcher) -> dict[Node, bytes]:
    """Node hashes for complete subtrees, read from their tiles in one batch."""
    wanted = list(nodes)
    tiles = await fetch(tiles_for_nodes(wanted))
    try:
        return nodes_from_tiles(wanted, tiles)
    except ValueError as exc:
        raise MissingTileError(str(exc)) from exc


async def inclusion_proof(index: int, size: int, fetch: TileFetcher) -> list[bytes]:
    groups = inclusion_nodes(index, size)
    return combine(groups, await read_nodes(chain.from_iterable(groups), fetch))


async def inclusion_proofs(indices: Sequence[int], size: int,
                           fetch: TileFetcher) -> dict[int, list[bytes]]:
    """Proofs for many leaves of one tree, reading all their tiles in a single batch."""
    groups = {i: inclusion_nodes(i, size) for i in set(indices)}
    nodes = {n for g in groups.values() for group in g for n in group}
    hashes = await read_nodes(nodes, fetch)
    return {i: combine(g, hashes) for i, g in groups.items()}


async def consistency_proof(first: int, second: int, fetch: TileFetcher) -> list[bytes]:
    groups = consistency_nodes(first, second)
    return combine(groups, await read_nodes(chain.from_iterable(groups), fetch))


async def tree_root(size: int, fetch: TileFetcher) -> bytes:
    nodes = root_nodes(size)
    hashes = await read_nodes(nodes, fetch)
    return fold([hashes[n] for n in nodes])
