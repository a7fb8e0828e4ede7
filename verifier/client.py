"""The verifier's only network code: a careful client for a C2SP tlog-tiles log.

Everything the log sends is capped (size, time), transient failures are retried with
backoff, and full tiles and entry bundles (immutable by C2SP tlog-tiles) are cached on disk.
Nothing returned here is trusted by itself: tiles become proofs that are checked against a
checkpoint verified with a key the caller pinned.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import http.client
import itertools
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from verifier.checkpoint import Checkpoint, open_checkpoint
from verifier.errors import TransportError, UsageError, VerificationFailed
from verifier.merkle import Node, combine, consistency_nodes, inclusion_nodes
from verifier.note import MAX_NOTE_SIZE, Verifier
from verifier.tiles import (
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


class NotFound(TransportError):
    """The log answered 404."""


class _Transient(Exception):
    """A failure worth retrying (connection trouble, timeouts, 5xx, 429)."""


class _Deadline:
    """Shuts down the sockets of one request when its deadline passes.

    A socket timeout bounds each read, not a whole response: a peer that sends a byte before
    every timeout, in the headers or in the body, would hold a read open forever. Shutting
    the socket down wakes a read blocked on it, which then fails or sees the end.
    """

    _current = threading.local()

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self.done = False
        self._seconds = seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> _Deadline:
        _Deadline._current.value = self
        _WATCHDOG.add(time.monotonic() + self._seconds, self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:  # from now on the sockets may serve other requests: hands off
            self.done = True
            self._sockets.clear()
        _Deadline._current.value = None

    @classmethod
    def watch(cls, sock: socket.socket | None) -> None:
        """Put a socket just connected by this thread under its current request's deadline."""
        deadline: _Deadline | None = getattr(cls._current, "value", None)
        if deadline is None or sock is None:
            return
        with deadline._lock:
            deadline._sockets.append(sock)
            if deadline.expired:
                _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)


class _Watchdog:
    """One daemon thread that expires the pending `_Deadline`s of this process.

    Starting a threading.Timer per request costs about 0.3 ms of CPU, as much as the rest
    of fetching an entry bundle over a kept-alive connection; a heap costs next to nothing.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        os.register_at_fork(after_in_child=self._forked)

    def add(self, when: float, deadline: _Deadline) -> None:
        with self._cond:
            while self._heap and self._heap[0][2].done:  # finished requests, oldest first
                heapq.heappop(self._heap)
            heapq.heappush(self._heap, (when, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="tlog-verify-deadlines")
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(min(delay, 3600.0))
                    continue
                heapq.heappop(self._heap)[2]._expire()

    def _forked(self) -> None:
        """A forked child has none of the parent's threads: start afresh."""
        self._cond = threading.Condition()
        self._heap = []
        self._thread = None


_WATCHDOG = _Watchdog()


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _Deadline.watch(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _Deadline.watch(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self) -> None:
        super().__init__()
        self._tls = ssl.create_default_context()

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._tls)


class _Connections:
    """Idle keep-alive connections to the log's host, shared by the client's threads.

    A connection is taken for one request and given back only once its response was read to
    the end and its deadline is over, so every idle connection is between requests. Reusing
    connections instead of opening one per request (as urllib does) cuts the CPU that both
    the client and the log spend per request by about a third when a scan fetches thousands
    of entry bundles.
    """

    MAX_IDLE = 16

    def __init__(self, scheme: str, host: str, port: int | None, timeout: float) -> None:
        self._scheme, self._host, self._port, self._timeout = scheme, host, port, timeout
        self._tls = ssl.create_default_context() if scheme == "https" else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (True: reused) or a new, not yet connected one (False)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self.new(), False

    def new(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return _HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                    context=self._tls)
        return _HTTPConnection(self._host, self._port, timeout=self._timeout)

    def give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _direct(parsed: urllib.parse.SplitResult, timeout: float) -> _Connections | None:
    """Keep-alive connections to the log, or None when a proxy applies (urllib handles it)."""
    host = parsed.hostname or ""
    if parsed.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return None
    return _Connections(parsed.scheme, host, parsed.port, timeout)


class LogClient:
    """Fetches checkpoints, tiles and entries of one log.

    `timeout` bounds each socket operation, `deadline` a whole response (an endless slow
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
        self._opener = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)
        self._cache_used = False
        self._prefix = parsed.path.rstrip("/") + "/"
        self._connections = _direct(parsed, timeout)
        if self._connections is not None:
            weakref.finalize(self, self._connections.close)

    def copy(self) -> LogClient:
        """A client for the same log with the same settings (and class) but connections of
        its own: a forked worker process must not share its parent's sockets."""
        twin = copy.copy(self)
        twin._opener = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)
        twin._cache_used = False
        twin._connections = _direct(urllib.parse.urlsplit(self.base_url), self.timeout)
        if twin._connections is not None:
            weakref.finalize(twin, twin._connections.close)
        return twin

    # -- transport -------------------------------------------------------------------------

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
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        started = time.monotonic()
        reusable: http.client.HTTPConnection | None = None
        with _Deadline(self.deadline) as deadline:
            try:
                kept = None
                if self._connections is not None:
                    kept = self._fetch_kept_alive(self._connections, self._prefix + path, url,
                                                  limit, started)
                if kept is not None:
                    data, reusable = kept
                else:
                    with self._opener.open(req, timeout=self.timeout) as resp:
                        data = self._read_capped(resp, url, limit, started)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise NotFound(f"{url}: 404 not found") from exc
                if exc.code in _RETRY_STATUSES:
                    raise _Transient(f"HTTP {exc.code}") from exc
                raise TransportError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                if deadline.expired:
                    raise self._too_slow(url) from exc
                raise _Transient(str(getattr(exc, "reason", exc)) or repr(exc)) from exc
        if reusable is not None and self._connections is not None:
            if deadline.expired:  # its socket may have been shut down
                reusable.close()
            else:
                self._connections.give(reusable)
        if deadline.expired:
            raise self._too_slow(url)
        return data

    def _fetch_kept_alive(self, connections: _Connections, path: str, url: str, limit: int,
                          started: float) -> tuple[bytes, http.client.HTTPConnection | None] | None:
        """GET on a kept-alive connection: the body of a 2xx response and the connection if it
        may be reused; None for a redirect (left to urllib, which follows it). Other statuses
        raise HTTPError, as urllib does."""
        conn, reused = connections.take()
        try:
            try:
                resp = self._send(conn, reused, path)
            except ConnectionError:
                if not reused:
                    raise
                # The log closed the idle connection (its keep-alive timeout): once more on a
                # new one. No request was answered, so this is not one of the `retries`.
                conn.close()
                conn, reused = connections.new(), False
                resp = self._send(conn, reused, path)
            if 300 <= resp.status < 400:
                conn.close()
                return None
            if not 200 <= resp.status < 300:
                conn.close()
                raise urllib.error.HTTPError(url, resp.status, resp.reason, resp.headers, None)
            data = self._read_capped(resp, url, limit, started)
        except BaseException:
            conn.close()
            raise
        if resp.isclosed() and not resp.will_close:
            return data, conn
        conn.close()
        return data, None

    @staticmethod
    def _send(conn: http.client.HTTPConnection, reused: bool,
              path: str) -> http.client.HTTPResponse:
        if reused:
            _Deadline.watch(conn.sock)
        conn.request("GET", path, headers={"User-Agent": USER_AGENT})
        return conn.getresponse()

    def _too_slow(self, url: str) -> TransportError:
        return TransportError(f"{url}: response took longer than {self.deadline:g} s")

    def _read_capped(self, resp: Any, url: str, limit: int, started: float) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TransportError(f"{url}: response of {declared} bytes exceeds the limit {limit}")
        chunks: list[bytes] = []
        total = 0
        while chunk := resp.read(min(1 << 20, limit + 1 - total) or 1):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise TransportError(f"{url}: response exceeds the limit of {limit} bytes")
            if time.monotonic() - started > self.deadline:
                raise self._too_slow(url)
        return b"".join(chunks)

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
