"""Reads from a hot standby: a LogReader that sends what it can to a streaming replica.

`tlog serve --read-database-url URL` puts a RoutingReader in front of the primary's
Storage. Writes, tokens, witness cosignatures and the sequencer never come here: they stay
on the primary (the sequencer and the token ledger hold the primary's Storage itself).

The rule: the standby's *replayed size* is the size of the latest checkpoint it holds. A
batch's entries, tiles, map nodes and checkpoint commit in one transaction, and a hot standby
shows a transaction whole or not at all, so every row of a tree of that size is on the
standby. Then each read goes to the standby only if it is about a size it has replayed:

- a read about a given size or index (a checkpoint, an entry, a full tile or an entry
  bundle, a package state, "is size N published?") goes to the standby when that size is
  within its replayed size, to the primary otherwise;
- an open-ended read (the latest checkpoint, searches by package and registry pages, the
  explorer's recent releases and package names, a partial tile, a proof's tiles, a leaf
  hash the standby does not know) goes to the standby
  only when it has replayed every size this process knows the log published (the largest
  it answered about, or saw on the primary), so an answer never goes back in time
  after one from the primary, and a publisher finds its receipt's entry;
- the witness-policy reads (published cosigned checkpoints and cosignature lines) change
  without a new tree size, so they stay on the primary.

Whatever the standby cannot answer now (a query error, a dropped connection, a replay
conflict) is asked of the primary instead, and the standby is left alone until the
background refresh finds it answering again: clients see no error while the primary
answers, and only the reads in flight when it failed wait for it. Every fallback is counted by
reason, and the lag (sizes the standby is behind) is refreshed every REFRESH seconds.

A standby whose checkpoint differs from the primary's of the same size is another log (or
a copy restored from elsewhere): it is never read, and the mismatch is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from tlog.store.outage import DatabaseHealth
from tlog.store.postgres import FULL_TILE_BYTES, Storage
from tlog.store.reader import LogReader, StoredCheckpoint
from verifier.protocol.tiles import TILE_HEIGHT, TILE_WIDTH, TileKey

log = logging.getLogger("tlog.standby")
T = TypeVar("T")
REFRESH = 1.0  # seconds between checks of the standby's replayed size (and the lag metric)
RESURVEY = 0.01  # seconds: an on-demand check of the replayed size is shared this long
CONNECT_TIMEOUT = 2.0  # seconds; a standby that does not answer must not hold reads long
# What the standby fails with when it cannot answer now; anything else is a bug to see.
STANDBY_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
Counted = Callable[[str], None]  # called with "standby" or the reason of a fallback


class RoutingReader:
    """A LogReader over a primary and a standby Storage (see the module's rule)."""

    def __init__(self, primary: Storage, standby: Storage, count: Counted) -> None:
        self.primary = primary
        self.standby = standby
        self.count = count
        self.replayed = -1  # the standby's replayed size; -1 until known (and verified)
        self.known = 0  # the largest size this process knows the log published
        self.down = False  # set by a standby error, cleared when refresh() reaches it
        self._surveyed = 0.0
        self._refused_size = -1  # the mismatching size last logged
        # Whether the standby's checkpoint was found on the primary (refresh checks it every
        # round): what a verified standby replays later comes from the same primary.
        self.verified = False

    @property
    def lag(self) -> int:
        """Tree sizes the standby is behind what this process knows was published."""
        return max(self.known - max(self.replayed, 0), 0)

    def _learn(self, size: int) -> None:
        self.known = max(self.known, size, self.primary.published)

    def _usable(self) -> bool:
        return self.replayed >= 0 and not self.down

    async def _replayed_at_least(self, size: int) -> bool:
        """Whether the standby replayed a tree of `size`; asks it again (once per RESURVEY
        at most) when the size it last said is smaller."""
        if not self._usable():
            return False
        if self.replayed < size and time.monotonic() - self._surveyed >= RESURVEY:
            with suppress(*STANDBY_ERRORS):
                await self._survey()
        return self._usable() and self.replayed >= size

    async def _survey(self) -> StoredCheckpoint | None:
        """Read the standby's latest checkpoint: its replayed size. A standby error marks it
        down and is raised."""
        self._surveyed = time.monotonic()
        try:
            latest = await self.standby.latest_checkpoint()
        except STANDBY_ERRORS:
            self._mark_down("survey")
            raise
        if self.verified and latest is not None:
            self.replayed = max(self.replayed, latest.size)
        return latest

    def _mark_down(self, why: str) -> None:
        if not self.down:
            log.warning("standby unavailable (%s): reads go to the primary until it "
                        "answers again", why)
        self.down = True

    async def _read(self, on_standby: bool, read: Callable[[Storage], Awaitable[T]],
                    reason: str = "behind") -> T:
        """`read` on the standby when `on_standby`, else (or if the standby fails) on the
        primary, counting which."""
        if on_standby:
            try:
                result = await read(self.standby)
            except STANDBY_ERRORS as exc:
                self._mark_down(type(exc).__name__)
                reason = "error"
            else:
                self.count("standby")
                return result
        elif not self._usable():
            reason = "unavailable"
        self.count(reason)
        return await read(self.primary)

    async def _caught_up(self) -> bool:
        self._learn(0)
        return await self._replayed_at_least(self.known)

    async def refresh(self) -> None:
        """Learn the primary's latest size and the standby's replayed one, and check that
        the standby holds this log: its latest checkpoint must be the primary's of the same
        size. Run every REFRESH seconds; errors mark the side that failed."""
        with suppress(*STANDBY_ERRORS):  # the primary's outage is the outage code's business
            latest = await self.primary.latest_checkpoint()
            self._learn(0 if latest is None else latest.size)
        try:
            mine = await self.standby.latest_checkpoint()
        except STANDBY_ERRORS as exc:
            self._mark_down(type(exc).__name__)
            return
        if mine is None:
            return
        try:
            theirs = await self.primary.checkpoint_at(mine.size)
        except STANDBY_ERRORS:  # the primary is out: the check waits for the next round
            if self.verified:
                self.down = False
                self.replayed = max(self.replayed, mine.size)
            return
        if theirs is None or theirs.root != mine.root:
            if self._refused_size != mine.size:
                log.error("the standby's checkpoint of size %d is not the primary's: it is "
                          "not a copy of this log, and is not read", mine.size)
            self._refused_size = mine.size
            self.verified, self.replayed = False, -1
            return
        if self.down:
            log.warning("standby answers again: reads about sizes it replayed go to it")
        self.verified, self.down = True, False
        self.replayed = max(self.replayed, mine.size)

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The standby's latest when it is not older than what this process knows was
        published (its own receipts included): an answer never goes back in time."""
        self._learn(0)
        if not self._usable():
            self.count("unavailable")
        else:
            try:
                latest = await self._survey()  # one query: the answer is its replayed size
            except STANDBY_ERRORS:
                self.count("error")
            else:
                if self.verified and latest is not None and latest.size >= self.known:
                    self.count("standby")
                    return latest
                self.count("behind")
        latest = await self.primary.latest_checkpoint()
        self._learn(0 if latest is None else latest.size)
        return latest

    async def published_at_least(self, size: int) -> bool:
        if await self._replayed_at_least(size):
            self.count("standby")
            return True
        self.count("behind" if self._usable() else "unavailable")
        found = await self.primary.published_at_least(size)
        if found:
            self._learn(size)
        return found

    async def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        on = await self._replayed_at_least(size)
        return await self._read(on, lambda s: s.checkpoint_at(size))

    async def tile(self, level: int, n: int) -> bytes | None:
        full_at = (n + 1) << (TILE_HEIGHT * (max(level, 0) + 1))
        on = await self._replayed_at_least(full_at) or await self._caught_up()
        return await self._read(on, lambda s: s.tile(level, n))

    async def tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        """Full tiles from the standby; partial ones from it only when it is caught up (a
        partial tile of a size it has not replayed is too narrow for the proof)."""
        if not await self._replayed_at_least(0):
            return await self._read(False, lambda s: s.tiles(keys))
        found = await self._read(True, lambda s: s.tiles(keys))
        short = [k for k in keys if len(found.get(k, b"")) != FULL_TILE_BYTES]
        if short and not await self._caught_up():
            found.update(await self._read(False, lambda s: s.tiles(short)))
        return found

    async def entry(self, index: int) -> bytes | None:
        on = await self._replayed_at_least(index + 1)
        return await self._read(on, lambda s: s.entry(index))

    async def entry_bundle(self, n: int, width: int = TILE_WIDTH) -> bytes | None:
        on = await self._replayed_at_least(n * TILE_WIDTH + width)
        return await self._read(on, lambda s: s.entry_bundle(n, width))

    async def by_package(self, package: str, version: str | None, after: int,
                         limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        return await self._read(await self._caught_up(), lambda s: s.by_package(
            package, version, after, limit, max_bytes))

    async def registry_page(self, after: int, limit: int,
                            max_bytes: int) -> list[tuple[int, bytes]]:
        return await self._read(await self._caught_up(),
                                lambda s: s.registry_page(after, limit, max_bytes))

    async def recent_releases(self, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        return await self._read(await self._caught_up(),
                                lambda s: s.recent_releases(limit, max_bytes))

    async def packages_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return await self._read(await self._caught_up(),
                                lambda s: s.packages_with_prefix(prefix, limit))

    async def package_latest(self, package: str, limit: int,
                             max_bytes: int) -> list[tuple[int, bytes]]:
        return await self._read(await self._caught_up(),
                                lambda s: s.package_latest(package, limit, max_bytes))

    async def index_of(self, leaf_hash: bytes) -> int | None:
        """An index the standby knows is final; a miss is asked of the primary unless the
        standby is caught up (the entry may be newer than the standby)."""
        found = await self._read(await self._replayed_at_least(0),
                                 lambda s: s.index_of(leaf_hash))
        if found is None and not await self._caught_up():
            return await self._read(False, lambda s: s.index_of(leaf_hash))
        return found

    async def package_state(self, package: str, size: int
                            ) -> tuple[dict[str, Any] | None, bytes, bytes] | None:
        on = await self._replayed_at_least(size)
        return await self._read(on, lambda s: s.package_state(package, size))

    async def latest_published(self, rule: str) -> StoredCheckpoint | None:
        return await self.primary.latest_published(rule)

    async def published_covering(self, rule: str, index: int) -> StoredCheckpoint | None:
        return await self.primary.published_covering(rule, index)

    async def cosignature_lines(self, size: int) -> list[str]:
        return await self.primary.cosignature_lines(size)

    async def ping(self) -> None:
        """Readiness is the primary's: it is where writes commit."""
        await self.primary.ping()

    async def health(self) -> DatabaseHealth:
        return await self.primary.health()

    # The caches that outages and swaps concern are the primary's (the standby's Storage
    # keeps its own, of immutable full tiles and bundles only, checked against the primary
    # by `refresh`).
    def identity(self) -> str | None:
        return self.primary.identity()

    def on_swap(self, callback: Callable[[str], None]) -> None:
        self.primary.on_swap(callback)

    async def check_database(self) -> None:
        await self.primary.check_database()


if TYPE_CHECKING:  # mypy checks that the routing reader is what the HTTP layer reads
    _READER: type[LogReader] = RoutingReader


async def connect_standby(url: str, pool_options: dict[str, Any] | None = None) -> Storage:
    """A Storage on the standby that opens connections when first used: a standby that is
    down when the log starts is not a reason to refuse to serve from the primary."""
    async def no_reset(conn: asyncpg.Connection) -> None:
        return None

    pool = await asyncpg.create_pool(url, min_size=0, max_size=10, reset=no_reset,
                                     timeout=CONNECT_TIMEOUT, command_timeout=30,
                                     **(pool_options or {}))
    return Storage(pool)


@asynccontextmanager
async def standby_reader(primary: Storage, url: str, count: Counted,
                         pool_options: dict[str, Any] | None = None
                         ) -> AsyncIterator[RoutingReader]:
    """A RoutingReader over `primary` and the standby at `url`, refreshed in the
    background, closed on exit."""
    standby = await connect_standby(url, pool_options)
    reader = RoutingReader(primary, standby, count)
    await reader.refresh()
    task = asyncio.create_task(_refresh_forever(reader))
    try:
        yield reader
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await standby.close()


async def _refresh_forever(reader: RoutingReader) -> None:
    while True:
        await asyncio.sleep(REFRESH)
        try:
            await reader.refresh()
        except Exception:  # a refresh must never stop: the next round tries again
            log.exception("refreshing the standby's state failed")
