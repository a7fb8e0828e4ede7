"""GET /v1/status: how the log is doing, in one cheap JSON answer (for `tlog status`).

What /readyz, /checkpoint and /metrics tell in pieces, plus what they do not: submissions
waiting for a batch (the sequencer's count) and the refusals of the last few minutes by
error code. It is a report, not a check: it answers 200 whatever it finds (a database
that cannot be reached, appends stopped, witnesses failing) and says so, never a 500.

Cheap whatever the traffic: one probe of the database (health, latest checkpoint, its time)
serves every status request for SHARED_FOR seconds and concurrent requests share it, and
the probe gives up after PROBE_TIMEOUT; the refusal counts live in a fixed number of time
buckets, each with a bounded number of codes (RecentRefusals). Like every read it takes
from the client's read quota (tlog.http.app).

Nothing here is signed: a client verifies what matters (the checkpoint and its
cosignatures) from /checkpoint with its own keys; this says what the log reports of itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tlog.http.handlers import READER, SEQUENCER, WITNESS_STATUS, query
from tlog.store.outage import database_unavailable
from tlog.store.reader import LogReader

log = logging.getLogger("tlog")

WINDOW = 300  # seconds of refusals reported
STEP = 10  # seconds per bucket: the window moves by this much
MAX_CODES = 64  # distinct codes kept per bucket; more are counted as OTHER
OTHER = "other"
SHARED_FOR = 1.0  # seconds one database probe answers every status request
PROBE_TIMEOUT = 3.0  # seconds the probe may take before the database counts as unreachable


class RecentRefusals:
    """Error answers of the last WINDOW seconds by code, in WINDOW / STEP buckets of STEP
    seconds: memory stays bounded (buckets x MAX_CODES counters) however many refusals
    come, and counting one is a dict increment. The window is whole buckets, so a refusal
    counts for between WINDOW - STEP and WINDOW seconds."""

    def __init__(self, window: int = WINDOW, step: int = STEP, max_codes: int = MAX_CODES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.step, self.max_codes = window, step, max_codes
        self._slots = max(1, window // step)
        self._clock = clock
        self._buckets: deque[tuple[int, dict[str, int]]] = deque()

    def count(self, code: str) -> None:
        slot = self._slot()
        if not self._buckets or self._buckets[-1][0] != slot:
            self._buckets.append((slot, {}))
            self._expire(slot)
        counts = self._buckets[-1][1]
        if code not in counts and len(counts) >= self.max_codes:
            code = OTHER  # the server's codes are far fewer; this only bounds memory
        counts[code] = counts.get(code, 0) + 1

    def totals(self) -> dict[str, int]:
        """Refusals by code over the window, sorted by code."""
        self._expire(self._slot())
        out: dict[str, int] = {}
        for _, counts in self._buckets:
            for code, n in counts.items():
                out[code] = out.get(code, 0) + n
        return dict(sorted(out.items()))

    def _slot(self) -> int:
        return int(self._clock() // self.step)

    def _expire(self, slot: int) -> None:
        while self._buckets and self._buckets[0][0] <= slot - self._slots:
            self._buckets.popleft()


@dataclass(frozen=True)
class Probe:
    """What one look at the database found."""

    database: dict[str, Any]  # DatabaseHealth.json(), or {"reachable": False}
    error: str | None  # why it could not be reached
    tree_size: int | None
    checkpoint_time: float | None


class StatusProbe:
    """One probe of the database shared by the status requests of SHARED_FOR seconds (and
    by those arriving while it runs); while the database is away, the last tree size and
    checkpoint time it read are reported with the database as unreachable."""

    def __init__(self, reader: Callable[[], LogReader], shared_for: float = SHARED_FOR,
                 timeout: float = PROBE_TIMEOUT) -> None:
        self._reader, self.shared_for, self.timeout = reader, shared_for, timeout
        self._last: Probe | None = None
        self._at = float("-inf")
        self._known: tuple[int | None, float | None] = (None, None)
        self._running: asyncio.Future[Probe] | None = None

    async def get(self) -> Probe:
        if self._last is not None and time.monotonic() - self._at < self.shared_for:
            return self._last
        if self._running is None:
            self._running = asyncio.ensure_future(self._probe())
        # shield: a client hanging up must not cancel the probe the others wait for
        return await asyncio.shield(self._running)

    async def _probe(self) -> Probe:
        started = time.monotonic()
        try:
            probe = await self._look()
        finally:
            self._running = None
        self._last, self._at = probe, started
        return probe

    async def _look(self) -> Probe:
        reader = self._reader()
        try:
            async with asyncio.timeout(self.timeout):
                health = await reader.health()
                latest = await reader.latest_checkpoint()
                when = None if latest is None else await reader.checkpoint_time(latest.size)
        except Exception as exc:  # reported, never a 500: that is what the endpoint is for
            if not database_unavailable(exc):
                log.warning("GET /v1/status: reading the database failed: %r", exc)
            size, when = self._known
            return Probe({"reachable": False}, _reason(exc), size, when)
        self._known = (None if latest is None else latest.size, when)
        return Probe(health.json(), None, *self._known)


def _reason(exc: BaseException) -> str:
    """The error's kind only, as /readyz says it: its text may name hosts, sockets, users."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT:g} s"
    return type(exc).__name__


REFUSALS: web.AppKey[RecentRefusals] = web.AppKey("recent_refusals", RecentRefusals)
PROBE: web.AppKey[StatusProbe] = web.AppKey("status_probe", StatusProbe)


async def get_status(request: web.Request) -> web.Response:
    query(request, set())
    app = request.app
    probe = await app[PROBE].get()
    seq = app[SEQUENCER]
    witnesses = app[WITNESS_STATUS]() if WITNESS_STATUS in app else None
    refusals = app[REFUSALS]
    return web.json_response({
        "origin": seq.signer.name,
        "time": round(time.time(), 3),
        "tree_size": probe.tree_size,
        "checkpoint_time": probe.checkpoint_time,
        "submissions_waiting": seq.waiting,
        "appends": "running" if seq.failed is None else "stopped",
        "appends_stopped": seq.failed,
        "database": probe.database,
        "database_error": probe.error,
        "witnesses": witnesses,
        "refusals": {"window_seconds": refusals.window, "by_code": refusals.totals()},
    }, headers={"Cache-Control": "no-cache"})


def add_status_routes(app: web.Application) -> None:
    app[REFUSALS] = RecentRefusals()
    app[PROBE] = StatusProbe(lambda: app[READER])
    app.router.add_get("/v1/status", get_status)
