"""Opening the log for `tlog serve`: the startup self-check, the registry replay, the
size-0 checkpoint, and the running sequencer.

Nothing is served from a database whose latest checkpoint does not verify with the log's
key, whose entry count disagrees with it, or whose right edge (tiles and leaves) does not
reproduce its root: serving it would spread a broken tree (StartupError). Nor one behind
or beside the largest checkpoint the log published (tlog.log.highwater): a database
restored from an older backup, or another log's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from tlog.config import Config, pool_options
from tlog.log import faults
from tlog.log.edge import EdgeError, edge_builder, read_edge
from tlog.log.highwater import BehindError, HighWater, HighWaterError, record_or_stop
from tlog.log.metrics import AppendMetrics, WitnessMetrics
from tlog.log.registry import ReplayError, replay_registry
from tlog.log.sequencer import Sequencer
from tlog.log.witness import WitnessTask
from tlog.store import migrate
from tlog.store.postgres import Storage
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.protocol.merkle import EMPTY_ROOT
from verifier.protocol.note import NoteSigner, Verifier
from verifier.protocol.tiles import TILE_WIDTH, split_hashes

log = logging.getLogger("tlog.startup")


class StartupError(RuntimeError):
    """The stored log fails its self-check; serving it would spread a broken tree."""


async def self_check(storage: Storage, verifier: Verifier) -> int:
    """Verify the latest stored checkpoint and recompute the right edge; return its size.

    Refuses (StartupError) when the checkpoint does not verify with our key, when
    entries exist beyond or short of it, or when the stored tiles and leaves at the
    right edge do not reproduce its root.
    """
    latest, count = await storage.checkpoint_and_count()  # one snapshot: appends may run
    if latest is None:
        if count:
            raise StartupError("entries are stored but no checkpoint is: refusing to serve")
        return 0
    try:
        cp = open_checkpoint(latest.note, verifier)
    except ValueError as exc:
        raise StartupError(f"the latest stored checkpoint (size {latest.size}) does not verify "
                           f"with the key for {verifier.name}: {exc}; is this the right key "
                           "and database?") from exc
    if (cp.size, cp.root) != (latest.size, latest.root):
        raise StartupError("the latest checkpoint's columns disagree with its signed note")
    if count != cp.size:
        raise StartupError(f"{count} entries are stored but the latest checkpoint has {cp.size}")
    await _check_edge(storage, cp)
    return cp.size


async def _check_edge(storage: Storage, cp: Checkpoint) -> None:
    """The edge tiles reproduce the root, and the leaves of the last partial tile are the
    stored entries' (the sequencer trusts the edge tiles; only startup reads the leaves)."""
    try:
        edge = await read_edge(storage.tiles, cp.size)
        edge_builder(cp.size, edge, cp.root)
    except EdgeError as exc:
        raise StartupError(str(exc)) from exc
    if 0 in edge:
        lo = cp.size - cp.size % TILE_WIDTH
        if await storage.leaf_hash_range(lo, cp.size) != split_hashes(edge[0]):
            raise StartupError(f"stored leaves {lo}..{cp.size - 1} do not match their tile")


async def publish_empty(storage: Storage, signer: NoteSigner) -> None:
    """Publish the size-0 checkpoint once, so clients always find a checkpoint.

    One append transaction under the append lock: another process may have published it
    (or more) first. Recovery sees either no checkpoint (this runs again at the next start)
    or the size-0 one.
    """
    async with storage.append() as tx:
        if await tx.latest_checkpoint() is None:
            note = sign_checkpoint(Checkpoint(signer.name, 0, EMPTY_ROOT), signer)
            open_checkpoint(note, signer.verifier())
            await tx.put_checkpoint(0, EMPTY_ROOT, note)


async def _check_published(storage: Storage, config: Config, seq: Sequencer) -> None:
    """Compare the database with the published high-water file (tlog.log.highwater) and
    hook the file's updates into the sequencer. A database behind it is refused, or with
    allow_behind_published served with appends stopped (nothing is ever signed then)."""
    assert config.published_file is not None
    high = HighWater(config.published_file, config.signer.verifier())
    latest = await storage.latest_checkpoint()
    if latest is None:
        raise StartupError("the database has no checkpoint after startup")
    try:
        await high.check(storage, latest)
    except BehindError as exc:
        if not config.allow_behind_published:
            raise StartupError(f"{exc}; or, to serve it for reads only with appends "
                               "refused, --allow-behind-published") from exc
        _stop_appends(seq, f"{exc} (serving reads only: --allow-behind-published)")
        return
    except (HighWaterError, OSError) as exc:
        raise StartupError(str(exc)) from exc
    seq.after_commit = functools.partial(record_or_stop, high)


def _stop_appends(seq: Sequencer, why: str) -> None:
    """Appends answer 503 with `why` (and /readyz says not ready) until a restart."""
    log.critical("appends stopped: %s", why)
    seq.failed = why


@dataclass(frozen=True)
class RunningLog:
    storage: Storage
    sequencer: Sequencer
    witnesses: WitnessTask | None  # with a witness policy only


@asynccontextmanager
async def running_log(config: Config, metrics: AppendMetrics,
                      witness_metrics: WitnessMetrics | None = None
                      ) -> AsyncIterator[RunningLog]:
    """The checked, open log of `config`, its running sequencer and (with a witness policy)
    its witness task, stopped and closed on exit. Raises StartupError (or
    migrate.SchemaError) for a log that must not be served."""
    try:
        injected = faults.from_env()  # test-only; refuses without its consent variable
    except faults.FaultConfigError as exc:
        raise StartupError(str(exc)) from exc
    storage = await Storage.connect(config.database_url, **pool_options(config))
    try:
        async with storage.pool.acquire() as conn:
            await migrate.check_version(conn)
        size = await self_check(storage, config.signer.verifier())
        try:
            registry = await replay_registry(storage, config.admin_keys,
                                             config.policy == "registered", size)
        except ReplayError as exc:
            raise StartupError(str(exc)) from exc
        seq = Sequencer(storage, config.signer, metrics, registry,
                        max_batch=config.max_batch, max_wait=config.max_wait,
                        faults=injected)
        seq.registry_next = size
        if size == 0:
            await publish_empty(storage, config.signer)
        if config.published_file is not None:
            await _check_published(storage, config, seq)
        metrics.tree_size.set(size)
        witnesses = None
        if config.witness_policy is not None:
            witnesses = WitnessTask(
                storage, config.witness_policy, config.signer.verifier(),
                witness_metrics or WitnessMetrics(CollectorRegistry()),
                config.witness_interval, config.witness_timeout,
                config.witness_refresh, on_rollback=functools.partial(_stop_appends, seq))
        try:
            # Witnesses first: their first round (tlog.log.witness._probe) may find the
            # database behind what they cosigned, and stop appends before any is taken.
            if witnesses is not None:
                await witnesses.start()
            seq.start()
            yield RunningLog(storage, seq, witnesses)
        finally:
            if witnesses is not None:
                await witnesses.stop()
            await seq.stop()
    finally:
        await storage.close()
