"""Proofs from stored tiles: verifier/ plans them (which tiles, how they combine), we read.

All math lives in verifier.protocol (merkle, tiles); this module is the storage seam.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from verifier.protocol.merkle import combine
from verifier.protocol.tiles import (
    TileKey,
    TileProof,
    consistency_from_tiles,
    inclusion_from_tiles,
    nodes_from_tiles,
)

IN_THREAD = 64  # proofs built at once from this many on: milliseconds, off the event loop
TileFetcher = Callable[[Sequence[TileKey]], Awaitable[Mapping[TileKey, bytes]]]


class MissingTileError(RuntimeError):
    """Storage lacks a tile that a published tree must have: the log is inconsistent."""


async def _build(proof: TileProof, fetch: TileFetcher) -> list[bytes]:
    tiles = await fetch(proof.tiles)
    try:
        return proof.finish(tiles)
    except ValueError as exc:
        raise MissingTileError(str(exc)) from exc


async def inclusion_proof(index: int, size: int, fetch: TileFetcher) -> list[bytes]:
    return await _build(inclusion_from_tiles(index, size), fetch)


async def inclusion_proofs(indices: Sequence[int], size: int,
                           fetch: TileFetcher) -> dict[int, list[bytes]]:
    """Proofs for many leaves of one tree, reading all their tiles in a single batch.

    Neighbouring leaves share most of their proof nodes: each node is hashed once for all
    (building every proof on its own hashed the same subtrees again for each leaf, 40% of
    the event loop's time with batches of 1,000), and many proofs are built in a thread."""
    if len(indices) < IN_THREAD:
        proofs, keys = _plan_all(indices, size)
        return _finish_all(proofs, await fetch(keys))
    proofs, keys = await asyncio.to_thread(_plan_all, indices, size)
    return await asyncio.to_thread(_finish_all, proofs, await fetch(keys))


def _plan_all(indices: Sequence[int], size: int
              ) -> tuple[dict[int, TileProof], list[TileKey]]:
    proofs = {i: inclusion_from_tiles(i, size) for i in set(indices)}
    return proofs, sorted({key for p in proofs.values() for key in p.tiles})


def _finish_all(proofs: Mapping[int, TileProof],
                tiles: Mapping[TileKey, bytes]) -> dict[int, list[bytes]]:
    try:
        nodes = nodes_from_tiles({n for p in proofs.values() for n in p.nodes}, tiles)
    except ValueError as exc:
        raise MissingTileError(str(exc)) from exc
    return {i: combine(p.groups, nodes) for i, p in proofs.items()}


async def consistency_proof(first: int, second: int, fetch: TileFetcher) -> list[bytes]:
    return await _build(consistency_from_tiles(first, second), fetch)

