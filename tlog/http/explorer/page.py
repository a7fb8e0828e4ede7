"""The page frame (site header, search form, main) and the headers of every explorer answer.

The Content-Security-Policy allows scripts and styles from this origin only, so no inline
script or style attribute runs even if one slipped into a page; the page also never lives in
a frame (clickjacking) and sends no Referer. The same headers go on the static files and on
the explorer's error pages (tlog.http.explorer's middleware).
"""

from __future__ import annotations

from enum import Enum

from aiohttp import web

from tlog.http.explorer.assets import STATIC
from tlog.http.explorer.facts import key_name
from tlog.http.explorer.markup import Safe, render, shown
from tlog.http.handlers import VKEY

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE_CACHE = "no-cache"  # pages show the latest checkpoint: always ask again


class PageKind(Enum):
    HOME = "home"
    SEARCH = "search"
    PACKAGE = "package"
    ENTRY = "entry"
    ERROR = "error"


def page(request: web.Request, kind: PageKind, title: str, main: Safe, *,
         script: bool = False, query_text: str = "", status: int = 200) -> web.Response:
    """A whole page around `main` (already markup), with `title` escaped."""
    static = request.app[STATIC]
    src = f"/static/explorer.js?v={static.version('explorer.js')}"
    tag = Safe(f'<script type="module" src="{src}"></script>') if script else Safe("")
    body = render("base.html", title=title, css_version=static.version("explorer.css"),
                  script=tag, origin=shown(key_name(request.app[VKEY])), query=query_text,
                  main=main)
    resp = web.Response(text=body, content_type="text/html", charset="utf-8", status=status,
                        headers={"Cache-Control": PAGE_CACHE})
    resp.headers["X-Tlog-Page"] = kind.value
    return resp
