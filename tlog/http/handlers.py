"""HTTP handlers: parse strictly, read the log (a LogReader) or submit to the sequencer.

C2SP read API (byte-exact): /checkpoint, /tile/<L>/<N>[.p/<W>], /tile/entries/<N>[.p/<W>].
JSON API under /v1 (schema/openapi.yaml). Every error body is
{"error": {"code": "...", "message": "..."}}.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from tlog.config import Config
from tlog.http.access import Buckets, ClientInFlight, InFlight, client_identity, require_client_cert
from tlog.http.errors import ApiError, entry_error
from tlog.http.pages import build_page, entry_item
from tlog.http.recent import RECENT
from tlog.http.tokens import TokenAuthority, TokenClaims, TokenError, bearer
from tlog.log.proofs import consistency_proof, inclusion_proof
from tlog.log.sequencer import ConflictError, Receipt, Sequencer, UnavailableError
from tlog.store.outage import RETRY_AFTER, database_unavailable
from tlog.store.reader import LogReader, TokenLedger
from tlog.store.tilecache import TileFiles
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import LogEntry, validate_log_entry
from verifier.protocol.entries.lifecycle import Lifecycle
from verifier.protocol.entries.registry_kinds import PUBLISHER_KIND, RegistryEntry
from verifier.protocol.entries.release import PACKAGE_NAME, VERSION_TEXT, Release
from verifier.protocol.entries.strict_json import parse_json
from verifier.protocol.tiles import TILE_HEIGHT, TILE_WIDTH, parse_tile_path, tile_path, tile_width

IMMUTABLE = "public, max-age=31536000, immutable"
PARTIAL = "public, max-age=60"  # a partial tile's bytes never change, but it is soon replaced
CHECKPOINT_CACHE = "no-cache"
# /v1/checkpoints/cosigned: its answer for an index can change (a smaller checkpoint
# published later by another process, a policy change), so it is not immutable.
SHORT_CACHE = "public, max-age=10"
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_INT = 2**63 - 1
PAGE_COST_BYTES = 64 * 1024  # a page costs one more read token per this many bytes
PAGES_PER_CLIENT = 4  # pages of one client in progress at once (429 beyond)
INLINE_ENTRY = 8 * 1024  # a single entry up to this size is answered on the event loop
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_HEX32 = re.compile(r"[0-9a-f]{64}")

READER: web.AppKey[LogReader] = web.AppKey("reader")  # the log's published data
TOKEN_LEDGER: web.AppKey[TokenLedger] = web.AppKey("token_ledger")
SEQUENCER: web.AppKey[Sequencer] = web.AppKey("sequencer", Sequencer)
VKEY: web.AppKey[str] = web.AppKey("vkey", str)
CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
TOKENS: web.AppKey[TokenAuthority] = web.AppKey("tokens", TokenAuthority)
PUBLISHER_BUCKETS: web.AppKey[Buckets] = web.AppKey("publisher_buckets", Buckets)
CLIENT_BUCKETS: web.AppKey[Buckets] = web.AppKey("client_buckets", Buckets)
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight", InFlight)
CLIENT_IN_FLIGHT: web.AppKey[ClientInFlight] = web.AppKey("client_in_flight", ClientInFlight)
HELD_BYTES: web.RequestKey[int] = web.RequestKey("held_bytes", int)  # this request's IN_FLIGHT
READ_BUCKETS: web.AppKey[Buckets] = web.AppKey("read_buckets", Buckets)
CLIENT_PAGES: web.AppKey[ClientInFlight] = web.AppKey("client_pages", ClientInFlight)
PAGE_SLOTS: web.AppKey[asyncio.Semaphore] = web.AppKey("page_slots", asyncio.Semaphore)
PAGE_THREADS: web.AppKey[ThreadPoolExecutor] = web.AppKey("page_threads", ThreadPoolExecutor)
TILE_FILES: web.AppKey[TileFiles] = web.AppKey("tile_files", TileFiles)
# With a witness policy: the witness task's status for /readyz (tlog.log.witness).
WITNESS_STATUS: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("witness_status")


def parse_uint(name: str, text: str | None, default: int | None = None) -> int:
    """A canonical decimal in 0..2^63-1, else 400: no signs, spaces or leading zeros."""
    if text is None:
        if default is None:
            raise ApiError("missing_parameter", f"{name} is required")
        return default
    if not _DECIMAL.fullmatch(text) or int(text) > MAX_INT:
        raise ApiError("bad_number",
                       f"{name} must be a decimal integer 0..{MAX_INT} without leading zeros")
    return int(text)


def query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters, each at most once and all of them known."""
    out: dict[str, str] = {}
    for key, value in request.query.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ApiError("unknown_parameter",
                           f"unknown query parameter {key!r}; allowed: {known}")
        if key in out:
            raise ApiError("repeated_parameter", f"query parameter {key!r} given twice")
        out[key] = value
    return out


def parse_hash(name: str, text: str | None) -> bytes:
    if text is None:
        raise ApiError("missing_parameter", f"{name} is required")
    if not _HEX32.fullmatch(text):
        raise ApiError("bad_hash", f"{name} must be 64 lowercase hex digits (32 bytes)")
    return bytes.fromhex(text)


async def latest_size(request: web.Request, fresh: bool = False) -> int:
    """The latest checkpoint's size, perhaps a moment old (tlog.http.recent) unless `fresh`."""
    recent = request.app[RECENT]
    latest = await (recent.fresh() if fresh else recent.get())
    return latest.size if latest else 0


async def get_tile(request: web.Request) -> web.Response:
    path = "tile/" + request.match_info["rest"]
    try:
        level, n, width = parse_tile_path(path)
    except ValueError as exc:
        raise ApiError("not_found", f"not a tile path: {exc}") from exc
    full = width == TILE_WIDTH
    files = request.app.get(TILE_FILES) if full else None
    body = await _kept_tile(request, files, level, n) if files is not None else None
    if body is None:
        if level < 0:
            body = await _entry_bundle(request, n, width)
            # A bundle may be megabytes: it costs reads by its size, as a page of entries does.
            request.app[READ_BUCKETS].charge(client_identity(request),
                                             len(body) // PAGE_COST_BYTES)
        else:
            body = await _hash_tile(request, level, n, width)
        if files is not None:
            await _keep_tile(request, files, level, n, body)
    cache = IMMUTABLE if full else PARTIAL
    return web.Response(body=body, content_type="application/octet-stream",
                        headers={"Cache-Control": cache})


async def _kept_tile(request: web.Request, files: TileFiles, level: int, n: int) -> bytes | None:
    """Full tile (level, n) from the disk cache, if it is published and kept there."""
    shift = TILE_HEIGHT * (max(level, 0) + 1)  # a tile at this level spans 2**shift leaves
    if n >= MAX_INT >> shift:
        return None  # beyond any tree: the usual path answers 404
    # A tile is only kept once served, hence published; asking again guards against a
    # database restored to an earlier tree under a cache nobody deleted.
    if not await request.app[READER].published_at_least((n + 1) << shift):
        return None
    return files.get(tile_path(level, n))


async def _keep_tile(request: web.Request, files: TileFiles, level: int, n: int,
                     body: bytes) -> None:
    """Keep a full tile just read from the database in the tile files; the files' record
    first moves to the latest checkpoint if the tile lies beyond it (tlog.store.tilecache)."""
    end = (n + 1) << (TILE_HEIGHT * (max(level, 0) + 1))  # the tile's leaves end here
    if not files.covers(end):
        try:
            latest = await request.app[READER].latest_checkpoint()
        except Exception as exc:
            if database_unavailable(exc):
                return  # the tile is answered all the same, only not kept
            raise
        if latest is not None:
            files.advance(latest.size, latest.root)
    files.put(tile_path(level, n), body, end)


async def _hash_tile(request: web.Request, level: int, n: int, width: int) -> bytes:
    if n > MAX_INT // TILE_WIDTH:  # beyond any tree the database can hold
        raise ApiError("not_found", f"tile {level}/{n} does not exist")
    data = await request.app[READER].tile(level, n)
    if data is not None and len(data) >= 32 * width:
        return data[:32 * width]  # a wider stored tile starts with the same hashes
    if tile_width(level, n, await latest_size(request, fresh=True)) >= width:
        raise RuntimeError(f"tile {level}/{n} of the published tree is missing from storage")
    raise ApiError("not_found", f"tile {level}/{n} has no {width} hashes yet")


async def _entry_bundle(request: web.Request, n: int, width: int) -> bytes:
    lo = n * TILE_WIDTH
    if not await request.app[READER].published_at_least(lo + width):
        raise ApiError("not_found", f"entry bundle {n} has no {width} entries yet")
    bundle = await request.app[READER].entry_bundle(n, width)
    if bundle is None:
        raise RuntimeError(f"entries {lo}..{lo + width} are missing from storage")
    return bundle


async def get_entry(request: web.Request) -> web.Response:
    index = parse_uint("index", request.match_info["index"])
    leaf = await request.app[READER].entry(index)
    if leaf is None:
        raise ApiError("not_found", f"no entry at index {index}")
    if len(leaf) <= INLINE_ENTRY:  # microseconds: a thread hop would cost more
        body = entry_item(index, leaf)
    else:
        body = await _off_loop(request, entry_item, index, leaf)
    return _json_body(body)


def _json_body(body: bytes) -> web.Response:
    # The header json_response has always sent, charset included.
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def _off_loop(request: web.Request, work: Callable[..., bytes], *args: Any) -> bytes:
    """`work(*args)` in a page thread: CPU per byte of entries never runs on the loop."""
    loop = asyncio.get_running_loop()
    result: bytes = await loop.run_in_executor(request.app[PAGE_THREADS], work, *args)
    return result


def shown(text: str) -> str:
    """A received value for an error message: quoted, at most 100 characters."""
    return repr(text[:100]) + ("..." if len(text) > 100 else "")


def plus_hint(text: str) -> str:
    """A + in a query string is a space once decoded: say so when the value has one."""
    return "; a + must be sent percent-encoded as %2B (a bare + means a space)" \
        if " " in text else ""


async def list_entries(request: web.Request) -> web.Response:
    q = query(request, {"package", "version", "after", "limit"})
    package = q.get("package")
    if package is None or not PACKAGE_NAME.fullmatch(package):
        got = "none was given" if package is None else f"got {shown(package)}"
        raise ApiError("bad_package",
                       "package is required: 1-200 characters from A-Z a-z 0-9 . _ - + / @; "
                       f"{got}{plus_hint(package or '')}")
    version = q.get("version")
    if version is not None and not VERSION_TEXT.fullmatch(version):
        raise ApiError("bad_version", "version must be 1-100 printable ASCII, no spaces; "
                       f"got {shown(version)}{plus_hint(version)}")
    after, limit = page_params(q)
    reader = request.app[READER]
    return await paged(request, lambda max_bytes: reader.by_package(
        package, version, after, limit, max_bytes), limit)


def page_params(q: dict[str, str]) -> tuple[int, int]:
    """`after` (default: before index 0) and `limit` (1..MAX_PAGE) of a paged listing."""
    after = parse_uint("after", q["after"]) if "after" in q else -1
    limit = parse_uint("limit", q.get("limit"), DEFAULT_PAGE)
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError("bad_number", f"limit must be 1..{MAX_PAGE}")
    return after, limit


async def paged(request: web.Request,
                read: Callable[[int], Awaitable[list[tuple[int, bytes]]]],
                limit: int) -> web.Response:
    """A page of entries, `read(max_bytes)` from storage and built off the loop. The largest
    page's cost is paid before waiting for a page slot (parallel requests cannot outrun the
    read quota) and the difference refunded once the size is known; a client has at most
    PAGES_PER_CLIENT pages in progress, so it cannot fill the queue for the slots."""
    client, max_bytes = client_identity(request), request.app[CONFIG].max_page_bytes
    buckets, in_progress = request.app[READ_BUCKETS], request.app[CLIENT_PAGES]
    worst = max_bytes // PAGE_COST_BYTES
    in_progress.enter(client)
    try:
        buckets.charge(client, worst)
        async with request.app[PAGE_SLOTS]:
            rows = await read(max_bytes)
            body = await _off_loop(request, build_page, rows, limit, max_bytes)
        buckets.charge(client, len(body) // PAGE_COST_BYTES - worst)
        return _json_body(body)
    finally:
        in_progress.leave(client)


async def read_json_body(request: web.Request,
                         read: Callable[[], Awaitable[bytes]] | None = None) -> bytes:
    """The raw body of a JSON request: UTF-8 application/json within the size limit, received
    within the body deadline; then the request holds a slot of the write cap (IN_FLIGHT).
    `read` reads the body (default: request.read, within the app's client_max_size)."""
    charset = (request.charset or "utf-8").lower()
    if request.content_type != "application/json" or charset not in ("utf-8", "utf8"):
        raise ApiError("unsupported_media_type",
                       "send the entry as Content-Type: application/json (UTF-8)")
    deadline = request.app[CONFIG].quotas.body_timeout
    try:
        async with asyncio.timeout(deadline):
            body = await (read or request.read)()
    except TimeoutError as exc:
        # Part of the body may still be on its way: the connection cannot carry another request.
        raise ApiError("body_timeout", f"the request body did not arrive within {deadline:g} s",
                       close=True) from exc
    except ConnectionResetError as exc:  # the client hung up mid-body: its mistake, not ours
        raise ApiError("bad_request", "the client closed the connection before the whole "
                       "body arrived", close=True) from exc
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding that does not decode
        # aiohttp drops the connection after this; say so, or clients reuse a dead socket.
        raise ApiError("bad_request", "the request body could not be read (bad "
                       "Content-Encoding or transfer encoding)", close=True) from exc
    hold_write_slot(request, len(body))
    return body


def hold_write_slot(request: web.Request, size: int) -> None:
    """Count this request against the write cap now that it has a body to process; taken
    only here, so a client stalling its body holds no slot. The middleware gives it back."""
    if HELD_BYTES not in request:
        request.app[IN_FLIGHT].enter(size)
        request[HELD_BYTES] = size


def release_write_slot(request: web.Request) -> None:
    size = request.get(HELD_BYTES)
    if size is not None:
        del request[HELD_BYTES]
        request.app[IN_FLIGHT].leave(size)


def parse_entry(body: bytes) -> LogEntry:
    try:
        return validate_log_entry(parse_json(body))
    except EntryError as exc:
        raise entry_error(exc) from exc


async def list_registry(request: web.Request) -> web.Response:
    """The registry entries (publisher/v1, keys/v1, revoke/v1) in log order, paged: what a
    client replays to know which keys were valid for which packages at an index."""
    after, limit = page_params(query(request, {"after", "limit"}))
    reader = request.app[READER]
    return await paged(request, lambda max_bytes: reader.registry_page(
        after, limit, max_bytes), limit)


async def post_entry(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    require_client_cert(request, config)
    entry = parse_entry(await read_json_body(request))
    token_id = (await authorize_submission(request, entry)
                if config.policy == "registered" else None)
    return await submit(request, entry, token_id)


async def authorize_submission(request: web.Request, entry: LogEntry) -> str:
    """In a registered log: a valid token of the entry's publisher covering its package."""
    refuse_publisher_kind(entry)
    claims = request.app[TOKENS].verify(bearer(request.headers.get("Authorization")))
    require_covered(claims, entry)
    publisher = entry.publisher
    # Only a token the log stands behind may spend its publisher's quota: a revoked one
    # would otherwise keep draining it. (The append transaction checks again: a revocation
    # may land between here and the batch.)
    await check_token_record(request, claims)
    request.app[PUBLISHER_BUCKETS].take(publisher, f"publisher {publisher!r}")
    return claims.jti


def refuse_publisher_kind(entry: LogEntry) -> None:
    if isinstance(entry, RegistryEntry) and entry.kind == PUBLISHER_KIND:
        raise ApiError("admin_only", "publisher registration goes through the admin API "
                                     "(POST /v1/admin/entries)")


def require_covered(claims: TokenClaims, entry: LogEntry) -> None:
    """The token is for the entry's publisher and its scopes cover the entry's package."""
    if claims.publisher != entry.publisher:
        raise TokenError("token_wrong_publisher", f"the token is for {claims.publisher!r}, "
                         f"the entry is {entry.publisher!r}'s")
    if isinstance(entry, Release | Lifecycle) and not claims.covers(entry.package):
        raise TokenError("token_out_of_scope",
                         f"the token does not cover package {entry.package!r}")


async def check_token_record(request: web.Request, claims: TokenClaims) -> None:
    """The token is on record, not revoked, and says what the log recorded when issuing it."""
    record = await request.app[TOKEN_LEDGER].token(claims.jti)
    if record is None:
        raise TokenError("token_unknown", "the submission token is not on record")
    if record.revoked:
        raise TokenError("token_revoked", "the submission token was revoked")
    # A token signed with the log's token key that disagrees with its record was not issued
    # by this log as it stands (a leaked token key, or a record edited since): refuse it.
    if (record.publisher != claims.publisher or tuple(record.scopes) != claims.scopes
            or int(record.expires.timestamp()) != int(claims.expires.timestamp())):
        raise TokenError("token_mismatch", "the token's claims differ from the log's record "
                                           "of it")


async def submit(request: web.Request, entry: LogEntry, token_id: str | None) -> web.Response:
    try:
        receipt = await request.app[SEQUENCER].submit(entry, token_id)
    except ConflictError as exc:
        raise ApiError("conflict", str(exc), index=exc.index) from exc
    return web.json_response(receipt_json(receipt), status=201 if receipt.created else 200)


def receipt_json(r: Receipt) -> dict[str, Any]:
    return {"index": r.index, "leaf_hash": r.leaf_hash.hex(), "tree_size": r.tree_size,
            "inclusion_proof": [h.hex() for h in r.proof], "checkpoint": r.checkpoint}


async def get_inclusion(request: web.Request) -> web.Response:
    q = query(request, {"leaf_hash", "tree_size"})
    leaf = parse_hash("leaf_hash", q.get("leaf_hash"))
    reader = request.app[READER]
    size = await _published_size(request, q.get("tree_size"))
    index = await reader.index_of(leaf)
    if index is None:
        raise ApiError("not_found", "no entry with that leaf hash")
    if index >= size and q.get("tree_size") is None:  # perhaps published a moment ago
        size = await latest_size(request, fresh=True)
    if index >= size:
        raise ApiError("not_in_tree", f"entry {index} is not in the tree of size {size}")
    hashes = await inclusion_proof(index, size, reader.tiles)
    return web.json_response({"index": index, "tree_size": size,
                              "hashes": [h.hex() for h in hashes]})


async def _published_size(request: web.Request, text: str | None) -> int:
    if text is None:
        return await latest_size(request)
    size = parse_uint("tree_size", text)
    await require_published("tree_size", size, request)
    if await request.app[READER].checkpoint_at(size) is None:
        raise ApiError("no_checkpoint", f"the log published no checkpoint of size {size}")
    return size


async def require_published(name: str, size: int, request: web.Request) -> None:
    """400 beyond_tree unless a tree of `size` is published; no query for a size at or below
    the largest already seen (a monitor asks for proofs to sizes it just fetched)."""
    if not await request.app[READER].published_at_least(size):
        latest = await latest_size(request, fresh=True)
        raise ApiError("beyond_tree", f"{name} {size} is beyond the latest size {latest}")


async def get_consistency(request: web.Request) -> web.Response:
    q = query(request, {"first", "second"})
    first, second = parse_uint("first", q.get("first")), parse_uint("second", q.get("second"))
    if first > second:
        raise ApiError("bad_range", f"first ({first}) must not exceed second ({second})")
    await require_published("second", second, request)
    hashes = await consistency_proof(first, second, request.app[READER].tiles)
    return web.json_response({"first": first, "second": second,
                              "hashes": [h.hex() for h in hashes]})


async def get_log(request: web.Request) -> web.Response:
    seq = request.app[SEQUENCER]
    return web.json_response({"origin": seq.signer.name, "vkey": request.app[VKEY],
                              "tree_size": await latest_size(request, fresh=True)})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when a write could commit now: the database answers on a pooled connection
    (as appends get one), takes writes (not read-only, not a standby in recovery), and the
    sequencer has not stopped appends. `database` and `appends` say which failed."""
    seq = request.app[SEQUENCER]
    appends = "running" if seq.failed is None else "stopped"
    try:
        health = await request.app[READER].health()
    except Exception as exc:
        raise ApiError("not_ready", f"database unreachable: {type(exc).__name__}",
                       retry_after=RETRY_AFTER, database={"reachable": False},
                       appends=appends) from exc
    state: dict[str, Any] = {"database": health.json(), "appends": appends}
    if seq.failed is not None:
        raise ApiError("not_ready", f"appends are stopped: {seq.failed}", retry_after=None,
                       **state)
    if not health.writable:
        why = "a standby in recovery" if health.in_recovery else "read-only"
        raise ApiError("not_ready", f"the database is {why}: writes cannot commit",
                       retry_after=RETRY_AFTER, **state)
    # Witness trouble is reported, never "not ready": the log still appends and serves.
    extra = request.app[WITNESS_STATUS]() if WITNESS_STATUS in request.app else {}
    return web.json_response({"status": "ready", "origin": seq.signer.name, **state, **extra})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/tile/{rest:.+}", get_tile)
    app.router.add_post("/v1/entries", post_entry)
    app.router.add_get("/v1/entries", list_entries)
    app.router.add_get("/v1/entries/{index}", get_entry)
    app.router.add_get("/v1/registry", list_registry)
    app.router.add_get("/v1/proof/inclusion", get_inclusion)
    app.router.add_get("/v1/proof/consistency", get_consistency)
    app.router.add_get("/v1/log", get_log)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


__all__ = ["UnavailableError", "add_routes"]
