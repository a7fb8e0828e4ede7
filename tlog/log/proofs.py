"""Proofs from stored tiles: verifier/ plans them (which tiles, how they combine), we read.

All math lives in verifier.protocol (merkle, tiles); this module is the storage seam.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from verifier.protocol.tiles import (
    TileKey,
    TileProof,
    consistency_from_tiles,
    inclusion_from_tiles,
)

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
    """Proofs for many leaves of one tree, reading all their tiles in a single batch."""
    proofs = {i: inclusion_from_tiles(i, size) for i in set(indices)}
    tiles = await fetch(sorted({key for p in proofs.values() for key in p.tiles}))
    try:
        return {i: p.finish(tiles) for i, p in proofs.items()}
    except ValueError as exc:
        raise MissingTileError(str(exc)) from exc


async def consistency_proof(first: int, second: int, fetch: TileFetcher) -> list[bytes]:
    return await _build(consistency_from_tiles(first, second), fetch)

