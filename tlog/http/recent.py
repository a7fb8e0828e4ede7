"""The latest checkpoint for reads that may be a moment old: GET /checkpoint (without a
witness policy) and proofs that name no tree size.

Reading it from the database for each such request was a third of their cost. Any
checkpoint the log published is a correct answer to them (a client checks consistency with
what it saw before; C2SP tlog-tiles lets checkpoints be cached), so one read serves every
request for `ttl` seconds, and concurrent requests share one read. It never serves a
checkpoint older than one this process has seen published (its own appends' included,
through the reader's `published`), so a submitter's receipt is never newer than the
/checkpoint the same server answers right after; and it is dropped when the storage finds
another database behind its URL (tlog.store.identity).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from tlog.store.reader import StoredCheckpoint

DEFAULT_TTL = 0.25  # seconds


class RecentCheckpoint:
    """One read of the latest checkpoint, shared for `ttl` seconds (see above)."""

    def __init__(self, fetch: Callable[[], Awaitable[StoredCheckpoint | None]],
                 published: Callable[[], int], ttl: float = DEFAULT_TTL) -> None:
        self._fetch = fetch
        self._published = published
        self.ttl = ttl
        self._value: StoredCheckpoint | None = None
        self._at = 0.0
        self._generation = 0  # bumped by drop()
        self._reading: asyncio.Future[StoredCheckpoint | None] | None = None

    async def get(self) -> StoredCheckpoint | None:
        value = self._value
        if (value is not None and time.monotonic() - self._at < self.ttl
                and self._published() <= value.size):
            return value
        latest = await self.fresh()
        if latest is not None and latest.size < self._published():
            # the shared read began before this process's last COMMIT: one of our own
            latest = await self.fresh()
        return latest

    def drop(self) -> None:
        """Forget the kept checkpoint: another database answers now (a restore, a swap).
        A read under way then is not kept either."""
        self._value = None
        self._generation += 1
        self._reading = None

    async def fresh(self) -> StoredCheckpoint | None:
        """A read from the database (shared with the requests that asked meanwhile)."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._reading)

    async def _read(self) -> StoredCheckpoint | None:
        started, generation = time.monotonic(), self._generation
        try:
            latest = await self._fetch()
        finally:
            if generation == self._generation:
                self._reading = None
        if latest is not None and generation == self._generation:
            self._value, self._at = latest, started
        return latest


RECENT: web.AppKey[RecentCheckpoint] = web.AppKey("recent_checkpoint", RecentCheckpoint)
