"""The verifier's only network code: a careful client for a C2SP tlog-tiles log.

Everything the log sends is capped (size, time), transient failures are retried with
backoff, and full tiles and entry bundles (immutable by C2SP tlog-tiles) are cached on disk.
Nothing returned here is trusted by itself: tiles become proofs that are checked against a
checkpoint verified with a key the caller pinned.

The transport is libcurl (pycurl): it keeps connections alive, follows redirects, honours
the http_proxy, https_proxy and no_proxy environment variables and enforces the time limits
itself. It spends a third to a half of the CPU per request that http.client did (which
parses headers with the email package): a full audit makes thousands of requests.
"""

from __future__ import annotations

import copy
import http
import json
import math
import os
import shutil
import ssl
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pycurl  # type: ignore[import-untyped]

from verifier.errors import TransportError, UsageError, VerificationFailed
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint
from verifier.protocol.merkle import Node, combine, consistency_nodes, inclusion_nodes
from verifier.protocol.note import MAX_NOTE_SIZE, Verifier
from verifier.protocol.tiles import (
    ENTRIES_LEVEL,
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    TileKey,
    decode_bundle,
    nodes_from_tiles,
    tile_path,
    tile_width,
    tiles_for_nodes,
)

MAX_TILE_BYTES = 32 * TILE_WIDTH
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)
MAX_JSON_BYTES = 8 << 20
MAX_SEARCH_RESULTS = 10_000
USER_AGENT = "tlog-verify/0.1"
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_MAX_REDIRECTS = 5


class NotFound(TransportError):
    """The log answered 404."""


class _Transient(Exception):
    """A failure worth retrying (connection trouble, timeouts, 5xx, 429)."""


class _Body:
    """The body of one response, refused once it grows past `limit` bytes."""

    __slots__ = ("chunks", "left")

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.left = limit

    def write(self, chunk: bytes) -> int | None:
        self.left -= len(chunk)
        if self.left < 0:
            return 0  # a short count: libcurl aborts the transfer with CURLE_WRITE_ERROR
        self.chunks.append(chunk)
        return None  # all of it taken


class _Handles:
    """Idle curl handles of one client, each holding its kept-alive connection to the log.

    A thread takes a handle for one request and gives it back once the request is over, so a
    handle serves one thread at a time and each thread that prefetches bundles reuses a
    connection instead of opening one per request.
    """

    MAX_IDLE = 16

    def __init__(self, options: dict[int, Any]) -> None:
        self._options = options
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        _POOLS.add(self)

    def take(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        handle = pycurl.Curl()
        for option, value in self._options.items():
            handle.setopt(option, value)
        return handle

    def give(self, handle: Any) -> None:
        with self._lock:
            if len(self._idle) < self.MAX_IDLE:
                self._idle.append(handle)
                return
        handle.close()

    def forked(self) -> None:
        """In a forked child, whose idle handles hold the parent's connections: set them
        aside, never used nor closed (closing would end the parent's TLS sessions), and
        start afresh. A lock another thread held at the fork would never be released."""
        _INHERITED.extend(self._idle)
        self._idle = []
        self._lock = threading.Lock()


_POOLS: weakref.WeakSet[_Handles] = weakref.WeakSet()
_INHERITED: list[Any] = []


def _after_fork() -> None:
    for pool in list(_POOLS):
        pool.forked()


os.register_at_fork(after_in_child=_after_fork)


def _trust_store() -> dict[int, str]:
    """The CA certificates Python's ssl module trusts (SSL_CERT_FILE and SSL_CERT_DIR
    included). The libcurl in the pycurl wheel looks where the system it was built on keeps
    them, which other distributions do not; where Python finds none, libcurl's own guess."""
    paths = ssl.get_default_verify_paths()
    found: dict[int, str] = {}
    if paths.cafile:
        found[pycurl.CAINFO] = paths.cafile
    if paths.capath:
        found[pycurl.CAPATH] = paths.capath
    return found


def _ms(seconds: float) -> int:
    """A libcurl timeout in milliseconds, at least 1: 0 would mean no limit at all."""
    return max(1, math.ceil(seconds * 1000))


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "(unknown status)"


class LogClient:
    """Fetches checkpoints, tiles and entries of one log.

    `timeout` bounds connecting and how long the log may send nothing (libcurl counts the
    latter in whole seconds: at least 1 s), `deadline` a whole response (an endless slow
    response is cut off), `retries` the extra attempts on transient failures.
    """

    def __init__(self, base_url: str, *, cache_dir: Path | None = None, timeout: float = 10.0,
                 deadline: float = 60.0, retries: int = 3, backoff: float = 0.25) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"--log must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self.cache_dir = cache_dir
        self.timeout, self.deadline = timeout, deadline
        self.retries, self.backoff = retries, backoff
        self._cache_used = False
        self._handles = _Handles(self._curl_options())

    def copy(self) -> LogClient:
        """A client for the same log with the same settings (and class) but connections of
        its own: a forked worker process must not share its parent's sockets."""
        twin = copy.copy(self)
        twin._cache_used = False
        twin._handles = _Handles(twin._curl_options())
        return twin

    # -- transport -------------------------------------------------------------------------

    def _curl_options(self) -> dict[int, Any]:
        """How every handle of this client is set up, once, before its first request."""
        http_only = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS
        return {
            pycurl.USERAGENT: USER_AGENT,
            # As http.client did: the bytes as stored, never compressed. (libcurl does not
            # decode them unless told to with ACCEPT_ENCODING: the caps count what is sent.)
            pycurl.HTTPHEADER: ["Accept-Encoding: identity"],
            pycurl.NOSIGNAL: 1,  # no SIGALRM for timeouts: handles are used by threads
            pycurl.CONNECTTIMEOUT_MS: _ms(self.timeout),
            # A peer that sends nothing for `timeout` s: LOW_SPEED_TIME counts whole seconds.
            pycurl.LOW_SPEED_LIMIT: 1,
            pycurl.LOW_SPEED_TIME: max(1, math.ceil(self.timeout)),
            # A peer that sends a byte now and then keeps the above happy: the whole response
            # (redirects included) must be over within the deadline.
            pycurl.TIMEOUT_MS: _ms(self.deadline),
            pycurl.FOLLOWLOCATION: 1,
            pycurl.MAXREDIRS: _MAX_REDIRECTS,
            pycurl.PROTOCOLS: http_only,
            pycurl.REDIR_PROTOCOLS: http_only,
            **_trust_store(),
        }

    def fetch(self, path: str, limit: int) -> bytes:
        """GET base_url + path, at most `limit` bytes, retrying transient failures."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 5.0))
            try:
                return self._fetch_once(path, limit)
            except _Transient as exc:
                last = exc
        raise TransportError(f"couldn't fetch {self.base_url}{path} "
                             f"after {self.retries + 1} attempts: {last}")

    def _fetch_once(self, path: str, limit: int) -> bytes:
        url = self.base_url + path
        body = _Body(limit)
        handle = self._handles.take()
        started = time.monotonic()
        try:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.WRITEFUNCTION, body.write)
            # Refuses a declared Content-Length over the limit before any of the body.
            handle.setopt(pycurl.MAXFILESIZE_LARGE, limit)
            try:
                handle.perform()
            except pycurl.error as exc:
                raise self._failure(exc, body, url, limit,
                                    time.monotonic() - started) from exc
            status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        finally:
            chunks, body.chunks = body.chunks, []  # the idle handle keeps `body`, not its bytes
            self._handles.give(handle)
        if status == 404:
            raise NotFound(f"{url}: 404 not found")
        if status in _RETRY_STATUSES:
            raise _Transient(f"HTTP {status}")
        if not 200 <= status < 300:
            raise TransportError(f"{url}: HTTP {status} {_reason(status)}")
        return b"".join(chunks)

    def _failure(self, exc: Any, body: _Body, url: str, limit: int,
                 elapsed: float) -> Exception:
        """The error to raise for a transfer libcurl gave up on."""
        code, message = exc.args[0], str(exc.args[1])
        # FILESIZE_EXCEEDED: the declared Content-Length (which libcurl does not report then)
        # or, as it arrives, the body is over the limit; WRITE_ERROR: _Body refused a chunk.
        if code == pycurl.E_FILESIZE_EXCEEDED or (code == pycurl.E_WRITE_ERROR
                                                  and body.left < 0):
            return TransportError(f"{url}: response exceeds the limit of {limit} bytes")
        if code == pycurl.E_OPERATION_TIMEDOUT:
            if elapsed >= self.deadline:
                return self._too_slow(url)
            return _Transient(f"timed out ({message})")
        if code == pycurl.E_TOO_MANY_REDIRECTS:
            return TransportError(f"{url}: more than {_MAX_REDIRECTS} redirects")
        return _Transient(message or f"libcurl error {code}")

    def _too_slow(self, url: str) -> TransportError:
        return TransportError(f"{url}: response took longer than {self.deadline:g} s")

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self, key: Verifier) -> tuple[Checkpoint, str]:
        """The log's current checkpoint, verified with the pinned `key`, and its note text."""
        data = self.fetch("checkpoint", MAX_NOTE_SIZE)
        try:
            text = data.decode("utf-8")
            return open_checkpoint(text, key), text
        except ValueError as exc:
            raise VerificationFailed(f"the log's checkpoint does not verify with the pinned key "
                                     f"{key.name}: {exc}") from exc

    # -- tiles and entries -----------------------------------------------------------------

    def _cached(self, path: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        try:
            return (self.cache_dir / path).read_bytes()
        except OSError:
            return None

    def _store(self, path: str, data: bytes) -> None:
        if self.cache_dir is None:
            return
        target = self.cache_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)

    def drop_cache(self) -> bool:
        """Delete the disk cache if this client read from it; True if it did.

        For a check that failed with cached tiles or bundles: they were cached when fetched,
        before any check, so one bad response would otherwise fail every later run. Checking
        once more with fresh copies tells a bad cache from a log that misbehaves now.
        """
        if not self._cache_used or self.cache_dir is None:
            return False
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        self._cache_used = False
        return True

    def _tile_data(self, level: int, n: int, width: int, limit: int) -> tuple[bytes, int]:
        """Tile bytes for `width`, falling back to the full tile when the partial is gone.

        Returns (data, width of what was fetched). Full tiles come from the disk cache when
        present: they are immutable, and every use of them is checked against a signed root.
        """
        full = tile_path(level, n)
        cached = self._cached(full)
        if cached is not None:
            self._cache_used = True
            return cached, TILE_WIDTH
        try:
            data = self.fetch(tile_path(level, n, width), limit)
            fetched = width
        except NotFound:
            if width == TILE_WIDTH:
                raise
            data, fetched = self.fetch(full, limit), TILE_WIDTH
        if fetched == TILE_WIDTH:
            self._store(full, data)
        return data, fetched

    def hash_tile(self, level: int, n: int, size: int) -> bytes:
        """Hash tile (level, n) as of a tree of `size` leaves: exactly its hashes at that size."""
        width = tile_width(level, n, size)
        if width == 0:
            raise UsageError(f"tile {level}/{n} does not exist in a tree of size {size}")
        data, fetched = self._tile_data(level, n, width, MAX_TILE_BYTES)
        if len(data) != 32 * fetched:
            raise VerificationFailed(f"the log's tile {tile_path(level, n, fetched)} has "
                                     f"{len(data)} bytes, not {32 * fetched}")
        return data[:32 * width]

    def entry_bundle(self, n: int, size: int) -> list[bytes]:
        """Entries n*256 .. of a tree of `size` leaves, from entry bundle n, strictly decoded."""
        width = tile_width(ENTRIES_LEVEL, n, size)
        if width == 0:
            raise UsageError(f"entry bundle {n} does not exist in a tree of size {size}")
        data, fetched = self._tile_data(ENTRIES_LEVEL, n, width, MAX_BUNDLE_BYTES)
        try:
            return decode_bundle(data, fetched)[:width]
        except ValueError as exc:
            raise VerificationFailed(
                f"the log's entry bundle {tile_path(ENTRIES_LEVEL, n, fetched)}: {exc}") from exc

    def entry(self, index: int, size: int) -> bytes:
        """The bytes of entry `index` as served in its entry bundle (not yet proven)."""
        if not 0 <= index < size:
            raise UsageError(f"entry {index} is not in a tree of size {size}")
        return self.entry_bundle(index // TILE_WIDTH, size)[index % TILE_WIDTH]

    def node_hashes(self, nodes: Iterable[Node], size: int) -> dict[Node, bytes]:
        wanted = list(nodes)
        tiles: dict[TileKey, bytes] = {
            key: self.hash_tile(key[0], key[1], size) for key in tiles_for_nodes(wanted)}
        try:
            return nodes_from_tiles(wanted, tiles)
        except ValueError as exc:
            raise VerificationFailed(f"the log's tiles cannot build the proof: {exc}") from exc

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof for `index` in the tree of `size`, built from tiles. Check it!"""
        groups = inclusion_nodes(index, size)
        return combine(groups, self.node_hashes(_flat(groups), size))

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """Consistency proof from size `first` to `second`, built from tiles. Check it!"""
        groups = consistency_nodes(first, second)
        return combine(groups, self.node_hashes(_flat(groups), second))

    # -- the JSON search API (untrusted hints: callers prove what it points at) ------------

    def search(self, package: str, version: str | None = None) -> list[int]:
        """Indices the log says hold `package` (and `version`), in log order."""
        params = {"package": package, "limit": "1000"}
        if version is not None:
            params["version"] = version
        return self._paged_indices("v1/entries", params)

    def registry_indices(self) -> list[int]:
        """Indices the log says hold registry entries (publisher/v1, keys/v1, revoke/v1)."""
        return self._paged_indices("v1/registry", {"limit": "1000"})

    def _paged_indices(self, path: str, base: dict[str, str]) -> list[int]:
        indices: list[int] = []
        after: int | None = None
        while len(indices) < MAX_SEARCH_RESULTS:
            params = dict(base)
            if after is not None:
                params["after"] = str(after)
            page = self._json(path + "?" + urllib.parse.urlencode(params))
            entries = page.get("entries", [])
            if not isinstance(entries, list):
                raise VerificationFailed("the log's search answer has no list of entries")
            raw = [e.get("index") for e in entries if isinstance(e, dict)]
            found = [i for i in raw if isinstance(i, int) and i >= 0]
            if len(found) != len(raw):
                raise VerificationFailed("the log's search answer has malformed indices")
            indices.extend(found)
            after = page.get("next_after")
            if after is None or not found:
                return indices
            if not isinstance(after, int):
                raise VerificationFailed("the log's search answer has a malformed next_after")
        return indices

    def _json(self, path: str) -> dict[str, Any]:
        try:
            value = json.loads(self.fetch(path, MAX_JSON_BYTES))
        except (ValueError, RecursionError) as exc:
            raise TransportError(f"{self.base_url}{path}: not JSON") from exc
        if not isinstance(value, dict):
            raise TransportError(f"{self.base_url}{path}: not a JSON object")
        return value


def _flat(groups: Sequence[Sequence[Node]]) -> list[Node]:
    return [node for group in groups for node in group]
