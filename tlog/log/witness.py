"""The witness task: get the latest integrated checkpoint cosigned, publish it per quorum.

Two stages, as in Tessera. Every append batch commits its log-signed checkpoint
("integrated"; tlog.log.sequencer) without waiting for anyone. This task, started by
tlog.log.startup.running_log when a witness policy is configured, runs apart from appends.
Each witness of the policy has its own loop, on its own timing, so a slow or hanging one
never delays the others: every interval it takes the latest integrated checkpoint and,
unless that witness's stored cosignature of it is younger than the refresh period, asks
it (c2sp.org/tlog-witness add-checkpoint with a consistency proof from the size that
witness last cosigned; the same size again when only refreshing), verifies and stores
the cosignature. Whenever one is stored, and every interval besides, the stored ones
(of keys of the CURRENT policy) are checked against the quorum and, once they satisfy
it, the log's note followed by them is published: what /checkpoint serves.

Refreshing keeps an idle log's witnessed time current: a log whose size does not change
gets its witnesses to cosign that size again every refresh period, stores the newer
cosignatures and publishes the same size again with them (the freshest note is what
/checkpoint serves; the first one of the size stays for /v1/checkpoints/cosigned, since
cooldowns count from the earliest witnessed time). Published notes are stored per policy
(tlog.config.quorum_rule): after a policy change, nothing published under the old one is
served, and the next check publishes under the new one from the stored cosignatures.

Witness trouble never fails an append, nor another witness's turn: whatever one witness
does (an unreachable host, nonsense, an exception of any kind) is its own failure, in
metrics (tlog.log.metrics.WitnessMetrics), one log line per distinct error, and /readyz.

Durability, and what recovery sees:
- a cosignature and the witness's new size are committed together (CosignedStore.
  add_cosignature) before anything relies on them; a crash before that loses only the
  witness's answer: the next turn sends the old size, gets a 409 with the new one,
  resyncs and asks again;
- a published row is written only after the cosignatures it holds were committed and the
  assembled note passed the log's own check under its policy; a crash before it leaves
  the cosignatures, and the next check (of this or any process) publishes.
Several processes on one database may run this task at once: every write is an upsert
that keeps the newer cosignature or fresher note (ON CONFLICT), and a witness one process
advanced answers the other with a 409, which only resyncs it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tlog.config import quorum_rule
from tlog.log.metrics import WitnessMetrics
from tlog.log.proofs import consistency_proof
from tlog.log.witness_client import Conflict, Cosigned, WitnessError, add_checkpoint
from tlog.store.cosigned import StoredCosignature
from tlog.store.postgres import Storage
from tlog.store.reader import StoredCheckpoint
from verifier.protocol.cosignature import verify_cosignature
from verifier.protocol.note import NoteError, Verifier, parse_note
from verifier.protocol.policy import Policy, PolicyTrust, PolicyWitness

log = logging.getLogger("tlog.witness")


class ForkAlarm(Exception):
    """A witness has seen a tree of this log that the log never integrated, or another
    root at a size it did: a split view or a leaked log key. Not retried."""


class RollbackAlarm(ForkAlarm):
    """A witness cosigned a size of this log larger than its database holds: the log
    published more than it has, i.e. the database was restored from an older backup (or
    lost committed data). Appending would sign trees that fork the published one, so the
    task's on_rollback stops appends."""


@dataclass
class WitnessView:
    """What this process knows of one witness."""

    witness: PolicyWitness
    size: int = 0  # the size it last cosigned, as recorded (the `old` we send)
    cosigned: int | None = None  # the latest size we saw it cosign
    last_error: str | None = None
    last_success: float | None = None  # UNIX time of its last cosignature
    alarm: str | None = None  # a fork alarm: the witness is not asked again until restart

    @property
    def ident(self) -> tuple[str, bytes]:
        return self.witness.key.name, self.witness.key.key_id

    def status(self, now: float) -> dict[str, Any]:
        since = None if self.last_success is None else round(now - self.last_success, 3)
        return {"cosigned_size": self.cosigned, "last_error": self.last_error,
                "seconds_since_success": since, "fork_alarm": self.alarm}


class WitnessTask:
    def __init__(self, storage: Storage, policy: Policy, log_key: Verifier,
                 metrics: WitnessMetrics, interval: float, timeout: float,
                 refresh: float, on_rollback: Callable[[str], None] | None = None) -> None:
        self.storage, self.policy, self.metrics = storage, policy, metrics
        self.on_rollback = on_rollback  # called with the reason on a RollbackAlarm
        self.trust = PolicyTrust(policy, log_key)
        self.rule = quorum_rule(policy)  # published rows are per policy
        self.interval, self.timeout, self.refresh = interval, timeout, refresh
        self.views = [WitnessView(w) for w in policy.witnesses.values() if w.url]
        # (size, fresh time) of the latest note published under this policy, as known
        self.published: tuple[int, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def published_size(self) -> int | None:
        return None if self.published is None else self.published[0]

    async def start(self) -> None:
        """Load what the database knows (each witness's size, the latest published
        size), ask each witness once (_probe), then run each witness's loop and the
        publication check in the background."""
        sizes = await self.storage.witness_sizes()
        for view in self.views:
            view.size = sizes.get(view.ident, 0)
            self.metrics.size.labels(view.witness.name).set(view.size)
        await self._refresh_published()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit_per_host=2))
        await self._probe()
        self._tasks = [asyncio.create_task(self._every_interval("publication", self.check),
                                           name="tlog-witness-publication")]
        self._tasks += [asyncio.create_task(
            self._every_interval(f"witness {v.witness.name}", functools.partial(self.turn, v)),
            name=f"tlog-witness-{v.witness.name}") for v in self.views]

    async def _probe(self) -> None:
        """Ask every witness once, whatever the stored cosignatures say, before appends
        start (tlog.log.startup starts this task first; it takes at most the timeout). The
        stored ones come from the database, which may be a restored backup: a witness that
        cosigned more than it holds answers 409 with its size (RollbackAlarm, appends
        stopped) before the log could sign a tree forking what the witness saw."""
        latest = await self.storage.latest_checkpoint()
        if latest is not None:
            await asyncio.gather(*(self._ask(view, latest) for view in self.views))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def status(self) -> dict[str, Any]:
        """For /readyz: each witness, the latest published size and the quorum."""
        now = time.time()
        return {"witnesses": {v.witness.name: v.status(now) for v in self.views},
                "published_size": self.published_size,
                "quorum": self.policy.describe_quorum()}

    async def _every_interval(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        last_failure = None
        while True:
            try:
                await step()
                last_failure = None
            except Exception as exc:  # the database may be away for a while: try again later
                # One traceback per distinct failure: a database down for an hour must not
                # write one every interval.
                if repr(exc) != last_failure:
                    log.exception("%s: turn failed", what)
                last_failure = repr(exc)
            await asyncio.sleep(self.interval)

    async def check(self) -> None:
        """Publish the latest integrated checkpoint if the stored cosignatures meet the
        current policy's quorum and make a note newer or fresher than the published one.
        Run every interval too, not only when a cosignature is stored: at startup after a
        policy change, the stored ones may already satisfy the new policy."""
        await self._refresh_published()
        latest = await self.storage.latest_checkpoint()
        if latest is not None:
            await self._maybe_publish(latest)

    async def turn(self, view: WitnessView) -> None:
        """One witness's turn: ask it to cosign the latest integrated checkpoint unless it
        did, less than `refresh` seconds ago by its own timestamp. The empty tree is sent
        too: a new log then has a cosigned /checkpoint at once, and the witness records its
        empty root (a later checkpoint is proven from it)."""
        if view.alarm is not None:
            return
        latest = await self.storage.latest_checkpoint()
        if latest is None:
            return
        mine = [c for c in await self.storage.cosignatures(latest.size)
                if (c.key_name, c.key_id) == view.ident]
        if mine and time.time() - mine[0].timestamp < self.refresh:
            view.cosigned = max(view.cosigned or 0, latest.size)
            return
        if await self._ask(view, latest):
            await self._maybe_publish(latest)

    async def _refresh_published(self) -> None:
        found = await self.storage.latest_published_fresh(self.rule)
        if found is not None:
            self.published = max(self.published or found, found)
            self.metrics.published_size.set(self.published[0])

    async def _ask(self, view: WitnessView, cp: StoredCheckpoint) -> bool:
        """Get `view`'s cosignature of `cp`; True once stored. Whatever goes wrong is that
        witness's failure (metrics, status, one log line per distinct error), never the
        others' or the publication's: a hostile witness may answer anything."""
        name = view.witness.name
        try:
            return await self._submit(view, cp, resync=True)
        except ForkAlarm as exc:
            view.alarm = view.last_error = str(exc)
            self.metrics.fork_alarms.labels(name).inc()
            self.metrics.requests.labels(name, "fork").inc()
            log.critical("FORK ALARM from witness %s: %s", name, exc)
            if isinstance(exc, RollbackAlarm) and self.on_rollback is not None:
                self.on_rollback(f"witness {name} {exc}")
        except Exception as exc:
            said = str(exc) if isinstance(exc, WitnessError) \
                else f"{type(exc).__name__}: {exc}"[:300]
            if view.last_error != said:  # a witness down for hours: one line, not 1800
                log.warning("witness %s: %s", name, said,
                            exc_info=not isinstance(exc, WitnessError))
            view.last_error = said
            self.metrics.requests.labels(name, "error").inc()
        return False

    async def _submit(self, view: WitnessView, cp: StoredCheckpoint, resync: bool) -> bool:
        """One add-checkpoint of `cp` from the size `view` last cosigned; True once its
        cosignature is stored. A 409 resyncs the size and, if `resync`, asks once more."""
        old = view.size
        if old > cp.size:  # another process of this log got it further: nothing to do
            return False
        proof = await consistency_proof(old, cp.size, self.storage.tiles) \
            if 0 < old < cp.size else []
        answer = await add_checkpoint(self._client(), view.witness.url or "", old, proof,
                                      cp.note)
        if isinstance(answer, Cosigned):
            await self._store(view, cp, answer)
            return True
        self.metrics.requests.labels(view.witness.name, "conflict").inc()
        # A second 409 (not resync) came with yet another size (_conflict refuses the
        # same one): the witness moved between our two requests, i.e. another process of
        # this log got it cosigning. Nothing wrong; the next round starts from its size.
        if not await self._conflict(view, cp, old, answer) or not resync:
            return False
        return await self._submit(view, cp, resync=False)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the witness task is not started")
        return self._session

    async def _conflict(self, view: WitnessView, cp: StoredCheckpoint, old: int,
                        answer: Conflict) -> bool:
        """Take the size of a 409; True when asking again from it makes sense. Raises
        ForkAlarm when the witness's view of this log is not one this log ever had, and
        WitnessError when the 409 says nothing usable."""
        said = answer.size
        if said is None or said == old:  # it took our old size, yet refused
            if old == cp.size:
                raise ForkAlarm(f"it holds another root for size {old} than this log's")
            raise WitnessError(f"409 Conflict without a usable size (we sent old {old})")
        if said > 0 and await self.storage.checkpoint_at(said) is None:
            latest = await self.storage.latest_checkpoint()
            if latest is None or said > latest.size:
                raise RollbackAlarm(
                    f"cosigned size {said} of this log, but its database holds only "
                    f"{0 if latest is None else latest.size} entries: the log published "
                    "more than it holds (restored from an older backup?)")
            raise ForkAlarm(f"it cosigned size {said}, a tree this log never integrated "
                            f"(this log is at {cp.size})")
        # Its truth replaces ours, even when smaller (a witness restored from a backup).
        await self.storage.set_witness_size(*view.ident, said)
        view.size = said
        self.metrics.size.labels(view.witness.name).set(said)
        # Beyond our read: another process of this log got it there; our next round will
        # read that size too. Not a failure of anyone.
        return said <= cp.size

    async def _store(self, view: WitnessView, cp: StoredCheckpoint, answer: Cosigned) -> None:
        """Verify the lines by this witness's key and store its cosignature. Lines of other
        keys are ignored; an invalid one by its key fails the witness, storing nothing.
        A few Ed25519 verifications: microseconds, fine on the event loop."""
        key, name = view.witness.key, view.witness.name
        mine = [s for s in answer.signatures if key.matches(s)]
        if not mine:
            raise WitnessError(f"no cosignature by its key {key.name}+{key.key_id.hex()} "
                               f"among the {len(answer.signatures)} lines it returned")
        body = parse_note(cp.note).text
        try:
            times = [verify_cosignature(key, body, s) for s in mine]
        except NoteError as exc:
            raise WitnessError(f"it returned an invalid cosignature: {exc}") from exc
        await self.storage.add_cosignature(
            cp.size, StoredCosignature(key.name, key.key_id, times[0], mine[0].line()))
        # Committed: the cosignature and the witness's size survive a crash from here on.
        if view.last_error is not None:
            log.info("witness %s cosigns again (size %d)", name, cp.size)
        view.size = view.cosigned = cp.size
        view.last_error, view.last_success = None, time.time()
        self.metrics.requests.labels(name, "cosigned").inc()
        self.metrics.size.labels(name).set(cp.size)
        self.metrics.last_success.labels(name).set(view.last_success)

    async def _maybe_publish(self, cp: StoredCheckpoint) -> None:
        """Publish `cp` with its stored cosignatures by keys of the current policy once
        they satisfy its quorum, after checking the assembled note as a client of the
        policy will; again for a size already published when the note is fresher."""
        if self.published is not None and cp.size < self.published[0]:
            return
        by_key = {(w.key.name, w.key.key_id): w.name for w in self.policy.witnesses.values()}
        stored = [c for c in await self.storage.cosignatures(cp.size)
                  if (c.key_name, c.key_id) in by_key]
        if not self.policy.satisfied({by_key[(c.key_name, c.key_id)] for c in stored}):
            return
        note = cp.note + "".join(c.line for c in stored)  # sorted by key name
        try:
            witnessed = self.trust.witnessed(note)
            if witnessed.checkpoint.size != cp.size or witnessed.checkpoint.root != cp.root:
                raise NoteError("the cosigned note is not of the checkpoint it was built on")
        except (NoteError, ValueError) as exc:
            self.metrics.publish_failures.inc()
            log.error("not publishing size %d: the cosigned note fails the log's own "
                      "check: %s", cp.size, exc)
            return
        fresh = witnessed.fresh_time or 0  # quorum "none": nothing to refresh
        if self.published is not None and (cp.size, fresh) <= self.published:
            return
        await self.storage.publish(self.rule, cp.size, note, fresh)
        # Committed: /checkpoint serves this note (or a larger or fresher one) from now on.
        first = self.published is None or cp.size > self.published[0]
        self.published = max(self.published or (cp.size, fresh), (cp.size, fresh))
        self.metrics.published_size.set(self.published[0])
        if first:
            log.info("published size %d with cosignatures of %s", cp.size,
                     ", ".join(sorted(witnessed.times)) or "no witness")
