"""A load generator for the reliability tests: concurrent clients submitting unique signed
releases, retrying each (with the same bytes) until the log acknowledges it, and keeping every
receipt the log ever returned, so that the invariant checker can hold the log to all of them.

Each client submits one release at a time. A failed attempt (a 5xx, a refused or reset
connection, a timeout, or a hang-up the client does on purpose) is retried against the next
server, after a short pause, until the submission is acknowledged or the load's deadline
passes. Some acknowledged submissions are sent once more on purpose: the log must answer
with the same index.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support import make_release
from verifier.protocol.note import Signer

REQUEST_TIMEOUT = 15.0  # seconds for one attempt: a stuck request counts as an outage
GIVE_UP = 90.0  # seconds after the stop a client keeps retrying its last submission
HUNG_UP = "hung up (client)"


@dataclass
class Submission:
    """One unique release and everything the log answered about it."""

    body: bytes
    receipts: list[dict[str, Any]] = field(default_factory=list)  # every 200/201 body
    statuses: list[int] = field(default_factory=list)  # the status of each receipt
    attempts: int = 0
    rejected: list[str] = field(default_factory=list)  # 4xx answers: never expected

    @property
    def acknowledged(self) -> bool:
        return bool(self.receipts)

    @property
    def found_on_retry(self) -> bool:
        """Its first acknowledgment was a 200 (already logged): an attempt that failed for
        the client had appended it, and the retry got its index back."""
        return bool(self.statuses) and self.statuses[0] == 200


@dataclass
class Stats:
    sent: int = 0  # HTTP requests started
    retried: int = 0  # of which retries of a submission not yet acknowledged
    resubmitted: int = 0  # acknowledged submissions sent again on purpose
    disconnects: int = 0  # requests this side hung up on mid-request
    failures: Counter[str] = field(default_factory=Counter)  # status or error kind


class Load:
    """`clients` concurrent submitters against `urls` (a list a test may change in place)."""

    def __init__(self, urls: list[str], signer: Signer, tag: str, clients: int = 8, *,
                 disconnect_rate: float = 0.0, resubmit_rate: float = 0.05,
                 seed: int | None = None) -> None:
        self.urls = urls
        self.signer = signer
        self.tag = tag
        self.clients = clients
        self.disconnect_rate = disconnect_rate
        self.resubmit_rate = resubmit_rate
        self.rng = random.Random(seed)
        self.submissions: list[Submission] = []
        self.stats = Stats()
        self._stop = asyncio.Event()
        self._give_up = asyncio.Event()

    @property
    def acknowledged(self) -> int:
        return sum(s.acknowledged for s in self.submissions)

    async def run(self) -> None:
        """Submit until stop(), then finish the submissions in flight (until GIVE_UP)."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._client(session, c) for c in range(self.clients)))

    def stop(self) -> None:
        self._stop.set()
        asyncio.get_running_loop().call_later(GIVE_UP, self._give_up.set)

    async def until(self, acknowledged: int, timeout: float = 60) -> None:
        """Wait until at least `acknowledged` submissions were acknowledged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.acknowledged < acknowledged:
            if loop.time() > deadline:
                raise TimeoutError(f"only {self.acknowledged} of {acknowledged} acknowledged; "
                                   f"failures {dict(self.stats.failures)}")
            await asyncio.sleep(0.02)

    async def _client(self, session: aiohttp.ClientSession, client: int) -> None:
        n = 0
        while not self._stop.is_set():
            entry = make_release(self.signer, f"{self.tag}-c{client}", f"1.{n}")
            n += 1
            sub = Submission(json.dumps(entry).encode())
            self.submissions.append(sub)
            await self._submit(session, sub, client)
            if sub.acknowledged and self.rng.random() < self.resubmit_rate:
                self.stats.resubmitted += 1
                await self._submit(session, sub, client, again=True)

    async def _submit(self, session: aiohttp.ClientSession, sub: Submission, client: int,
                      again: bool = False) -> None:
        """Send `sub` until one answer acknowledges it (or a 4xx refuses it)."""
        target = client
        while not self._give_up.is_set():
            if sub.attempts and not again:
                self.stats.retried += 1
            sub.attempts += 1
            self.stats.sent += 1
            url = self.urls[target % len(self.urls)] + "/v1/entries"
            outcome = await self._attempt(session, url, sub.body)
            if isinstance(outcome, tuple):
                sub.statuses.append(outcome[0])
                sub.receipts.append(outcome[1])
                return
            if outcome.startswith("4"):
                sub.rejected.append(outcome)
                return
            if outcome != HUNG_UP:  # our own doing: counted in stats.disconnects
                self.stats.failures[outcome] += 1
            target += 1
            await asyncio.sleep(self.rng.uniform(0.02, 0.15))

    async def _attempt(self, session: aiohttp.ClientSession, url: str,
                       body: bytes) -> tuple[int, dict[str, Any]] | str:
        """One POST: (status, receipt), or what went wrong ("503", "ClientConnectorError")."""
        if self.rng.random() < self.disconnect_rate:
            await self._hang_up(session, url, body)
            return HUNG_UP
        try:
            async with session.post(url, data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                text = await resp.text()
                if resp.status in (200, 201):
                    receipt: dict[str, Any] = json.loads(text)
                    return resp.status, receipt
                return f"{resp.status} {text[:200]}" if resp.status < 500 else str(resp.status)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            return type(exc).__name__

    async def _hang_up(self, session: aiohttp.ClientSession, url: str, body: bytes) -> None:
        """Hang up mid-request: after half the body, or after all of it but before the
        answer (the log may well have appended it: the retry must get its index back)."""
        self.stats.disconnects += 1
        half = self.rng.random() < 0.5

        async def chunks() -> AsyncIterator[bytes]:
            if half:
                yield body[:len(body) // 2]
                await asyncio.sleep(3600)
            yield body

        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        try:
            async with asyncio.timeout(self.rng.uniform(0.0, 0.02)):
                async with session.post(url, data=chunks(), headers=headers) as resp:
                    await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            pass

