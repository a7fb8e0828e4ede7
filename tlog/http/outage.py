"""Answers while PostgreSQL is away: 503 database_unavailable with Retry-After, or what the
server can stand behind without it.

Without the database the server still holds, in memory, the last checkpoint it published
(LastCheckpoint, for /checkpoint) and full tiles and bundles (Storage's caches, the tile
files): those are answered as usual. Everything else is 503 database_unavailable with
Retry-After: 5, logged as one warning line now and then, never a traceback per request.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from tlog.http.errors import ApiError
from tlog.store.outage import RETRY_AFTER
from tlog.store.reader import StoredCheckpoint

log = logging.getLogger("tlog")
REPORT_EVERY = 30.0  # seconds between two warnings about the same outage


class LastCheckpoint:
    """The latest checkpoint note /checkpoint served (with a witness policy: the latest
    quorum-cosigned one), kept to answer /checkpoint while the database is away."""

    def __init__(self) -> None:
        self.checkpoint: StoredCheckpoint | None = None

    def seen(self, checkpoint: StoredCheckpoint | None) -> None:
        # The same size again may come with a fresher note (witnesses cosign an idle log's
        # size again): keep the newest one read.
        if checkpoint is not None and (self.checkpoint is None
                                       or checkpoint.size >= self.checkpoint.size):
            self.checkpoint = checkpoint

    def forget(self, reason: str) -> None:
        """The database changed: what it published before is not this log's word now."""
        self.checkpoint = None


class OutageReport:
    """One warning when the database goes away, then one per REPORT_EVERY seconds with
    the count of requests answered 503 meanwhile."""

    def __init__(self) -> None:
        self._last = float("-inf")
        self._count = 0

    def failed(self, request: web.Request, exc: BaseException) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= REPORT_EVERY:
            log.warning("database unavailable (%s: %s); %d request(s) answered 503 since the "
                        "last report; last: %s %s", type(exc).__name__, exc, self._count,
                        request.method, request.path)
            self._last, self._count = now, 0


LAST_CHECKPOINT: web.AppKey[LastCheckpoint] = web.AppKey("last_checkpoint", LastCheckpoint)
OUTAGE: web.AppKey[OutageReport] = web.AppKey("outage", OutageReport)


def database_unavailable_error(request: web.Request, exc: BaseException) -> ApiError:
    request.app[OUTAGE].failed(request, exc)
    return ApiError("database_unavailable", "the log's database cannot be reached or cannot "
                    "take writes right now; retry later", retry_after=RETRY_AFTER)
