"""POST /v1/entries/batch: up to MAX_ENTRIES entries in one request, one result each.

Each entry goes through what POST /v1/entries does (strict JSON, validation with its
signature, in a registered log the token's coverage and the registry in its batch), and
gets the receipt that route answers (plus "status": 201 new, 200 already logged) or that
route's error (plus its "status"); an invalid entry does not fail the others. What concerns
the whole request fails it whole, before anything is queued: a body that is not JSON or not
{"entries": [...]}, too many entries, a missing or invalid token, an exhausted quota, a full
queue. The valid entries go to the sequencer as one group (Sequencer.submit_many), never
split between batches: they share one checkpoint unless other submissions fill the batch.
A failed append answers 503 for the whole request: the reply comes only after the batch
holding every entry has committed, so nothing is acknowledged that is not durable, and a
retry finds the entries of a committed batch (200).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tlog.http.access import client_identity, require_client_cert
from tlog.http.errors import STATUS, ApiError, entry_error
from tlog.http.handlers import (
    CLIENT_BUCKETS,
    CONFIG,
    PUBLISHER_BUCKETS,
    SEQUENCER,
    TOKENS,
    check_token_record,
    read_json_body,
    receipt_json,
    refuse_publisher_kind,
    require_covered,
)
from tlog.http.tokens import bearer
from tlog.log.sequencer import ConflictError, Receipt, RefusedError
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import LogEntry, validate_log_entry
from verifier.protocol.entries.strict_json import MAX_DEPTH, parse_json

MAX_ENTRIES = 1000
# A body may hold MAX_ENTRIES entries of the single route's largest body, but not more than
# this: what it holds while processed (the body, the parsed entries: about 3x) stays
# bounded, and it counts whole against the in-flight bytes of every write (access.InFlight).
MAX_BODY_CAP = 16 * 1024 * 1024

Result = LogEntry | ApiError  # an entry still going, or its refusal


def max_batch_body(request: web.Request) -> int:
    config = request.app[CONFIG]
    return min(MAX_ENTRIES * config.max_body, MAX_BODY_CAP, config.quotas.max_in_flight_bytes)


async def read_capped(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`: from its
    Content-Length before reading any of it, else once the bytes read pass it."""
    too_large = ApiError("body_too_large", f"a batch body is at most {limit} bytes",
                         close=True)  # the rest of the body is not read: no reuse
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, size = [], 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_batch(body: bytes) -> list[Result]:
    """The entries of a batch body, each validated (signature included) or refused.
    CPU-bound: runs in a thread."""
    try:
        # Two more levels for {"entries": [...]}; each entry is held to MAX_DEPTH by its
        # validation (require_tree), as on the single route.
        doc = parse_json(body, MAX_DEPTH + 2)
    except EntryError as exc:
        raise entry_error(exc) from exc
    if not isinstance(doc, dict) or set(doc) != {"entries"} \
            or not isinstance(doc["entries"], list):
        raise ApiError("invalid_batch", 'the body must be {"entries": [entry, ...]}')
    items: list[Any] = doc["entries"]
    if not 1 <= len(items) <= MAX_ENTRIES:
        if items:
            raise ApiError("too_many_entries", f"a batch holds at most {MAX_ENTRIES} entries, "
                           f"this one {len(items)}")
        raise ApiError("invalid_batch", "the batch holds no entries")
    return [_validated(item) for item in items]


def _validated(item: Any) -> Result:
    try:
        return validate_log_entry(item)
    except EntryError as exc:
        return entry_error(exc)


async def post_batch(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    require_client_cert(request, config)
    body = await read_json_body(request, lambda: read_capped(request, max_batch_body(request)))
    results = await asyncio.to_thread(parse_batch, body)
    if len(results) > 1:  # every entry costs the client one submission (the middleware
        request.app[CLIENT_BUCKETS].take(  # took the first)
            client_identity(request), "this client", n=len(results) - 1)
    token_id = (await _authorize(request, results) if config.policy == "registered" else None)
    going = [(i, r) for i, r in enumerate(results) if not isinstance(r, ApiError)]
    outcome = await request.app[SEQUENCER].submit_many([(e, token_id) for _, e in going])
    answers: list[object] = list(results)  # each LogEntry is replaced by its outcome
    for (i, _), result in zip(going, outcome, strict=True):
        answers[i] = result
    # A megabyte or two of JSON for 1,000 receipts: built in a thread, the sequencer's
    # coroutines share the event loop.
    body = await asyncio.to_thread(_results_body, answers)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _results_body(answers: list[object]) -> bytes:
    return json.dumps({"results": [_answer(a) for a in answers]}).encode()


async def _authorize(request: web.Request, results: list[Result]) -> str | None:
    """A registered log: one token for the whole request; an entry it does not cover is
    refused alone (403). Its publisher's quota pays one per entry sent on."""
    for i, r in enumerate(results):
        if not isinstance(r, ApiError):
            try:
                refuse_publisher_kind(r)
            except ApiError as exc:
                results[i] = exc
    if all(isinstance(r, ApiError) for r in results):
        return None  # nothing to submit: no token needed
    claims = request.app[TOKENS].verify(bearer(request.headers.get("Authorization")))
    # Only a token the log stands behind may spend its publisher's quota (handlers).
    await check_token_record(request, claims)
    for i, r in enumerate(results):
        if not isinstance(r, ApiError):
            try:
                require_covered(claims, r)
            except ApiError as exc:
                results[i] = exc
    covered = sum(not isinstance(r, ApiError) for r in results)
    if covered:
        request.app[PUBLISHER_BUCKETS].take(claims.publisher, f"publisher {claims.publisher!r}",
                                            n=covered)
    return claims.jti


def _answer(a: object) -> dict[str, Any]:
    """One entry's result: its receipt or its error, with the status POST /v1/entries
    would have answered it with."""
    if isinstance(a, Receipt):
        return {**receipt_json(a), "status": 201 if a.created else 200}
    if isinstance(a, ConflictError):
        a = ApiError("conflict", str(a), index=a.index)
    elif isinstance(a, RefusedError):
        if a.code not in STATUS:  # a refusal the table does not know is a bug: a 500
            raise a
        a = ApiError(a.code, str(a))
    if not isinstance(a, ApiError):
        raise TypeError(f"no answer for {type(a).__name__}")
    return {"error": {"code": a.code, "message": a.message, **a.extra}, "status": a.status}


def add_batch_routes(app: web.Application) -> None:
    app.router.add_post("/v1/entries/batch", post_batch)
