"""How many leaves the log appends: the rule the tests count with.

Every batch that adds entries ends with one more leaf, the log's own map-root/v1 entry
(tlog.log.statemap), so a batch of n new entries adds n + 1 leaves, and a batch that adds
nothing (only duplicates or refusals) adds none and publishes no new checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable


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
