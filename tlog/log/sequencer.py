"""The sequencer: submissions -> batches -> one transaction each -> signed checkpoint -> replies.

Durability: a submitter gets its reply only after the transaction holding its entry,
the tiles and the new signed checkpoint has committed. Everything a batch writes is
in that one transaction, so after a crash the database holds either all of a batch or
none of it; an unanswered client retries and dedup returns the index it already has.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tlog.log.edge import EdgeError, edge_builder, load_edge
from tlog.log.faults import NO_FAULTS, Faults
from tlog.log.mapcache import MapBatch, MapCache
from tlog.log.metrics import AppendMetrics
from tlog.log.proofs import consistency_proof, inclusion_proofs
from tlog.log.registry import ReplayError, release_facts, replay
from tlog.log.statemap import MapError, next_map_root
from tlog.store.outage import database_unavailable
from tlog.store.postgres import AppendTx, NewEntry, Storage
from tlog.store.reader import StoredCheckpoint, TokenRecord
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.protocol.entries.kinds import REGISTRY_KINDS, LogEntry
from verifier.protocol.entries.lifecycle import Lifecycle
from verifier.protocol.entries.release import Release
from verifier.protocol.merkle import ProofError, verify_consistency
from verifier.protocol.note import NoteSigner
from verifier.protocol.registry import Refusal, Registry
from verifier.protocol.tiles import TileKey, TreeBuilder

log = logging.getLogger("tlog.sequencer")

MAX_REPLYING = 2  # committed batches being answered at once


class ConflictError(Exception):
    """Another entry for the same (package, version) is already in the log."""

    def __init__(self, index: int, package: str, version: str) -> None:
        super().__init__(f"{package} {version} is already in the log at index {index} "
                         "with different content")
        self.index = index


class RefusedError(Exception):
    """The registry or the token list refuses this entry at this point of the log.

    `code` says why; the HTTP layer answers with the status of that code
    (tlog.http.errors.STATUS).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UnavailableError(Exception):
    """The log cannot take this submission now (overloaded, database trouble, stopped)."""


class SelfCheckError(Exception):
    """The log's own state failed a self-check; appending stops until an operator looks."""


@dataclass(frozen=True)
class Receipt:
    index: int
    leaf_hash: bytes
    tree_size: int
    proof: list[bytes]
    checkpoint: str
    created: bool


@dataclass
class _Pending:
    entry: LogEntry
    token_id: str | None = None
    future: asyncio.Future[Receipt] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


_Outcome = tuple[int, bool] | ConflictError | RefusedError  # (index, newly added) or refusal


@dataclass
class _Plan:
    """Where each submission of a batch goes: a new index, an old one, or a conflict."""

    outcome: dict[int, _Outcome] = field(default_factory=dict)
    new: list[NewEntry] = field(default_factory=list)


class Sequencer:
    def __init__(self, storage: Storage, signer: NoteSigner, metrics: AppendMetrics,
                 registry: Registry, *,
                 max_batch: int = 512, max_wait: float = 0.005, max_pending: int = 20000,
                 faults: Faults = NO_FAULTS) -> None:
        self.storage = storage
        self.faults = faults  # test-only (tlog.log.faults); none unless TLOG_FAULTS is on
        self.registry = registry  # replayed up to registry_next; replaced only after a commit
        self.registry_next = 0
        self.signer = signer
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_pending = max_pending
        self.failed: str | None = None
        self.map_cache = MapCache()  # filled only from committed batches
        # (size, root, edge) of the tree this process's last batch committed
        self._tip: tuple[int, bytes, dict[int, bytes]] | None = None
        # Called after each COMMIT, before the batch's replies (tlog.log.highwater); beside
        # the next batch's append, like the replies.
        self.after_commit: Callable[[StoredCheckpoint], Awaitable[None]] | None = None
        # Groups of submissions: one for POST /v1/entries, all valid entries of a request for
        # POST /v1/entries/batch. A group is never split between batches (it shares one
        # checkpoint); `_carry` is a group taken that did not fit the batch being gathered.
        self._queue: asyncio.Queue[list[_Pending]] = asyncio.Queue()
        self._carry: list[_Pending] | None = None
        self.waiting = 0  # submissions queued (carry included), not yet in a batch
        self._task: asyncio.Task[None] | None = None
        self._replying: set[asyncio.Task[None]] = set()  # committed batches being answered
        self._recorded: asyncio.Future[None] | None = None  # the last one's published file
        storage.on_swap(self.forget)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tlog-sequencer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._replying, return_exceptions=True)  # committed: answer
        groups = [self._carry] if self._carry else []
        self._carry = None
        while not self._queue.empty():
            groups.append(self._queue.get_nowait())
        for pending in (p for group in groups for p in group):
            if not pending.future.done():
                pending.future.set_exception(UnavailableError("the log is shutting down"))

    async def submit(self, entry: LogEntry, token_id: str | None = None) -> Receipt:
        """Log `entry` (or find it) and return a receipt against a signed checkpoint.

        `token_id` is the id of the submission token that was verified for it, if any; the
        batch checks it is still on record and not revoked, inside the append transaction.
        """
        [result] = await self.submit_many([(entry, token_id)])
        if isinstance(result, ConflictError | RefusedError):
            raise result
        return result

    async def submit_many(self, items: Sequence[tuple[LogEntry, str | None]]
                          ) -> list[Receipt | ConflictError | RefusedError]:
        """Log many (entry, token_id) at once, in one batch: each one's receipt or refusal, in
        order. All are queued together or none (UnavailableError): a request whose entries do
        not fit in max_pending waits nowhere and takes no one else's room. A failed batch
        raises UnavailableError for all of them; entries of a committed batch stay logged and
        a retry finds them (200)."""
        if not items:
            return []
        if self.failed is not None:
            raise UnavailableError(f"appends are stopped: {self.failed}")
        if self.waiting + len(items) > self.max_pending:
            raise UnavailableError("too many submissions waiting; retry shortly")
        group = [_Pending(entry, token_id) for entry, token_id in items]
        self._queue.put_nowait(group)
        self.waiting += len(group)
        # shield: a client that hangs up must not cancel the futures the batch will resolve.
        done = await asyncio.shield(asyncio.gather(*(p.future for p in group),
                                                   return_exceptions=True))
        out: list[Receipt | ConflictError | RefusedError] = []
        for result in done:
            if isinstance(result, Receipt | ConflictError | RefusedError):
                out.append(result)
            else:  # the batch failed (UnavailableError) or a bug: the whole request fails
                raise result
        return out

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            started = time.perf_counter()
            try:
                outcome, published = await self._append(batch)
            except Exception as exc:  # one failed batch must not stop the loop
                self._fail_batch(batch, exc)
                continue
            # The batch is durable. Its proofs and replies are made beside the next batch's
            # append, which needs nothing from them but the published file (awaited before
            # its COMMIT). Two at most: a slow disk must slow the appends, not pile up work.
            if len(self._replying) >= MAX_REPLYING:
                await asyncio.wait(self._replying, return_when=asyncio.FIRST_COMPLETED)
            self._recorded = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._reply(batch, outcome, published, started,
                                                   self._recorded))
            self._replying.add(task)
            task.add_done_callback(self._replying.discard)

    async def _reply(self, batch: Sequence[_Pending], outcome: Mapping[int, _Outcome],
                     published: StoredCheckpoint, started: float,
                     recorded: asyncio.Future[None]) -> None:
        try:
            try:
                if self.after_commit is not None:
                    # The published high-water mark: written before anyone is answered, so
                    # it covers every checkpoint a reply carries; and before the next
                    # batch's COMMIT, so a crash leaves it at most this one batch behind
                    # the database, a batch no one got a reply for.
                    await self.after_commit(published)
            finally:
                recorded.set_result(None)
            self.faults.before("reply")
            replied = time.perf_counter()
            receipts = await self._receipts(batch, outcome, published)
            self._phase("receipts", replied)
            self.faults.after("reply")
        except Exception as exc:  # durable, but the submitters retry to get their receipts
            self._fail_batch(batch, exc)
            return
        for pending, result in zip(batch, receipts, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, ConflictError | RefusedError):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _receipts(self, batch: Sequence[_Pending], outcome: Mapping[int, _Outcome],
                        published: StoredCheckpoint
                        ) -> list[Receipt | ConflictError | RefusedError]:
        """Inclusion proofs for the whole batch against `published`, from one tile read."""
        indices = [r[0] for r in outcome.values() if isinstance(r, tuple)]
        proofs = await inclusion_proofs(indices, published.size, self.storage.tiles)
        out: list[Receipt | ConflictError | RefusedError] = []
        for i, pending in enumerate(batch):
            result = outcome[i]
            if not isinstance(result, tuple):
                out.append(result)
                continue
            index, created = result
            out.append(Receipt(index, pending.entry.leaf_hash, published.size, proofs[index],
                               published.note, created))
        return out

    async def _next_batch(self) -> list[_Pending]:
        """Wait for one group, then gather more for at most max_wait seconds, up to
        max_batch submissions. A group is taken whole: one larger than max_batch is a batch
        of its own, one that would overflow the batch waits for the next."""
        first, self._carry = self._carry or await self._queue.get(), None
        batch = list(first)
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                group = self._queue.get_nowait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    group = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if len(batch) + len(group) > self.max_batch:
                self._carry = group
                break
            batch.extend(group)
        self.waiting -= len(batch)
        return batch

    def _fail_batch(self, batch: Sequence[_Pending], exc: Exception) -> None:
        if isinstance(exc, SelfCheckError):
            self.failed = str(exc)
            log.critical("self-check failed, appends stopped: %s", exc)
        elif database_unavailable(exc):  # an outage, not a bug: no traceback per batch
            log.warning("append batch of %d failed, the database is unavailable: %s: %s",
                        len(batch), type(exc).__name__, exc)
        else:
            log.exception("append batch of %d failed", len(batch), exc_info=exc)
        self.metrics.append_failures.inc()
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(
                    UnavailableError("the log could not append this batch; retry shortly"))

    async def _append(self, batch: Sequence[_Pending]
                      ) -> tuple[dict[int, _Outcome], StoredCheckpoint]:
        """Append one batch in one transaction; return each outcome and the checkpoint."""
        at = time.perf_counter()
        async with self.storage.append() as tx:
            # Lock held, nothing written yet. A crash from here to COMMIT leaves the
            # database exactly as the previous batch left it; no one got a reply.
            latest = await tx.latest_checkpoint()
            builder = await self._load_edge(tx, latest)
            ours = self._ours(latest)
            registry = await self._synced_registry(tx, batch, ours)
            plan = await self._plan(tx, batch, builder.size, registry)
            at = self._phase("prepare", at)
            map_batch: MapBatch | None = None
            if plan.new:
                # The batch ends with the log's map-root/v1 entry (tlog.log.statemap), its
                # map nodes written in this same transaction.
                self.faults.before("map")
                map_root, map_batch = await self._map_root(tx, builder.size, plan.new)
                new = [*plan.new, map_root]
                self.faults.after("map")
                at = self._phase("map", at)
                for entry in new:
                    builder.append(entry.leaf_hash)
                self.faults.before("entries")
                await tx.insert_entries(new)
                self.faults.after("entries")
                changed = builder.take_changed()
                self.faults.before("tiles")
                await tx.put_tiles(changed)
                self.faults.after("tiles")
                note = sign_checkpoint(
                    Checkpoint(self.signer.name, builder.size, builder.root()), self.signer)
                await self._self_check(tx, latest, note, builder, changed)
                self.faults.before("checkpoint")
                await tx.put_checkpoint(builder.size, builder.root(), note)
                self.faults.after("checkpoint")
                latest = StoredCheckpoint(builder.size, builder.root(), note)
                at = self._phase("write", at)
            await self._previous_recorded()
            self.faults.before("commit")  # raising here rolls the whole batch back
        self._phase("commit", at)
        self.faults.after("commit")  # as if COMMIT's answer were lost: the batch is durable
        # COMMIT done: entries, tiles and the checkpoint are durable together. A crash from
        # here on loses only the replies; retries find the entries through dedup. Only now
        # may the registry replay move on: a rolled-back batch must leave no trace in it.
        self.registry, self.registry_next = registry, builder.size
        if map_batch is not None:
            self.map_cache.commit(map_batch)
        if latest is None:  # only possible for an empty batch, which _next_batch never makes
            raise UnavailableError("the log has no checkpoint yet")
        self._tip = (latest.size, latest.root, builder.edge())
        self.metrics.checkpoint(latest.size)
        # Published now: reads of this process (a standby's router among them) know it.
        self.storage.published = max(self.storage.published, latest.size)
        return plan.outcome, latest

    async def _previous_recorded(self) -> None:
        """Wait until the previous batch is in the published file; a file that could not be
        written stops appends (tlog.log.startup.record_or_stop), and this batch rolls back."""
        if self._recorded is not None:
            await asyncio.shield(self._recorded)
        if self.failed is not None:
            raise UnavailableError(self.failed)

    def forget(self, reason: str = "") -> None:
        """Drop what was kept from this process's own batches: another database answers
        now (tlog.store.identity), so the next batch reads everything from it."""
        self.map_cache = MapCache()
        self._tip = None

    def _phase(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.metrics.phase_seconds.labels(name).observe(now - since)
        return now

    async def _map_root(self, tx: AppendTx, size: int, new: Sequence[NewEntry]
                        ) -> tuple[NewEntry, MapBatch]:
        try:
            return await next_map_root(tx.state_map, size, new, self.map_cache)
        except MapError as exc:
            raise SelfCheckError(str(exc)) from exc

    async def _load_edge(self, tx: AppendTx, latest: StoredCheckpoint | None) -> TreeBuilder:
        """The right edge of the latest published tree, checked against its root.

        Read under the append lock before anything is written: a SelfCheckError here rolls
        back nothing but the lock, leaves the database as the last batch left it, and stops
        appends (readyz and submitters see why). When this process committed that tree, the
        edge it kept is used instead of reading the tiles (and still checked against the
        root).
        """
        size, root = (latest.size, latest.root) if latest else (0, None)
        try:
            if self._tip is not None and self._tip[:2] == (size, root):
                return edge_builder(size, self._tip[2], root)
            return await load_edge(tx.tiles, size, root)
        except EdgeError as exc:
            raise SelfCheckError(str(exc)) from exc

    def _ours(self, latest: StoredCheckpoint | None) -> bool:
        """Whether the latest checkpoint is the one this process's last batch committed
        (size and root): then nothing was appended since, by anyone, to this database."""
        ours = (latest is not None and self._tip is not None
                and self._tip[:2] == (latest.size, latest.root))
        if not ours:
            self.map_cache.forget_states()
        return ours

    async def _synced_registry(self, tx: AppendTx, batch: Sequence[_Pending], ours: bool
                               ) -> Registry:
        """The registry replayed to the end of the log (other processes may have appended).

        Publishers change only through registry entries, so the registry is copied (and the
        copy kept only after COMMIT) when registry entries are replayed or submitted; release
        counters are not carried between batches at all (_plan reads them per batch). A stored
        entry that does not replay (tlog.log.registry.ReplayError) stops appends.
        """
        # Nothing to replay when the log has not grown since this process's last batch.
        stored = [] if ours else await tx.registry_entries(self.registry_next)
        changing = stored or any(p.entry.kind in REGISTRY_KINDS for p in batch)
        registry = copy.deepcopy(self.registry) if changing else self.registry
        try:
            replay(registry, stored)
        except ReplayError as exc:
            raise SelfCheckError(str(exc)) from exc
        return registry

    async def _plan(self, tx: AppendTx, batch: Sequence[_Pending], size: int,
                    registry: Registry) -> _Plan:
        """Dedup against the log and within the batch, check tokens and the registry, and
        give new entries their indices. `registry` advances entry by entry."""
        entries = [p.entry for p in batch]
        names = [(e.package, e.version) for e in entries if isinstance(e, Release)]
        found = await tx.find_existing([e.leaf_hash for e in entries], names)
        tokens = await tx.tokens([p.token_id for p in batch if p.token_id is not None])
        # Only this batch's packages matter; counters come from the database, never from
        # memory that a rolled-back batch may have touched (nor pile up in an open log).
        registry.max_counter = (await tx.max_counters(sorted({n[0] for n in names}))
                                if registry.enforce and names else {})
        registry.releases = await release_facts(tx, entries)
        by_hash: dict[bytes, int] = {e.leaf_hash: e.index for e in found}
        by_name: dict[tuple[str, str], int] = {(e.package, e.version): e.index for e in found}
        plan = _Plan()
        for i, pending in enumerate(batch):
            plan.outcome[i] = self._place(pending, size + len(plan.new), by_hash, by_name,
                                          tokens, registry, plan.new)
        return plan

    def _place(self, pending: _Pending, index: int, by_hash: dict[bytes, int],
               by_name: dict[tuple[str, str], int], tokens: Mapping[str, TokenRecord],
               registry: Registry, new: list[NewEntry]) -> _Outcome:
        """The outcome of one submission; appends to `new` when it gets `index`."""
        e = pending.entry
        if e.leaf_hash in by_hash:
            return (by_hash[e.leaf_hash], False)
        name = (e.package, e.version) if isinstance(e, Release) else None
        if name is not None and name in by_name:
            return ConflictError(by_name[name], *name)
        if pending.token_id is not None:
            record = tokens.get(pending.token_id)
            if record is None:
                return RefusedError("token_unknown", "the submission token is not on record")
            if record.revoked:
                return RefusedError("token_revoked", "the submission token was revoked")
            if record.publisher != e.publisher:  # the handler compared claims and record
                return RefusedError("token_mismatch", "the token's record is for another "
                                                      "publisher than the entry's")
        try:
            registry.apply(index, e)
        except Refusal as exc:
            return RefusedError(exc.code, str(exc))
        if isinstance(e, Release):
            new.append(NewEntry(index, e.leaf, e.leaf_hash, e.package, e.version,
                                counter=e.counter))
            by_name[(e.package, e.version)] = index
        elif isinstance(e, Lifecycle):  # listed with its release by package
            new.append(NewEntry(index, e.leaf, e.leaf_hash, e.package, e.version, kind=e.kind))
        else:
            new.append(NewEntry(index, e.leaf, e.leaf_hash, None, None, kind=e.kind))
        by_hash[e.leaf_hash] = index
        return (index, True)

    async def _self_check(self, tx: AppendTx, latest: StoredCheckpoint | None, note: str,
                          builder: TreeBuilder, changed: Mapping[TileKey, bytes]) -> None:
        """Verify the new checkpoint with the public key and its consistency with the last."""
        try:
            cp = open_checkpoint(note, self.signer.verifier())
        except ValueError as exc:
            raise SelfCheckError(f"new checkpoint does not verify with the log key: {exc}") from exc
        if cp.size != builder.size or cp.root != builder.root():
            raise SelfCheckError("signed checkpoint does not match the tree just built")
        if latest is None or latest.size == 0:
            return

        async def fetch(keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
            out = {k: changed[k] for k in keys if k in changed}
            out.update(await tx.tiles([k for k in keys if k not in changed]))
            return out

        proof = await consistency_proof(latest.size, cp.size, fetch)
        try:
            verify_consistency(latest.size, cp.size, latest.root, cp.root, proof)
        except ProofError as exc:
            raise SelfCheckError(f"new tree of size {cp.size} is not consistent with the "
                                 f"published size {latest.size}: {exc}") from exc
