"""The aiohttp application: middleware, lifecycle, and the startup self-check."""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from tlog.config import Config
from tlog.http.access import AccessError, Buckets, InFlight, client_identity
from tlog.http.admin import add_admin_routes
from tlog.http.handlers import (
    CLIENT_BUCKETS,
    CONFIG,
    IN_FLIGHT,
    PUBLISHER_BUCKETS,
    SEQUENCER,
    STORAGE,
    TILE_FILES,
    TOKENS,
    VKEY,
    ApiError,
    add_routes,
    error_body,
)
from tlog.http.metrics import Metrics
from tlog.http.tokens import TokenAuthority, TokenError
from tlog.log.sequencer import RefusedError, Sequencer, UnavailableError
from tlog.store import migrate
from tlog.store.postgres import Storage
from tlog.store.tilecache import TileFiles
from tlog.store.tilecache import namespace as tile_namespace
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import parse_log_leaf
from verifier.protocol.merkle import EMPTY_ROOT
from verifier.protocol.note import Verifier
from verifier.protocol.registry import Refusal, Registry
from verifier.protocol.tiles import TILE_WIDTH, TreeBuilder, split_hashes

log = logging.getLogger("tlog")
access_log = logging.getLogger("tlog.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
ERROR_CODE: web.ResponseKey[str] = web.ResponseKey("error_code", str)
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
              413: "body_too_large", 415: "unsupported_media_type"}


class RequestMetrics:
    """The request count and latency of each route, with the labelled children looked up
    once: prometheus_client's labels() validates and locks on every call, a cost paid on
    every request of an auditor fetching millions of tiles. Routes and statuses are few."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counts: dict[tuple[str, int], Counter] = {}
        self._seconds: dict[str, Histogram] = {}

    def record(self, route: str, status: int, seconds: float) -> None:
        count = self._counts.get((route, status))
        if count is None:
            count = self._metrics.requests.labels(route, str(status))
            self._counts[(route, status)] = count
        count.inc()
        latency = self._seconds.get(route)
        if latency is None:
            latency = self._seconds[route] = self._metrics.request_seconds.labels(route)
        latency.observe(seconds)


REQUEST_METRICS: web.AppKey[RequestMetrics] = web.AppKey("request_metrics", RequestMetrics)


class StartupError(RuntimeError):
    """The stored log fails its self-check; serving it would spread a broken tree."""


def _json_error(status: int, code: str, message: str, retry_after: float | None = None,
                **extra: object) -> web.Response:
    resp = web.json_response(error_body(code, message, **extra), status=status)
    resp[ERROR_CODE] = code  # for the refusal metric, without parsing the body back
    if retry_after is not None or status == 503:
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after or 1)))
    return resp


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes pass the per-client quota and the in-flight cap before the handler runs."""
    if request.method != "POST":
        return await handler(request)
    request.app[CLIENT_BUCKETS].take(client_identity(request), "this client")
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    try:
        return await handler(request)
    finally:
        in_flight.leave()


async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, or the JSON error for whatever it raised."""
    try:
        return await _guarded(request, handler)
    except ApiError as exc:
        resp = _json_error(exc.status, exc.code, exc.message, **exc.extra)
        if exc.close:
            resp.force_close()
        return resp
    except (AccessError, TokenError, RefusedError) as exc:
        return _json_error(exc.status, exc.code, str(exc), getattr(exc, "retry_after", None))
    except UnavailableError as exc:
        return _json_error(503, "unavailable", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.status == 413 else (exc.reason or "error")
        resp = _json_error(exc.status, HTTP_CODES.get(exc.status, "http_error"),
                           f"{message} ({request.method} {request.path})")
        if isinstance(exc, web.HTTPMethodNotAllowed):
            resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return resp
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return _json_error(500, "internal", "internal error; the operator has the details")


@web.middleware
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON; never a 500 for a client's mistake; count and log every request.

    The access log is one JSON object per request with its id (X-Request-Id, echoed back);
    it never holds headers, bodies, tokens or keys.
    """
    started = time.perf_counter()
    request_id = _request_id(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    resp = await _respond(request, handler)
    resp.headers["X-Request-Id"] = request_id
    elapsed = time.perf_counter() - started
    request.app[REQUEST_METRICS].record(route, resp.status, elapsed)
    if resp.status >= 400:
        request.app[METRICS].refusals.labels(resp.get(ERROR_CODE, "unknown")).inc()
    if access_log.isEnabledFor(logging.INFO):  # else skip building the line
        access_log.info(json.dumps({
            "id": request_id, "method": request.method, "route": route, "status": resp.status,
            "ms": round(elapsed * 1000, 2), "client": request.remote}))
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


async def replay_registry(storage: Storage, config: Config, size: int) -> Registry:
    """Who may publish what at the end of the stored log: the replay of its registry entries."""
    registry = Registry(config.admin_keys, enforce=config.policy == "registered")
    for index, leaf in await storage.registry_entries(0):
        if index >= size:
            break
        try:
            registry.apply(index, parse_log_leaf(leaf))
        except (EntryError, Refusal) as exc:
            raise StartupError(f"registry entry {index} does not replay with the configured "
                               f"admin keys: {exc}") from exc
    return registry


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
    app[REQUEST_METRICS] = RequestMetrics(metrics)
    app[VKEY] = config.signer.verifier().text()
    if config.tile_cache is not None:
        app[TILE_FILES] = TileFiles(config.tile_cache, tile_namespace(app[VKEY]))
    app[CONFIG] = config
    if config.token_signer is not None:
        app[TOKENS] = TokenAuthority(config.token_signer, config.origin)
    q = config.quotas
    app[PUBLISHER_BUCKETS] = Buckets(q.publisher_rate, q.publisher_burst)
    app[CLIENT_BUCKETS] = Buckets(q.client_rate, q.client_burst)
    app[IN_FLIGHT] = InFlight(q.max_in_flight)
    add_routes(app)
    add_admin_routes(app)
    app.router.add_get("/metrics", get_metrics)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        storage = await Storage.connect(config.database_url)
        try:
            async with storage.pool.acquire() as conn:
                await migrate.check_version(conn)
            size = await self_check(storage, config.signer.verifier())
            registry = await replay_registry(storage, config, size)
            seq = Sequencer(storage, config.signer, metrics, registry,
                            max_batch=config.max_batch, max_wait=config.max_wait)
            seq.registry_next = size
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
