"""The aiohttp application: middleware, lifecycle, and the startup self-check."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from verifier.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.merkle import EMPTY_ROOT
from verifier.note import Verifier
from verifier.tiles import TILE_WIDTH, TreeBuilder, split_hashes

from . import migrate
from .config import Config
from .handlers import SEQUENCER, STORAGE, VKEY, ApiError, add_routes, error_body
from .metrics import Metrics
from .sequencer import Sequencer, UnavailableError
from .storage import Storage

log = logging.getLogger("tlog")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
              413: "body_too_large", 415: "unsupported_media_type"}


class StartupError(RuntimeError):
    """The stored log fails its self-check; serving it would spread a broken tree."""


def _json_error(status: int, code: str, message: str, **extra: object) -> web.Response:
    resp = web.json_response(error_body(code, message, **extra), status=status)
    if status == 503:
        resp.headers["Retry-After"] = "1"
    return resp


@web.middleware
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON; never a 500 for a client's mistake; count every request."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        resp = await handler(request)
    except ApiError as exc:
        resp = _json_error(exc.status, exc.code, exc.message, **exc.extra)
    except UnavailableError as exc:
        resp = _json_error(503, "unavailable", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.status == 413 else (exc.reason or "error")
        resp = _json_error(exc.status, HTTP_CODES.get(exc.status, "http_error"),
                           f"{message} ({request.method} {request.path})")
        if isinstance(exc, web.HTTPMethodNotAllowed):
            resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        resp = _json_error(500, "internal", "internal error; the operator has the details")
    metrics = request.app[METRICS]
    metrics.requests.labels(route, str(resp.status)).inc()
    metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
    return resp


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def self_check(storage: Storage, verifier: Verifier) -> int:
    """Verify the latest stored checkpoint and recompute the right edge; return its size.

    Refuses (StartupError) when the checkpoint does not verify with our key, when
    entries exist beyond or short of it, or when the stored tiles and leaves at the
    right edge do not reproduce its root.
    """
    latest = await storage.latest_checkpoint()
    if latest is None:
        if await storage.entry_count():
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
    count = await storage.entry_count()
    if count != cp.size:
        raise StartupError(f"{count} entries are stored but the latest checkpoint has {cp.size}")
    await _check_edge(storage, cp)
    return cp.size


async def _check_edge(storage: Storage, cp: Checkpoint) -> None:
    keys = TreeBuilder.edge_keys(cp.size)
    tiles = await storage.tiles([(level, n) for level, n, _ in keys])
    edge: dict[int, bytes] = {}
    for level, n, width in keys:
        data = tiles.get((level, n), b"")
        if len(data) < 32 * width:
            raise StartupError(f"tile {level}/{n} at the right edge of size {cp.size} is missing")
        edge[level] = data[:32 * width]
    if TreeBuilder(cp.size, edge).root() != cp.root:
        raise StartupError(f"the stored tiles do not reproduce the root of size {cp.size}")
    if 0 in edge:
        lo = cp.size - cp.size % TILE_WIDTH
        if await storage.leaf_hash_range(lo, cp.size) != split_hashes(edge[0]):
            raise StartupError(f"stored leaves {lo}..{cp.size - 1} do not match their tile")


async def _publish_empty(seq: Sequencer) -> None:
    """Publish the size-0 checkpoint once, so clients always find a checkpoint."""
    async with seq.storage.append() as tx:
        if await tx.latest_checkpoint() is None:
            note = sign_checkpoint(Checkpoint(seq.signer.name, 0, EMPTY_ROOT), seq.signer)
            open_checkpoint(note, seq.signer.verifier())
            await tx.put_checkpoint(0, EMPTY_ROOT, note)


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[errors_and_metrics], client_max_size=config.max_body)
    metrics = Metrics()
    app[METRICS] = metrics
    app[VKEY] = config.signer.verifier().text()
    add_routes(app)
    app.router.add_get("/metrics", get_metrics)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        storage = await Storage.connect(config.database_url)
        try:
            async with storage.pool.acquire() as conn:
                await migrate.check_version(conn)
            size = await self_check(storage, config.signer.verifier())
            seq = Sequencer(storage, config.signer, metrics, max_batch=config.max_batch,
                            max_wait=config.max_wait)
            if size == 0:
                await _publish_empty(seq)
            metrics.tree_size.set(size)
            app[STORAGE], app[SEQUENCER] = storage, seq
            seq.start()
            yield
            await seq.stop()
        finally:
            await storage.close()

    app.cleanup_ctx.append(lifecycle)
    return app
