"""The explorer's static files (static/*), read once from the package and served from memory.

A page names each file with its version (?v=, from the file's hash), so a browser may keep
the file for a year: a new release of tlog changes the version, hence the URL. A request
without the current version gets a short cache life instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

from tlog.http.errors import ApiError
from verifier.protocol.merkle import leaf_hash

TYPES = {"protocol.js": "text/javascript", "statemap.js": "text/javascript",
         "explorer.js": "text/javascript", "explorer.css": "text/css"}
# A module's imports of the others name their version too (files are read in TYPES' order,
# each importing only earlier ones, so the version is known when the importer is read).
LONG_CACHE = "public, max-age=31536000, immutable"
SHORT_CACHE = "public, max-age=300"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str


class StaticFiles:
    def __init__(self) -> None:
        root = files("tlog.http.explorer") / "static"
        self.files: dict[str, StaticFile] = {}
        for name, content_type in TYPES.items():
            body = (root / name).read_bytes()
            for module in self.files:
                versioned = f'from "./{module}?v={self.version(module)}"'
                body = body.replace(f'from "./{module}"'.encode(), versioned.encode())
            # A content hash (the Merkle leaf hash: tlog takes its hashing from verifier).
            self.files[name] = StaticFile(body, content_type, leaf_hash(body).hex()[:16])

    def version(self, name: str) -> str:
        return self.files[name].version

    async def serve(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise ApiError("not_found", f"no static file {request.match_info['name'][:100]!r}")
        cache = LONG_CACHE if request.query.get("v") == found.version else SHORT_CACHE
        return web.Response(body=found.body, content_type=found.content_type,
                            charset="utf-8", headers={"Cache-Control": cache})


STATIC: web.AppKey[StaticFiles] = web.AppKey("explorer_static", StaticFiles)
