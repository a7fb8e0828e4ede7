"""A C2SP tlog-tiles log in memory that misbehaves on demand, for the attack tests.

`serve_evil_log(signer, workdir)` runs it on 127.0.0.1 in a background thread with its own
event loop and yields an `EvilLog`: the base URL, the path of the log's verifier key file,
and the switches that make it lie about the tree (forks, rollbacks, tiles and entry bundles
that do not match the root, checkpoints signed by another key or not at all, search answers
pointing elsewhere) or abuse the transport (huge, endless or hanging responses, server
errors, bytes that are not HTTP). It is honest until a switch is thrown.

It serves what `tlog-verify` reads: `GET /checkpoint`, `/tile/<L>/<N>[.p/<W>]`,
`/tile/entries/<N>[.p/<W>]`, the JSON search `/v1/entries?package=&version=&after=&limit=`
and `/v1/package-state?package=&size=`. Like tlog, every append ends with a map-root/v1 leaf
committing to each package's state (verifier.protocol.package_state), so the package state
it serves is honestly proven unless a test swaps the answer.
A request whose path starts with a view name (`/<view>/checkpoint`) is answered from that
view's tree instead: that is how one client is shown a fork the others never see.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.attacks.state_log import package_state_answer, state_map
from tests.audit_support import honest_map_root
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.merkle import combine, inclusion_nodes, leaf_hash
from verifier.protocol.note import Signer
from verifier.protocol.package_state import map_root_entry
from verifier.protocol.receipt import make_receipt
from verifier.protocol.tiles import (
    ENTRIES_LEVEL,
    TILE_WIDTH,
    TileKey,
    TreeBuilder,
    encode_bundle,
    nodes_from_tiles,
    parse_tile_path,
    tile_width,
)

HUGE_BYTES = 200 * 1000 * 1000
CHUNK = bytes(64 * 1024)
TRICKLE_INTERVAL = 0.02
POLL_INTERVAL = 0.02
MAX_PAGE = 1000

CHECKPOINT, TILE, ENTRIES, SEARCH = "checkpoint", "tile", "entries", "search"
PACKAGE_STATE = "package-state"
RESOURCES = (CHECKPOINT, TILE, ENTRIES, SEARCH, PACKAGE_STATE)


class Abuse(enum.Enum):
    """Ways to answer a request that break the transport rather than the protocol."""

    HUGE_DECLARED = "a Content-Length of 200 MB, then the bytes"
    HUGE_STREAMED = "200 MB chunked, with no Content-Length"
    ENDLESS = "a 200 header, then one body byte every 20 ms, forever"
    ENDLESS_HEADERS = "a status line, then header bytes one at a time, forever"
    HANG = "nothing at all, the connection kept open"
    SERVER_ERROR = "500 Internal Server Error"
    GARBAGE = "bytes that are not HTTP, then the connection closed"
    CUT_MID_CHUNK = "a chunked body whose connection closes in the middle of a chunk"


class Tree:
    """An append-only tree in memory: its leaves, its tiles and its checkpoint at each size."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.leaves: list[bytes] = []
        self.tiles: dict[TileKey, bytes] = {}
        self._builder = TreeBuilder()
        self.notes: dict[int, str] = {0: self._sign()}
        # Like tlog, end every append with a map-root/v1 leaf. Off for the audit and monitor
        # tests until those read map-root leaves (they take them for invalid entries).
        self.map_roots = True

    @property
    def size(self) -> int:
        return len(self.leaves)

    @property
    def root(self) -> bytes:
        return self._builder.root()

    @property
    def note(self) -> str:
        """The signed checkpoint of the current size."""
        return self.notes[self.size]

    def _sign(self) -> str:
        cp = Checkpoint(self.signer.name, self._builder.size, self._builder.root())
        return sign_checkpoint(cp, self.signer)

    def append(self, *entries: Mapping[str, Any]) -> list[int]:
        """Log release entries (validated, as their JCS leaves); return their indices."""
        return self.append_leaves([validate_entry(dict(e)).leaf for e in entries])

    def append_leaves(self, leaves: Sequence[bytes], *, map_root: bool = True) -> list[int]:
        """Log raw leaves and (as tlog ends each batch) a map-root leaf, then sign one
        checkpoint for the new size; return the indices of `leaves`."""
        first = self.size
        for leaf in leaves:
            self._append(bytes(leaf))
        indices = list(range(first, self.size))
        if map_root and self.map_roots:
            smap, _ = state_map(self.leaves)
            self._append(map_root_entry(self.size, smap.root()))
        self.tiles.update(self._builder.take_changed())
        self.notes[self.size] = self._sign()
        return indices

    def _append(self, leaf: bytes) -> None:
        self.leaves.append(leaf)
        self._builder.append(leaf_hash(leaf))

    def append_map_root(self, root: bytes | None = None) -> int:
        """End a batch as the log does: a map-root/v1 leaf over every leaf so far, committing
        to the honest map root unless `root` (a lie) is given; return its index."""
        leaf = map_root_entry(self.size, honest_map_root(self.leaves) if root is None else root)
        [index] = self.append_leaves([leaf], map_root=False)
        return index

    def fork(self, keep: int) -> Tree:
        """A tree signed with the same key that shares only the first `keep` leaves."""
        forked = Tree(self.signer)
        forked.map_roots = self.map_roots
        forked.append_leaves(self.leaves[:keep], map_root=False)
        return forked

    def package_state(self, package: str, size: int) -> dict[str, Any] | None:
        """The /v1/package-state answer at `size`, honestly proven; None if the tree of
        that size does not end with a map root."""
        return package_state_answer(self.leaves, package, size)

    def hash_tile(self, level: int, n: int, width: int) -> bytes | None:
        data = self.tiles.get((level, n))
        if data is None or len(data) < 32 * width:
            return None
        return data[:32 * width]

    def bundle(self, n: int, width: int) -> list[bytes] | None:
        if tile_width(ENTRIES_LEVEL, n, self.size) < width:
            return None
        return self.leaves[n * TILE_WIDTH:n * TILE_WIDTH + width]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        groups = inclusion_nodes(index, size)
        nodes = [node for group in groups for node in group]
        return combine(groups, nodes_from_tiles(nodes, self.tiles))

    def receipt(self, index: int, size: int | None = None) -> dict[str, Any]:
        """The receipt `tlog publish` would write for entry `index`, against checkpoint `size`."""
        size = self.size if size is None else size
        return make_receipt(json.loads(self.leaves[index]), index,
                            self.inclusion_proof(index, size), self.notes[size])

    def search(self, package: str, version: str | None, after: int,
               limit: int) -> dict[str, Any]:
        """The tlog JSON search answer, honestly computed over this tree."""
        found: list[dict[str, Any]] = []
        for index in range(max(after + 1, 0), self.size):
            leaf = self.leaves[index]
            entry = json.loads(leaf)
            if entry.get("package") != package:
                continue
            if version is not None and entry.get("version") != version:
                continue
            found.append({"index": index, "leaf_hash": leaf_hash(leaf).hex(), "entry": entry})
            if len(found) == limit:
                break
        return {"entries": found,
                "next_after": found[-1]["index"] if len(found) == limit else None}


class EvilLog:
    """The control object of a served log: an honest tree plus the switches to misbehave.

    Every switch is read when a request arrives, so a test throws it between two runs of a
    client. `requests` records each path served, in order.
    """

    def __init__(self, signer: Signer, vkey_path: Path) -> None:
        self.signer = signer
        self.vkey_path = vkey_path
        vkey_path.write_text(signer.verifier().text() + "\n", encoding="utf-8")
        self.tree = Tree(signer)
        self.views: dict[str, Tree] = {}
        self.url = ""
        self.requests: list[str] = []
        self.abuse: dict[str, Abuse] = {}
        self.bodies: dict[str, bytes] = {}
        self.failures_left = 0
        self.checkpoint_note: str | None = None
        self.tile_corruptions: dict[TileKey, int] = {}
        self.entry_swaps: dict[int, bytes] = {}
        self.bundle_cut = 0
        self.search_hints: list[Any] | None = None
        self.stopping = threading.Event()

    # -- honest operation --------------------------------------------------------------------

    def append(self, *entries: Mapping[str, Any]) -> list[int]:
        return self.tree.append(*entries)

    def url_for(self, view: str) -> str:
        return f"{self.url}/{view}"

    # -- lies about the tree -----------------------------------------------------------------

    def fork_for(self, view: str, keep: int) -> Tree:
        """Show requests under /<view>/ a tree sharing only the first `keep` leaves."""
        forked = self.tree.fork(keep)
        self.views[view] = forked
        return forked

    def roll_back(self, size: int) -> None:
        """Serve the log's own, validly signed, older checkpoint of `size`."""
        self.checkpoint_note = self.tree.notes[size]

    def sign_checkpoints_with(self, other: Signer) -> None:
        """Serve the current checkpoint signed by `other` instead of the log's key."""
        cp = Checkpoint(other.name, self.tree.size, self.tree.root)
        self.checkpoint_note = sign_checkpoint(cp, other)

    def strip_checkpoint_signature(self) -> None:
        """Serve the current checkpoint's body and blank line, without a signature line."""
        note = self.tree.note
        self.checkpoint_note = note[:note.index("\n\n") + 2]

    def corrupt_tile(self, level: int, n: int, offset: int) -> None:
        """Flip the lowest bit of byte `offset` of hash tile (level, n), whatever its width."""
        self.tile_corruptions[(level, n)] = offset

    def swap_entry(self, index: int, leaf: bytes) -> None:
        """Serve `leaf` at `index` in entry bundles; tiles and checkpoints stay honest."""
        self.entry_swaps[index] = leaf

    def cut_bundles(self, count: int) -> None:
        """Serve entry bundles `count` bytes short (negative: with extra bytes at the end)."""
        self.bundle_cut = count

    def point_search_at(self, hints: Sequence[Any]) -> None:
        """Answer every search with these `index` values, whatever was asked."""
        self.search_hints = list(hints)

    def heal(self) -> None:
        """Become honest again: every lie and every abuse is switched off."""
        self.views.clear()
        self.abuse.clear()
        self.bodies.clear()
        self.failures_left = 0
        self.checkpoint_note = None
        self.tile_corruptions.clear()
        self.entry_swaps.clear()
        self.bundle_cut = 0
        self.search_hints = None

    # -- abuse of the transport --------------------------------------------------------------

    def misbehave(self, resource: str, abuse: Abuse) -> None:
        """Answer every request for `resource` (CHECKPOINT, TILE, ENTRIES, SEARCH) by `abuse`."""
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")
        self.abuse[resource] = abuse

    def serve_body(self, resource: str, body: bytes) -> None:
        """Answer requests for `resource` with these bytes and status 200."""
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")
        self.bodies[resource] = body

    def fail_next(self, count: int) -> None:
        """Answer the next `count` requests, of any kind, with 500."""
        self.failures_left = count

    def count(self, resource: str) -> int:
        """How many requests for `resource` were served so far."""
        return sum(1 for path in self.requests if _resource(_strip_view(path, self.views)[1])
                   == resource)

    # -- the HTTP side -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        view, rest = _strip_view(request.path, self.views)
        resource = _resource(rest)
        if resource is None:
            return web.Response(status=404, text="not found\n")
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=500, text="try again later\n")
        abuse = self.abuse.get(resource)
        if abuse is not None:
            return await self._abuse(request, abuse)
        body = self.bodies.get(resource)
        if body is not None:
            return web.Response(body=body)
        tree = self.views.get(view, self.tree)
        if resource == CHECKPOINT:
            note = self.checkpoint_note if view == "" and self.checkpoint_note else tree.note
            return web.Response(text=note, content_type="text/plain", charset="utf-8")
        if resource == SEARCH:
            return web.json_response(self._search(request, tree))
        if resource == PACKAGE_STATE:
            q = request.query
            answer = tree.package_state(q.get("package", ""), int(q.get("size", tree.size)))
            if answer is None:
                return web.json_response({"error": {"code": "no_package_state"}}, status=404)
            return web.json_response(answer)
        return self._tile(rest, tree)

    def _search(self, request: web.Request, tree: Tree) -> dict[str, Any]:
        if self.search_hints is not None:
            return {"entries": [{"index": i, "leaf_hash": "", "entry": {}}
                                for i in self.search_hints], "next_after": None}
        q = request.query
        after = int(q.get("after", "-1"))
        limit = min(int(q.get("limit", "100")), MAX_PAGE)
        return tree.search(q.get("package", ""), q.get("version"), after, limit)

    def _tile(self, path: str, tree: Tree) -> web.Response:
        try:
            level, n, width = parse_tile_path(path)
        except ValueError:
            return web.Response(status=404, text="not a tile path\n")
        if level == ENTRIES_LEVEL:
            body = self._bundle(tree, n, width)
        else:
            body = self._hash_tile(tree, level, n, width)
        if body is None:
            return web.Response(status=404, text="no such tile yet\n")
        return web.Response(body=body, content_type="application/octet-stream")

    def _hash_tile(self, tree: Tree, level: int, n: int, width: int) -> bytes | None:
        data = tree.hash_tile(level, n, width)
        offset = self.tile_corruptions.get((level, n))
        if data is None or offset is None or offset >= len(data):
            return data
        corrupted = bytearray(data)
        corrupted[offset] ^= 0x01
        return bytes(corrupted)

    def _bundle(self, tree: Tree, n: int, width: int) -> bytes | None:
        leaves = tree.bundle(n, width)
        if leaves is None:
            return None
        first = n * TILE_WIDTH
        served = [self.entry_swaps.get(first + i, leaf) for i, leaf in enumerate(leaves)]
        body = encode_bundle(served)
        if self.bundle_cut > 0:
            return body[:-self.bundle_cut]
        return body + bytes(-self.bundle_cut)

    async def _abuse(self, request: web.Request, abuse: Abuse) -> web.StreamResponse:
        if abuse is Abuse.SERVER_ERROR:
            return web.Response(status=500, text="internal server error\n")
        if abuse is Abuse.HANG:
            await self._until_gone(request)
            return web.Response()
        if abuse in (Abuse.GARBAGE, Abuse.ENDLESS_HEADERS):
            await self._raw(request, abuse)
            return web.Response()
        response = web.StreamResponse()
        if abuse is Abuse.HUGE_DECLARED:
            response.content_length = HUGE_BYTES
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await self._stream(request, response, abuse)
        return response

    async def _stream(self, request: web.Request, response: web.StreamResponse,
                      abuse: Abuse) -> None:
        if abuse is Abuse.CUT_MID_CHUNK:
            await response.write(b"the first half of a body")
            if request.transport is not None:
                request.transport.close()
            return
        if abuse is Abuse.ENDLESS:
            while not self._gone(request):
                await response.write(b"x")
                await asyncio.sleep(TRICKLE_INTERVAL)
            return
        sent = 0
        while sent < HUGE_BYTES and not self._gone(request):
            await response.write(CHUNK)
            sent += len(CHUNK)

    async def _raw(self, request: web.Request, abuse: Abuse) -> None:
        transport = request.transport
        if transport is None:
            return
        if abuse is Abuse.GARBAGE:
            transport.write(b"SURPRISE! this is not HTTP\r\n\r\n")
            transport.close()
            return
        transport.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not self._gone(request):
            transport.write(b"a")
            await asyncio.sleep(TRICKLE_INTERVAL)
        transport.close()

    def _gone(self, request: web.Request) -> bool:
        transport = request.transport
        return self.stopping.is_set() or transport is None or transport.is_closing()

    async def _until_gone(self, request: web.Request) -> None:
        while not self._gone(request):
            await asyncio.sleep(POLL_INTERVAL)


def _strip_view(path: str, views: Mapping[str, Tree]) -> tuple[str, str]:
    """(view name or "", the rest of the path without its leading slash)."""
    rest = path.lstrip("/")
    head, _, tail = rest.partition("/")
    if head in views:
        return head, tail
    return "", rest


def _resource(path: str) -> str | None:
    path = path.partition("?")[0]
    if path == "checkpoint":
        return CHECKPOINT
    if path == "v1/entries":
        return SEARCH
    if path == "v1/package-state":
        return PACKAGE_STATE
    if path.startswith("tile/entries/"):
        return ENTRIES
    if path.startswith("tile/"):
        return TILE
    return None


class _ServerThread:
    """An aiohttp app on 127.0.0.1 (a free port), run by an event loop in its own thread."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="evil-log",
                                        daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> str:
        self._runner = web.AppRunner(self._app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextmanager
def serve_evil_log(signer: Signer, workdir: Path) -> Iterator[EvilLog]:
    """Serve an (honest, empty) EvilLog signed by `signer`; its vkey goes in workdir/log.vkey."""
    log = EvilLog(signer, workdir / "log.vkey")
    server = _ServerThread(log.app())
    log.url = server.start()
    try:
        yield log
    finally:
        log.stopping.set()
        server.stop()
