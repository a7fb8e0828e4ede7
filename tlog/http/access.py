"""Who is calling, and how much they may: admin identity, client certificates, quotas.

Admin calls are authenticated by an admin token (compared in constant time) or by a TLS
client certificate whose common name is an admin name. With a client CA configured, every
write needs a verified client certificate; reads stay public. Quotas are token buckets per
client and per publisher, a cap on each client's writes in flight (body reads included),
and a cap on the writes being processed and the body bytes they hold, taken only once a
body is read: a client that stalls its body holds its own slots, nobody else's. Reads have
buckets of their own per client, which pages of entries drain by their size.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

from tlog.config import Config
from tlog.http.errors import ApiError

MAX_TRACKED = 100_000  # buckets kept; the least recently used are forgotten


class AccessError(ApiError):
    """A refusal of the caller: no client certificate, not an admin, over a quota."""


def peer_common_name(request: web.Request) -> str | None:
    """The CN of a verified TLS client certificate, if the client sent one."""
    cert: Any = request.transport.get_extra_info("peercert") if request.transport else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return ""


def require_client_cert(request: web.Request, config: Config) -> None:
    """With mTLS on (a client CA), writes and admin calls need a verified certificate."""
    if config.tls is not None and config.tls.client_ca is not None \
            and peer_common_name(request) is None:
        raise AccessError("client_certificate_required",
                          "this endpoint needs a TLS client certificate from the log's client CA")


def admin_identity(request: web.Request, config: Config) -> str:
    """Who the admin caller is ("cert:<CN>" or "admin-token"), or AccessError."""
    require_client_cert(request, config)
    cn = peer_common_name(request)
    if config.tls is not None and cn and cn in config.tls.admin_names:
        return f"cert:{cn}"
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if config.admin_secret is None:
        raise AccessError("admin_forbidden", "admin calls need an admin client "
                          "certificate (or an admin token configured on the log)")
    if scheme.lower() != "bearer" or not given:
        raise AccessError("admin_auth_required", "send Authorization: Bearer <admin token>")
    # Compare digests in constant time: neither the length nor a prefix of the secret leaks.
    presented = given.strip().encode("utf-8", "surrogateescape")
    if not secrets.compare_digest(hashlib.sha256(presented).digest(),
                                  hashlib.sha256(config.admin_secret.encode()).digest()):
        raise AccessError("admin_forbidden", "the admin token is not valid")
    return "admin-token"


def client_identity(request: web.Request) -> str:
    """The client a per-client quota applies to: its certificate CN, else its address."""
    cn = peer_common_name(request)
    return f"cert:{cn}" if cn else f"ip:{request.remote or 'unknown'}"


class Buckets:
    """Token buckets by key: `rate` per second, up to `burst`; LRU-bounded memory."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, what: str, doing: str = "submissions", n: int = 1) -> None:
        """Spend `n` tokens for `key` (all or none), or raise AccessError 429 with the wait
        in Retry-After; more than the burst can never be spent at once: 429, no Retry-After."""
        tokens, now = self._refilled(key)
        if tokens < n:
            self._state[key] = (tokens, now)
            if n > max(self.burst, 1):  # a single one always waits for its token
                raise AccessError("rate_limited", f"{n} {doing} at once are more than "
                                  f"{what} may send at once ({self.burst}); send fewer")
            # Whole seconds, rounded up: the body says what the Retry-After header says.
            wait = max(1, math.ceil((n - tokens) / self.rate))
            raise AccessError("rate_limited", f"too many {doing} for {what}; "
                              f"retry in {wait} s", retry_after=wait)
        self._store(key, tokens - n, now)

    def charge(self, key: str, cost: float) -> None:
        """Spend `cost` more tokens for `key` (a negative cost refunds); a bucket may go below
        zero, and then refuses until it has refilled, and never holds more than its burst."""
        tokens, now = self._refilled(key)
        self._store(key, max(min(tokens - cost, float(self.burst)), -float(self.burst)), now)

    def _refilled(self, key: str) -> tuple[float, float]:
        now = time.monotonic()
        tokens, last = self._state.pop(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate), now

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._state[key] = (tokens, now)
        while len(self._state) > MAX_TRACKED:
            self._state.popitem(last=False)


class InFlight:
    """The writes being processed at once and the body bytes they hold (beyond either cap:
    503, retry shortly). A write enters once its body is read, weighing the body's size:
    what it holds until answered is that body and the entry parsed from it."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        self.limit, self.max_bytes = limit, max_bytes
        self.current = 0
        self.bytes = 0

    def enter(self, size: int) -> None:
        if self.current >= self.limit or self.bytes + size > self.max_bytes:
            raise AccessError("overloaded", "the log is busy; retry shortly", retry_after=1)
        self.current += 1
        self.bytes += size

    def leave(self, size: int) -> None:
        self.current -= 1
        self.bytes -= size


class ClientInFlight:
    """A cap on one client's write requests at once, from their first byte (a stalled body
    included) to their answer; beyond it: 429. Memory: one counter per client with a write
    in progress, so at most one per open request."""

    def __init__(self, limit: int, what: str = "write requests") -> None:
        self.limit, self.what = limit, what
        self._count: dict[str, int] = {}

    def enter(self, key: str) -> None:
        count = self._count.get(key, 0)
        if count >= self.limit:
            raise AccessError("rate_limited", f"more than {self.limit} {self.what} of this "
                              "client in progress; retry in 1 s", retry_after=1)
        self._count[key] = count + 1

    def leave(self, key: str) -> None:
        count = self._count.pop(key) - 1
        if count > 0:
            self._count[key] = count

    def current(self, key: str) -> int:
        return self._count.get(key, 0)
