"""HTTP for the verifier and the `tlog` commands: libcurl (pycurl) with every limit set.

libcurl keeps connections alive, follows redirects (to http and https only), honours the
http_proxy, https_proxy and no_proxy environment variables and enforces the time limits
itself. It spends a third to a half of the CPU per request that http.client did (which
parses headers with the email package): a full audit makes thousands of requests.
`HttpFetcher` is the `Fetcher` of a log served over HTTP: GETs capped in size and time,
transient failures retried with backoff. `request` is the one-shot call (any method, a
body, the status as answered, no retries) the `tlog` commands submit entries with.
"""

from __future__ import annotations

import copy
import http
import math
import os
import ssl
import threading
import time
import urllib.parse
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pycurl  # type: ignore[import-untyped]

from verifier.client.fetch import NotFound
from verifier.errors import TransportError, UsageError

USER_AGENT = "tlog-verify/0.1"
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Tls:
    """TLS files beyond the system's trust store: a CA bundle, a client certificate."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


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


class HttpFetcher:
    """GETs of one log's resources over HTTP(S).

    `timeout` bounds connecting and how long the log may send nothing (libcurl counts the
    latter in whole seconds: at least 1 s), `deadline` a whole response (an endless slow
    response is cut off), `retries` the extra attempts on transient failures.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0, deadline: float = 60.0,
                 retries: int = 3, backoff: float = 0.25, tls: Tls = Tls()) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"--log must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout, self.deadline = timeout, deadline
        self.retries, self.backoff = retries, backoff
        self.tls = tls
        self._handles = _Handles(self._curl_options())

    def copy(self) -> HttpFetcher:
        """The same settings, connections of its own: a forked worker process must not
        share its parent's sockets."""
        twin = copy.copy(self)
        twin._handles = _Handles(twin._curl_options())
        return twin

    def where(self, path: str) -> str:
        return self.base_url + path

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
            # A CA bundle of the caller's replaces the trust store (CAINFO and CAPATH both).
            **(_tls_options(self.tls) if self.tls.ca_file else {
                **_trust_store(), **_tls_options(self.tls)}),
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

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                limit: int = 1 << 20) -> tuple[int, bytes]:
        """One `method` request to base_url + path; (status, body) whatever the status.

        Not retried: a request that changes the log is repeated only by its caller, who
        knows whether it is idempotent. TransportError if the log could not be reached.
        """
        url = self.base_url + path.lstrip("/")
        reply = _Body(limit)
        handle = pycurl.Curl()
        try:
            for option, value in self._curl_options().items():
                handle.setopt(option, value)
            extra = [f"{k}: {v}" for k, v in (headers or {}).items()]
            handle.setopt(pycurl.HTTPHEADER, ["Accept-Encoding: identity", *extra])
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.CUSTOMREQUEST, method)
            # A submission is answered where it was sent: a redirect would repeat it elsewhere.
            handle.setopt(pycurl.FOLLOWLOCATION, 0)
            if body is not None:
                handle.setopt(pycurl.POSTFIELDS, body)
            handle.setopt(pycurl.WRITEFUNCTION, reply.write)
            handle.setopt(pycurl.MAXFILESIZE_LARGE, limit)
            started = time.monotonic()
            try:
                handle.perform()
            except pycurl.error as exc:
                failure = self._failure(exc, reply, url, limit, time.monotonic() - started)
                raise TransportError(f"couldn't reach the log at {url}: {failure}") from exc
            return int(handle.getinfo(pycurl.RESPONSE_CODE)), b"".join(reply.chunks)
        finally:
            handle.close()


def _tls_options(tls: Tls) -> dict[int, Any]:
    """libcurl options for the TLS files of `tls` (the CA bundle replaces the trust store)."""
    options: dict[int, Any] = {}
    if tls.ca_file:
        options[pycurl.CAINFO] = tls.ca_file
    if tls.client_cert:
        options[pycurl.SSLCERT] = tls.client_cert
        options[pycurl.SSLKEY] = tls.client_key or tls.client_cert
    return options
