"""Streaming over a whole log in bounded memory, using every core.

`bundles` fetches entry bundles in order with a few requests in flight; `ordered_map` runs a
function over chunks in worker processes (or inline) with a bounded number in flight and
yields results in order; `check_leaves` is the per-chunk work of validating entries. Audit and
monitor are built from these three.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from verifier.client import LogClient
from verifier.entry import EntryError
from verifier.merkle import leaf_hash
from verifier.registry import parse_log_leaf
from verifier.tiles import TILE_WIDTH

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Checked:
    """One entry after validation: its entry when valid, the reason when not."""

    index: int
    leaf_hash: bytes
    entry: dict[str, Any] | None
    error: str | None


def check_leaves(first_index: int, leaves: list[bytes]) -> list[Checked]:
    """Validate consecutive leaves of any kind the log accepts (release/v1 and the registry
    kinds): schema, canonical form, signature. Who may sign registry entries is the replay's
    question (verifier.registry.Registry), not this one."""
    out = []
    for i, leaf in enumerate(leaves):
        try:
            entry = parse_log_leaf(leaf)
            out.append(Checked(first_index + i, entry.leaf_hash, entry.entry, None))
        except EntryError as exc:
            out.append(Checked(first_index + i, leaf_hash(leaf), None, f"{exc.code}: {exc}"))
    return out


def hash_leaves(first_index: int, leaves: list[bytes]) -> list[bytes]:
    return [leaf_hash(leaf) for leaf in leaves]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ordered_map(fn: Callable[[int, list[bytes]], R], chunks: Iterable[tuple[int, list[bytes]]],
                workers: int, in_flight: int | None = None,
                initializer: Callable[[], None] | None = None) -> Iterator[R]:
    """fn(*chunk) for each chunk, in order; `workers` processes (0: inline in this process).

    At most `in_flight` chunks (default 2 per worker + 2) are queued, so memory stays
    bounded however long the log. `initializer` runs first in each worker process.
    """
    if workers <= 0:
        for first, leaves in chunks:
            yield fn(first, leaves)
        return
    limit = in_flight or 2 * workers + 2
    with ProcessPoolExecutor(max_workers=workers, initializer=initializer) as pool:
        yield from _drain(pool, fn, chunks, limit)


def _drain(pool: Executor, fn: Callable[[int, list[bytes]], R],
           chunks: Iterable[tuple[int, list[bytes]]], limit: int) -> Iterator[R]:
    pending: deque[Future[R]] = deque()
    for first, leaves in chunks:
        pending.append(pool.submit(fn, first, leaves))
        if len(pending) >= limit:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def bundles(client: LogClient, size: int, start: int = 0,
            prefetch: int = 4) -> Iterator[tuple[int, list[bytes]]]:
    """(first index, leaves) of every entry bundle from the one holding `start` up to `size`.

    The first chunk begins exactly at `start`. Bundles are fetched `prefetch` at a time by
    threads and yielded in order; they are not verified here.
    """
    if not 0 <= start <= size:
        raise ValueError(f"start {start} is outside the tree of size {size}")
    first_bundle = start // TILE_WIDTH
    last_bundle = (size + TILE_WIDTH - 1) // TILE_WIDTH
    with ThreadPoolExecutor(max_workers=prefetch) as pool:
        pending: deque[tuple[int, Future[list[bytes]]]] = deque()
        for n in range(first_bundle, last_bundle):
            pending.append((n, pool.submit(client.entry_bundle, n, size)))
            if len(pending) > prefetch:
                yield _chunk(*pending.popleft(), start)
        while pending:
            yield _chunk(*pending.popleft(), start)


def _chunk(n: int, future: Future[list[bytes]], start: int) -> tuple[int, list[bytes]]:
    first = n * TILE_WIDTH
    leaves = future.result()
    skip = max(0, start - first)
    return first + skip, leaves[skip:]
