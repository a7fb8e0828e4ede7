"""The web explorer served by `tlog serve` at / : server-rendered pages over the log's reads,
and a small script (static/explorer.js) that checks an entry in the browser.

Pages: / (latest checkpoint, recent releases), /search?q= (package names by prefix),
/package/<name> (releases, lifecycle, plot), /entry/<index> (the entry, its proof, and the
in-browser check). They read through the app's LogReader like the API, pass the same
per-client read quota (the app's middleware takes one read per request, and pages that read
many bytes pay by size), and every read is bounded (tlog.http.explorer.views).

Errors: the app's middleware answers every error as JSON; for explorer paths the
middleware here, outside it, turns that answer into an HTML page with the same status,
code and headers (Retry-After, X-Request-Id), so the API's error handling and metrics are
the same for both. Every explorer answer carries the security headers of page.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from tlog.http.explorer import views
from tlog.http.explorer.assets import STATIC, StaticFiles
from tlog.http.explorer.markup import render
from tlog.http.explorer.page import SECURITY_HEADERS, PageKind, page

__all__ = ["add_explorer_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PREFIXES = ("/package/", "/entry/", "/static/")
_TITLES = {400: "Bad request", 404: "Not found", 405: "Method not allowed",
           429: "Too many requests", 500: "Internal error", 503: "Unavailable"}
_KEPT_HEADERS = ("Retry-After", "X-Request-Id", "Allow")


def is_explorer_path(path: str) -> bool:
    return path in ("/", "/search") or path.startswith(_PREFIXES)


def _html_error(request: web.Request, resp: web.Response) -> web.Response:
    """The HTML page of a JSON error answer (the API's error body)."""
    try:
        error = json.loads(resp.body if isinstance(resp.body, bytes) else b"")["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "error", "the request failed"
    title = _TITLES.get(resp.status, f"Error {resp.status}")
    html = page(request, PageKind.ERROR, title,
                render("error.html", title=title, status=resp.status, code=code,
                       message=message), status=resp.status)
    for name in _KEPT_HEADERS:
        if name in resp.headers:
            html.headers[name] = resp.headers[name]
    if not resp.keep_alive:
        html.force_close()
    return html


@web.middleware
async def explorer_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if not is_explorer_path(request.path):
        return resp
    if resp.status >= 400 and isinstance(resp, web.Response) \
            and resp.content_type == "application/json":
        resp = _html_error(request, resp)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def add_explorer_routes(app: web.Application) -> None:
    """The explorer's routes, and its middleware outside the app's error middleware."""
    app[STATIC] = StaticFiles()
    app.middlewares.insert(0, explorer_answers)
    app.router.add_get("/", views.home)
    app.router.add_get("/search", views.search)
    app.router.add_get("/package/{name:.+}", views.package)
    app.router.add_get("/entry/{index}", views.entry)
    app.router.add_get("/static/{name}", app[STATIC].serve)
