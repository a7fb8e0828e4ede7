"""The checkpoint reads: /checkpoint, /v1/checkpoints/<size>, /v1/checkpoints/cosigned.

Without a witness policy /checkpoint is the latest integrated checkpoint (log-signed after
each append batch). With one, it is the latest checkpoint the policy's quorum cosigned
(tlog.log.witness publishes it): the log's note followed by the cosignature lines, sorted
by witness key name. Receipts of POST /v1/entries stay against the integrated checkpoint.

Which note each read serves, with a policy (rows are per policy: a note published under
another policy, e.g. before the operator required more witnesses, is never served):
- /checkpoint: the largest published size, with the FRESHEST note published for it. An
  idle log keeps its witnesses cosigning that size again (--witness-refresh), so its
  witnessed time keeps up and clients' --max-age holds.
- /v1/checkpoints/cosigned?covering=: the smallest published size holding the entry, with
  the FIRST note published for it: a publisher's cooldown (--min-age) counts from the
  earliest time the quorum cosigned, and a fresher note would restart it.
- /v1/checkpoints/<size>: the log's note with every cosignature stored for the size (the
  latest one of each witness), whatever the quorum.
"""

from __future__ import annotations

from aiohttp import web

from tlog.config import quorum_rule
from tlog.http.errors import ApiError
from tlog.http.handlers import (
    CHECKPOINT_CACHE,
    CONFIG,
    IMMUTABLE,
    READER,
    SHORT_CACHE,
    parse_uint,
    query,
)
from tlog.http.outage import LAST_CHECKPOINT, OUTAGE
from tlog.http.recent import RECENT
from tlog.store.outage import database_unavailable
from tlog.store.reader import StoredCheckpoint


def _witnessed(request: web.Request) -> bool:
    return request.app[CONFIG].witness_policy is not None


# The database's name of the current policy's quorum rule: made once, as the policy does not
# change while the app runs (the witness task makes the same one).
RULE: web.AppKey[str] = web.AppKey("witness_rule", str)


def _rule(request: web.Request) -> str:
    return request.app[RULE]


async def get_checkpoint(request: web.Request) -> web.Response:
    """The latest checkpoint; with a witness policy, the latest its quorum cosigned (the
    log's note and the cosignature lines, the freshest ones published), which trails the
    integrated one by a round. Only notes published under the current policy count, so
    after a policy change this is 503 until the log publishes under it.

    While the database is away: the last checkpoint this server read and served (a
    checkpoint the log did publish, perhaps not the latest), else 503
    database_unavailable."""
    last = request.app[LAST_CHECKPOINT]
    try:
        latest = await _latest(request)
    except Exception as exc:
        if not database_unavailable(exc) or last.checkpoint is None:
            raise
        request.app[OUTAGE].failed(request, exc)
        return _note_response(last.checkpoint.note, CHECKPOINT_CACHE)
    last.seen(latest)
    return _note_response(latest.note, CHECKPOINT_CACHE)


async def served_checkpoint(request: web.Request) -> StoredCheckpoint | None:
    """What GET /checkpoint serves (None: nothing yet): with a witness policy the latest
    checkpoint its quorum cosigned, else the latest one. The explorer shows the same."""
    if _witnessed(request):
        return await request.app[READER].latest_published(_rule(request))
    return await request.app[RECENT].get()


async def _latest(request: web.Request) -> StoredCheckpoint:
    latest = await served_checkpoint(request)
    if latest is None and _witnessed(request):
        raise ApiError("not_ready", "no checkpoint has been cosigned by the witness "
                       "quorum yet", retry_after=request.app[CONFIG].witness_interval)
    if latest is None:
        raise ApiError("not_ready", "the log has not published a checkpoint yet")
    return latest


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
    """The smallest quorum-cosigned checkpoint holding entry `covering`, with the first
    note published for it: what a publisher polls after its receipt, to staple a
    witnessed checkpoint to its release.

    Not immutable: two processes of the log may publish out of order (one publishes size
    5 while the other's size 3 is still on its way), so a smaller checkpoint covering the
    entry may appear later, and a policy change starts publication anew. A short cache
    life lets every cache see it soon."""
    index = parse_uint("covering", query(request, {"covering"}).get("covering"))
    if not _witnessed(request):
        raise ApiError("no_witness_policy", "this log runs without a witness policy: its "
                       "checkpoints are not cosigned")
    found = await request.app[READER].published_covering(_rule(request), index)
    if found is None:
        raise ApiError("not_found", f"no checkpoint holding entry {index} has been cosigned "
                       "by the witness quorum yet")
    return _note_response(found.note, SHORT_CACHE)


def add_checkpoint_routes(app: web.Application) -> None:
    policy = app[CONFIG].witness_policy
    if policy is not None:
        app[RULE] = quorum_rule(policy)
    app.router.add_get("/checkpoint", get_checkpoint)
    app.router.add_get("/v1/checkpoints/cosigned", get_cosigned)  # before {size}
    app.router.add_get("/v1/checkpoints/{size}", get_checkpoint_at)
