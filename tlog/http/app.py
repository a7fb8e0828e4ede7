"""The aiohttp application: error answers and metrics middleware, routes, lifecycle.

The lifecycle opens the log (tlog.log.startup.running_log: startup self-check, registry
replay, sequencer) and hands the handlers its reads (a LogReader) and its sequencer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from tlog.config import Config, pool_options, quorum_rule
from tlog.http.access import Buckets, ClientInFlight, InFlight, client_identity
from tlog.http.admin import add_admin_routes
from tlog.http.batch import add_batch_routes
from tlog.http.checkpoints import add_checkpoint_routes
from tlog.http.errors import ERROR_CODE, HTTP_ERROR, HTTP_EXCEPTION_CODES, STATUS, ApiError
from tlog.http.explorer import add_explorer_routes
from tlog.http.handlers import (
    CLIENT_BUCKETS,
    CLIENT_IN_FLIGHT,
    CLIENT_PAGES,
    CONFIG,
    IN_FLIGHT,
    PAGE_SLOTS,
    PAGE_THREADS,
    PAGES_PER_CLIENT,
    PUBLISHER_BUCKETS,
    READ_BUCKETS,
    READER,
    SEQUENCER,
    TILE_FILES,
    TOKEN_LEDGER,
    TOKENS,
    VKEY,
    WITNESS_STATUS,
    add_routes,
    release_write_slot,
)
from tlog.http.metrics import Metrics
from tlog.http.outage import (
    LAST_CHECKPOINT,
    OUTAGE,
    LastCheckpoint,
    OutageReport,
    database_unavailable_error,
)
from tlog.http.packages import add_package_routes
from tlog.http.recent import RECENT, RecentCheckpoint
from tlog.http.tokens import TokenAuthority
from tlog.log.sequencer import RefusedError, UnavailableError
from tlog.log.startup import running_log
from tlog.store.outage import database_unavailable
from tlog.store.routing import standby_reader
from tlog.store.tilecache import TileFiles
from tlog.store.tilecache import namespace as tile_namespace

log = logging.getLogger("tlog")
access_log = logging.getLogger("tlog.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
# Pages of entries built at once, each in a thread: with 4 MiB pages, what they hold at most
# (the rows, the answer) stays in the tens of MB; further page requests wait their turn.
PAGES_AT_ONCE = 2
WATCH_EVERY = 5.0  # seconds between two checks that the database is the same one


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


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes pass the client's rate and in-flight caps before the handler runs; the global
    write cap is taken once the body is read (handlers.read_json_body) and given back here.
    Reads pass a per-client quota of their own, so neither starves the other."""
    if request.method != "POST":
        request.app[READ_BUCKETS].take(client_identity(request), "this client", "reads")
        return await handler(request)
    client = client_identity(request)
    request.app[CLIENT_BUCKETS].take(client, "this client")
    per_client = request.app[CLIENT_IN_FLIGHT]
    per_client.enter(client)
    try:
        return await handler(request)
    finally:
        per_client.leave(client)
        release_write_slot(request)


async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, or the JSON error for whatever it raised."""
    try:
        return await _guarded(request, handler)
    except ApiError as exc:
        return exc.response()
    except RefusedError as exc:
        if exc.code not in STATUS:  # a refusal the table does not know is a bug of ours
            log.error("refusal %s without a status on %s %s", exc.code, request.method,
                      request.path)
            return ApiError("internal", "internal error; the operator has the details").response()
        return ApiError(exc.code, str(exc)).response()
    except UnavailableError as exc:
        return ApiError("unavailable", str(exc)).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except Exception as exc:
        if _hung_up(request, exc):  # the client's doing: no error, no traceback
            log.debug("the client hung up during %s %s", request.method, request.path)
            return ApiError("bad_request", "the client closed the connection", close=True
                            ).response()
        if database_unavailable(exc):  # an outage, not a bug: no traceback per request
            return database_unavailable_error(request, exc).response()
        log.exception("internal error on %s %s", request.method, request.path)
        return ApiError("internal", "internal error; the operator has the details").response()


def _hung_up(request: web.Request, exc: Exception) -> bool:
    """Whether `exc` is this request's client gone (a reset from the database is not)."""
    transport = request.transport
    return isinstance(exc, ConnectionResetError) and (transport is None
                                                      or transport.is_closing())


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """The JSON error for an HTTP error aiohttp raised (no route, wrong method, too large)."""
    message = exc.text if exc.status == 413 else (exc.reason or "error")
    code = HTTP_EXCEPTION_CODES.get(exc.status, HTTP_ERROR)
    resp = ApiError(code, f"{message} ({request.method} {request.path})",
                    status=exc.status).response()
    if isinstance(exc, web.HTTPMethodNotAllowed):
        resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    return resp


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


async def _tie_to_database(app: web.Application) -> None:
    """Fill what answers while the database is away (the last published checkpoint) and
    tie it, and the tile files, to the database they come from (tlog.store.identity)."""
    reader, last = app[READER], app[LAST_CHECKPOINT]
    policy = app[CONFIG].witness_policy
    last.seen(await reader.latest_published(quorum_rule(policy)) if policy
              else await reader.latest_checkpoint())
    reader.on_swap(last.forget)
    files = app.get(TILE_FILES)
    if files is not None:
        await files.bind(reader.identity(), reader.checkpoint_at)
        reader.on_swap(files.drop)


async def _watch_database(check: Callable[[], Awaitable[None]],
                          every: float = WATCH_EVERY) -> None:
    """Every few seconds, whether the database is still the one the caches came from: a
    swap under a running server (renamed databases, a pooler sending us elsewhere) breaks
    no connection of ours, and cache hits make no query that would notice."""
    while True:
        await asyncio.sleep(every)
        try:
            await check()
        except Exception as exc:  # an outage: the requests meeting it answer 503
            if not database_unavailable(exc):
                log.exception("checking which database answers failed")


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[errors_and_metrics], client_max_size=config.max_body)
    metrics = Metrics()
    app[METRICS] = metrics
    app[LAST_CHECKPOINT], app[OUTAGE] = LastCheckpoint(), OutageReport()
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
    app[IN_FLIGHT] = InFlight(q.max_in_flight, q.max_in_flight_bytes)
    app[CLIENT_IN_FLIGHT] = ClientInFlight(q.max_in_flight_per_client)
    app[CLIENT_PAGES] = ClientInFlight(PAGES_PER_CLIENT, "pages of entries")
    app[READ_BUCKETS] = Buckets(q.read_rate, q.read_burst)
    app[PAGE_SLOTS] = asyncio.Semaphore(PAGES_AT_ONCE)
    add_routes(app)
    add_batch_routes(app)
    add_checkpoint_routes(app)
    add_package_routes(app)
    add_admin_routes(app)
    add_explorer_routes(app)
    app.router.add_get("/metrics", get_metrics)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        app[PAGE_THREADS] = ThreadPoolExecutor(PAGES_AT_ONCE, thread_name_prefix="tlog-pages")
        try:
            async with running_log(config, metrics.append, metrics.witness) as running:
                app[READER] = app[TOKEN_LEDGER] = running.storage
                app[RECENT] = RecentCheckpoint(lambda: app[READER].latest_checkpoint(),
                                               lambda: running.storage.published,
                                               config.checkpoint_ttl)
                running.storage.on_swap(lambda _reason: app[RECENT].drop())
                app[SEQUENCER] = running.sequencer
                if running.witnesses is not None:
                    app[WITNESS_STATUS] = running.witnesses.status
                await _tie_to_database(app)
                watch = asyncio.create_task(_watch_database(running.storage.check_database),
                                            name="tlog-watch-database")
                try:
                    if config.read_database_url is None:
                        yield
                    else:
                        async with standby_reader(running.storage, config.read_database_url,
                                                  metrics.count_standby,
                                                  pool_options(config)) as reads:
                            metrics.standby_lag.set_function(lambda: reads.lag)
                            app[READER] = reads
                            yield
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
        finally:
            app[PAGE_THREADS].shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(lifecycle)
    return app
