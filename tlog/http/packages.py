"""GET /v1/package-state: a package's state and its proof against a checkpoint.

The answer is what a client needs beside the checkpoint it trusts (tlog-verify release):
the state the tree of `size` commits to in its last leaf, a map-root/v1 entry
(verifier.protocol.package_state), and the map proof of it. The leaf itself, and the
lifecycle statements the state names, the client reads from entry bundles and checks by hash.
"""

from __future__ import annotations

from aiohttp import web

from tlog.http.errors import ApiError
from tlog.http.handlers import (
    IMMUTABLE,
    READER,
    latest_size,
    parse_uint,
    plus_hint,
    query,
    require_published,
    shown,
)
from verifier.protocol.entries.release import PACKAGE_NAME
from verifier.protocol.note import b64encode


async def get_package_state(request: web.Request) -> web.Response:
    q = query(request, {"package", "size"})
    package = q.get("package")
    if package is None or not PACKAGE_NAME.fullmatch(package):
        got = "none was given" if package is None else f"got {shown(package)}"
        raise ApiError("bad_package",
                       "package is required: 1-200 characters from A-Z a-z 0-9 . _ - + / @; "
                       f"{got}{plus_hint(package or '')}")
    given = q.get("size")
    size = parse_uint("size", given) if given is not None else await latest_size(request)
    await require_published("size", size, request)
    found = await request.app[READER].package_state(package, size)
    if found is None:
        raise ApiError("no_package_state",
                       f"the tree of size {size} does not end with a map root: ask at the size "
                       "of a checkpoint the log published after its package state map existed")
    state, proof, root = found
    body = {"package": package, "size": size, "map_root": root.hex(), "state": state,
            "proof": b64encode(proof)}
    # The state at a given size never changes; "the latest" does.
    cache = IMMUTABLE if given is not None else "no-cache"
    return web.json_response(body, headers={"Cache-Control": cache})


def add_package_routes(app: web.Application) -> None:
    app.router.add_get("/v1/package-state", get_package_state)
