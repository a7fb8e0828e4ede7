"""Streaming over a whole log in bounded memory, using every core.

`map_bundles` runs a function over every entry bundle (and, if asked, its level-0 hash tile)
in worker processes that fetch what they work on themselves, so entries cross no process
boundary and this process only gathers small results, in order and with a bounded number in
flight; `fetched` is its fetching, with a few requests in flight; the work of checking
entries is in verifier.protocol.leaves. Audit and monitor are built from these.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

from verifier.client.log import LogClient
from verifier.protocol.leaves import Fetched
from verifier.protocol.tiles import TILE_WIDTH

R = TypeVar("R")

BUNDLES_PER_TASK = 4  # bundles one worker task fetches and works on (1,024 entries)
WORKER_PREFETCH = 2  # bundles (and tiles) a worker fetches ahead of the one it works on


def worker_signals() -> None:
    """In a worker process: ignore SIGINT (a terminal's Ctrl-C reaches the whole process
    group; the main process decides when to stop, saving its progress) and let SIGTERM
    terminate as usual (not a handler inherited from the main process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


Work = Callable[[Fetched], R]


def fetched(client: LogClient, size: int, start: int, end_bundle: int | None = None,
            with_tiles: bool = False, prefetch: int = 4) -> Iterator[Fetched]:
    """The bundles holding entries start..size-1 (up to bundle `end_bundle`, exclusive), in
    order, fetched `prefetch` ahead by threads; with `with_tiles`, each full bundle's level-0
    hash tile too. Nothing is verified here."""
    first_bundle = start // TILE_WIDTH
    last_bundle = (size + TILE_WIDTH - 1) // TILE_WIDTH
    if end_bundle is not None:
        last_bundle = min(last_bundle, end_bundle)

    def fetch(n: int) -> Fetched:
        first = max(start, n * TILE_WIDTH)
        leaves = client.entry_bundle(n, size)[first - n * TILE_WIDTH:]
        full = (n + 1) * TILE_WIDTH <= size
        tile = client.hash_tile(0, n, size) if with_tiles and full else None
        return Fetched(first, leaves, tile)

    with ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
        pending: deque[Future[Fetched]] = deque()
        for n in range(first_bundle, last_bundle):
            pending.append(pool.submit(fetch, n))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def map_bundles(client: LogClient, size: int, start: int, work: Work[R], workers: int, *,
                with_tiles: bool = False, prefetch: int = 4, in_flight: int | None = None,
                initializer: Callable[[], None] | None = None) -> Generator[R, None, None]:
    """work(Fetched) for every bundle holding entries start..size-1, results in order.

    With `workers` > 0, worker processes each fetch BUNDLES_PER_TASK bundles at a time with
    their own copy of `client` (its disk cache included) and run `work` on them, so only the
    results travel between processes; at most `in_flight` tasks (default 2 per worker + 2)
    are outstanding, so memory stays bounded. With 0 workers everything runs here,
    `prefetch` bundles ahead. `initializer` runs first in each worker. Errors raised by
    fetching or by `work` (such as TransportError or VerificationFailed) are raised here,
    in order.
    """
    if not 0 <= start <= size:
        raise ValueError(f"start {start} is outside the tree of size {size}")
    if workers <= 0:
        for item in fetched(client, size, start, None, with_tiles, prefetch):
            yield work(item)
        return
    first_bundle = start // TILE_WIDTH
    last_bundle = (size + TILE_WIDTH - 1) // TILE_WIDTH
    tasks = ((n, min(n + BUNDLES_PER_TASK, last_bundle))
             for n in range(first_bundle, last_bundle, BUNDLES_PER_TASK))
    with ProcessPoolExecutor(max_workers=workers, initializer=_start_worker,
                             initargs=(client, initializer)) as pool:
        pending: deque[Future[list[R]]] = deque()
        try:
            for lo, hi in tasks:
                pending.append(pool.submit(_run_task, work, size, max(start, lo * TILE_WIDTH),
                                           hi, with_tiles))
                if len(pending) >= (in_flight or 2 * workers + 2):
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


_worker_client: LogClient | None = None


def _start_worker(client: LogClient, initializer: Callable[[], None] | None) -> None:
    global _worker_client
    _worker_client = client.copy()  # forked: the parent's sockets stay the parent's
    if initializer is not None:
        initializer()


def _run_task(work: Work[R], size: int, start: int, end_bundle: int,
              with_tiles: bool) -> list[R]:
    """In a worker: fetch the bundles of one task (WORKER_PREFETCH ahead) and work on each."""
    if _worker_client is None:
        raise RuntimeError("map_bundles worker started without its client")
    return [work(item) for item in fetched(_worker_client, size, start, end_bundle,
                                           with_tiles, WORKER_PREFETCH)]
