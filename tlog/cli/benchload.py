"""The load engine of `tlog bench`: send requests at a concurrency (and a rate), count what
comes back.

With a target rate the load is open-loop: request i is due at start + i/rate whether or not
earlier ones have answered, and its latency runs from that due time. A log that falls behind
then shows its queueing in the latencies instead of quietly slowing the sender down
("coordinated omission"). Without a rate, each of the `concurrency` workers sends its next
request as soon as its last one answered, and latency runs from the send.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp

TIMEOUT = 60  # one request, connect to last byte: a stuck log shows as transport errors
PROGRESS_EVERY = 0.5
LATE = 0.005  # a request sent this much after its due time was sent late
LOOP_TICK = 0.01  # how often an open-loop run checks its own event loop


@dataclass(frozen=True)
class Request:
    """One request to send. `kind` groups replies (their sizes feed the baseline);
    `entries` is how many entries it appends; `parse` reads a 200 reply into per-entry
    statuses (a batch)."""

    kind: str
    method: str
    path: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    entries: int = 0
    parse: Callable[[bytes], list[int]] | None = None


@dataclass
class Stats:
    """What one run measured."""

    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    entry_statuses: Counter[int] = field(default_factory=Counter)
    transport: Counter[str] = field(default_factory=Counter)
    reply_bytes: dict[str, list[int]] = field(default_factory=dict)
    kind_latencies: dict[str, list[float]] = field(default_factory=dict)
    kind_ok: Counter[str] = field(default_factory=Counter)
    entries: int = 0  # entries acknowledged (201 or 200) by the log
    schedule: Schedule | None = None  # with a target rate: how the sends kept to it

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    def mean_reply(self, kind: str) -> int:
        """The mean size of the successful replies of `kind` (0 if none)."""
        total, count = self.reply_bytes.get(kind, [0, 0])
        return total // count if count else 0

    def json(self) -> dict[str, Any]:
        seconds = max(self.elapsed, 1e-9)
        out: dict[str, Any] = {
            "requests": self.requests, "ok": self.ok, "seconds": round(self.elapsed, 3),
            "throughput_rps": round(self.ok / seconds, 1),
            "latency_ms": latency_ms(self.latencies),
            "errors": {str(s): n for s, n in sorted(self.statuses.items())
                       if not 200 <= s < 300},
            "transport_errors": dict(sorted(self.transport.items()))}
        if self.entries or self.entry_statuses:
            out["entries"] = self.entries
            out["entries_per_s"] = round(self.entries / seconds, 1)
        if len(self.kind_latencies) > 1:  # a mix: which kind of request costs what
            out["by_kind"] = {kind: {"requests": len(lat),
                                     "throughput_rps": round(self.kind_ok[kind] / seconds, 1),
                                     **latency_ms(lat)}
                              for kind, lat in sorted(self.kind_latencies.items())}
        if self.entry_statuses:
            out["entry_statuses"] = {str(s): n for s, n in sorted(self.entry_statuses.items())}
        if self.schedule is not None:
            out["schedule"] = self.schedule.json()
        return out


@dataclass
class Schedule:
    """How an open-loop run kept to its rate. A request is sent late either because no
    connection was free at its due time (all `concurrency` of them waiting for the log's
    answers: the log's queue, counted in its latency) or because the client itself was
    busy (its event loop or its signing ran behind: the client's lag, which a benchmark
    must show rather than hide)."""

    rate: float
    window: float  # seconds in which every scheduled request was due
    scheduled: int
    sent: int = 0
    sent_in_window: int = 0  # sent before the window closed
    waited_for_connection: int = 0
    client_late: int = 0
    lags: list[float] = field(default_factory=list)  # send time - due time
    loop_lags: list[float] = field(default_factory=list)  # the client's event loop, late
    client_cpu: float = 0.0  # the client process's CPU seconds per second of the run

    def kept_up(self) -> bool:
        """Whether the client itself kept to the schedule: under 1 % of the sends late with
        a connection free, its event loop at most 2 LATE behind (p99), and its one process
        not using a whole core (then it was the bottleneck, whatever the counts say)."""
        loop_p99 = percentile(sorted(self.loop_lags), 99)
        return (self.client_late <= self.scheduled // 100 and loop_p99 <= 2 * LATE
                and self.client_cpu < 0.9)

    def json(self) -> dict[str, Any]:
        return {"rate": self.rate, "window_s": round(self.window, 3),
                "scheduled": self.scheduled, "sent": self.sent,
                "sent_in_window": self.sent_in_window,
                "on_time": sum(1 for lag in self.lags if lag <= LATE),
                "waited_for_connection": self.waited_for_connection,
                "client_late": self.client_late, "send_lag_ms": latency_ms(self.lags),
                "loop_lag_ms": latency_ms(self.loop_lags),
                "client_cpu": round(self.client_cpu, 2), "client_kept_up": self.kept_up()}


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank percentile `p` (0..100) of an ascending list."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * p // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def latency_ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {name: round(1000 * percentile(ordered, p), 2)
            for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}


@dataclass(frozen=True)
class Plan:
    """How much load: `count` requests or `duration` seconds, `rate` per second or as fast
    as `concurrency` workers go."""

    concurrency: int
    rate: float | None
    duration: float | None
    count: int | None


def scheduled(plan: Plan) -> int:
    """How many requests an open-loop plan has due: request i is due at i/rate, and due
    times run up to the duration (not including it) and stop at the count."""
    assert plan.rate
    counts = [plan.count] if plan.count is not None else []
    if plan.duration is not None:
        counts.append(math.ceil(plan.duration * plan.rate))
    return min(counts)


def new_session(concurrency: int, headers: Mapping[str, str] | None = None,
                ) -> aiohttp.ClientSession:
    """The client every run uses, the log's and the baseline's alike: one connection per
    worker, kept alive."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    return aiohttp.ClientSession(connector=connector, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=TIMEOUT))


class Load:
    """One run of `make(i)` requests against `base` under a Plan."""

    def __init__(self, session: aiohttp.ClientSession, base: str,
                 make: Callable[[int], Request], plan: Plan) -> None:
        self.session, self.base, self.make, self.plan = session, base.rstrip("/"), make, plan
        self.stats = Stats()
        self._next = 0
        self._start = 0.0
        if plan.rate:
            due = scheduled(plan)
            self.stats.schedule = Schedule(plan.rate, due / plan.rate, due)

    async def run(self, progress: TextIO | None = None) -> Stats:
        self._start, cpu = time.perf_counter(), time.process_time()
        ticker = asyncio.create_task(self._progress(progress)) if progress else None
        schedule = self.stats.schedule
        watch = asyncio.create_task(self._watch_loop(schedule)) if schedule else None
        try:
            await asyncio.gather(*(self._worker() for _ in range(self.plan.concurrency)))
        finally:
            if watch is not None:
                watch.cancel()
            if ticker is not None and progress is not None:
                ticker.cancel()
                progress.write("\r\033[K")
        self.stats.elapsed = time.perf_counter() - self._start
        if schedule is not None:
            schedule.client_cpu = (time.process_time() - cpu) / max(self.stats.elapsed, 1e-9)
        return self.stats

    @staticmethod
    async def _watch_loop(schedule: Schedule) -> None:
        """How late the client's event loop wakes from a short sleep: a busy client shows
        here before anywhere else."""
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(LOOP_TICK)
            schedule.loop_lags.append(max(0.0, time.perf_counter() - asked - LOOP_TICK))

    def _claim(self) -> tuple[int, float] | None:
        """The next request's number and due time, or None once the plan is done."""
        i, plan = self._next, self.plan
        if plan.count is not None and i >= plan.count:
            return None
        due = self._start + i / plan.rate if plan.rate else time.perf_counter()
        if plan.duration is not None and due - self._start >= plan.duration:
            return None
        self._next += 1
        return i, due

    async def _worker(self) -> None:
        while (claim := self._claim()) is not None:
            i, due = claim
            claimed = time.perf_counter()
            delay = due - claimed
            if delay > 0:
                await asyncio.sleep(delay)
            req = self.make(i)
            if self.stats.schedule is not None:
                self._sent_at(self.stats.schedule, due, claimed)
            await self._send(req, due)

    def _sent_at(self, schedule: Schedule, due: float, claimed: float) -> None:
        """Account one open-loop send: how late, and whose fault."""
        now = time.perf_counter()
        schedule.sent += 1
        schedule.lags.append(max(0.0, now - due))
        if now - self._start < schedule.window:
            schedule.sent_in_window += 1
        if claimed - due > LATE:  # every connection was busy when it fell due
            schedule.waited_for_connection += 1
        elif now - max(due, claimed) > LATE:  # a free worker, yet the client ran behind
            schedule.client_late += 1

    async def _send(self, req: Request, due: float) -> None:
        stats = self.stats
        try:
            async with self.session.request(req.method, self.base + req.path, data=req.body,
                                            headers=req.headers) as resp:
                body = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._took(req.kind, time.perf_counter() - due)
            stats.transport[type(exc).__name__] += 1
            return
        self._took(req.kind, time.perf_counter() - due)
        stats.statuses[status] += 1
        if 200 <= status < 300:
            stats.kind_ok[req.kind] += 1
            sizes = stats.reply_bytes.setdefault(req.kind, [0, 0])
            sizes[0] += len(body)
            sizes[1] += 1
            self._count_entries(req, status, body)

    def _took(self, kind: str, seconds: float) -> None:
        self.stats.latencies.append(seconds)
        self.stats.kind_latencies.setdefault(kind, []).append(seconds)

    def _count_entries(self, req: Request, status: int, body: bytes) -> None:
        if not req.entries:
            return
        if req.parse is None:
            self.stats.entries += req.entries
            return
        try:
            per_entry = req.parse(body)
        except ValueError:
            self.stats.transport["unreadable_reply"] += 1
            return
        self.stats.entry_statuses.update(per_entry)
        self.stats.entries += sum(1 for s in per_entry if s in (200, 201))

    async def _progress(self, out: TextIO) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            s = self.stats
            seconds = time.perf_counter() - self._start
            errors = s.requests - s.ok
            out.write(f"\r\033[K{seconds:6.1f}s  {s.requests} requests  "
                      f"{s.ok / max(seconds, 1e-9):8.1f} ok/s  {errors} errors")
            out.flush()


def progress_stream(quiet: bool) -> TextIO | None:
    """Where the progress line goes: stderr when it is a terminal and output is for people."""
    return sys.stderr if not quiet and sys.stderr.isatty() else None
