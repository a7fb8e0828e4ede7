"""The checkpoint reads: /checkpoint, /v1/checkpoints/<size>, /v1/checkpoints/cosigned.

Without a witness policy /checkpoint is the latest integrated checkpoint (log-signed after
each append batch). With one, it is the latest checkpoint the policy's quorum cosigned
(tlog.log.witness publishes it): the log's note followed by the cosignature lines, sorted
by witness key name. Receipts of POST /v1/entries stay against the integrated checkpoint.
"""

from __future__ import annotations

from aiohttp import web

from tlog.http.errors import ApiError
from tlog.http.handlers import (
    CHECKPOINT_CACHE,
    CONFIG,
    IMMUTABLE,
    READER,
    parse_uint,
    query,
)


def _witnessed(request: web.Request) -> bool:
    return request.app[CONFIG].witness_policy is not None


async def get_checkpoint(request: web.Request) -> web.Response:
    """The latest checkpoint; with a witness policy, the latest its quorum cosigned (the
    log's note and the cosignature lines), which trails the integrated one by a round."""
    reader = request.app[READER]
    if _witnessed(request):
        latest = await reader.latest_published()
        if latest is None:
            raise ApiError("not_ready", "no checkpoint has been cosigned by the witness "
                           "quorum yet", retry_after=request.app[CONFIG].witness_interval)
        return _note_response(latest.note, CHECKPOINT_CACHE)
    latest = await reader.latest_checkpoint()
    if latest is None:
        raise ApiError("not_ready", "the log has not published a checkpoint yet")
    return _note_response(latest.note, CHECKPOINT_CACHE)


def _note_response(note: str, cache: str) -> web.Response:
    return web.Response(body=note.encode(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": cache})


async def get_checkpoint_at(request: web.Request) -> web.Response:
    """The checkpoint of `size`; with a witness policy, followed by every cosignature
    stored for it (more may come: then it is not immutable)."""
    size = parse_uint("size", request.match_info["size"])
    reader = request.app[READER]
    stored = await reader.checkpoint_at(size)
    if stored is None:
        raise ApiError("not_found", f"the log published no checkpoint of size {size}")
    if not _witnessed(request):
        return _note_response(stored.note, IMMUTABLE)
    lines = await reader.cosignature_lines(size)
    return _note_response(stored.note + "".join(lines), CHECKPOINT_CACHE)


async def get_cosigned(request: web.Request) -> web.Response:
    """The smallest quorum-cosigned checkpoint holding entry `covering`: what a publisher
    polls after its receipt, to staple a witnessed checkpoint to its release."""
    index = parse_uint("covering", query(request, {"covering"}).get("covering"))
    if not _witnessed(request):
        raise ApiError("no_witness_policy", "this log runs without a witness policy: its "
                       "checkpoints are not cosigned")
    found = await request.app[READER].published_covering(index)
    if found is None:
        raise ApiError("not_found", f"no checkpoint holding entry {index} has been cosigned "
                       "by the witness quorum yet")
    return _note_response(found.note, IMMUTABLE)


def add_checkpoint_routes(app: web.Application) -> None:
    app.router.add_get("/checkpoint", get_checkpoint)
    app.router.add_get("/v1/checkpoints/cosigned", get_cosigned)  # before {size}
    app.router.add_get("/v1/checkpoints/{size}", get_checkpoint_at)
