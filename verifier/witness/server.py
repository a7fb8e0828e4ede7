"""The witness's HTTP interface (c2sp.org/tlog-witness), on aiohttp.

    POST /add-checkpoint              200 cosignature line(s), or the spec's 4xx
    GET  /<hex SHA-256 of origin>/checkpoint   the latest cosigned checkpoint (for monitors)
    GET  /healthz                     "ok"

Bodies are read up to --max-body bytes (413 beyond); every refusal is a short text/plain
reason, except the 409 on the old size, whose body is the stored size (text/x.tlog.size).
Nothing slow runs on the event loop: see service.py; 503 with Retry-After when its queues
are full.

Slow or numerous clients: a connection must send a request's complete header lines within
HEADER_TIMEOUT seconds of opening, or of its previous answer (aiohttp's keep-alive timer,
which closes a connection still waiting for a complete request), then its body within
BODY_TIMEOUT; at most --max-connections are open at once, a further one gets a 503 and is
closed before anything is read from it.
"""

from __future__ import annotations

import asyncio
import re
import signal

from aiohttp import web

from verifier.protocol.witness import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    SIZE_CONTENT_TYPE,
    Refusal,
    format_size,
)
from verifier.witness.service import RETRY_AFTER, Busy, Witness

TEXT = "text/plain"
BODY_TIMEOUT = 10.0
"""Seconds a client has to send its (small) body: a slow sender holds no connection longer."""
HEADER_TIMEOUT = 10.0
"""Seconds a connection has to send complete request headers (also how long an idle
keep-alive connection stays open): trickled header lines hold no connection longer."""
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8"
                 b"\r\nContent-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
                 b"too many connections\n")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
WITNESS_KEY = web.AppKey("witness", Witness)
MAX_BODY_KEY = web.AppKey("max_body", int)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type=TEXT, charset="utf-8")


def _refused(refusal: Refusal) -> web.Response:
    if refusal.size is not None:
        return web.Response(status=409, body=format_size(refusal.size),
                            content_type=SIZE_CONTENT_TYPE)
    return _text(refusal.status, refusal.reason)


async def _read_body(request: web.Request, limit: int) -> bytes | web.Response:
    """The body, at most `limit` bytes (413 beyond, before or while it arrives), received
    within BODY_TIMEOUT seconds; an error answer closes the connection, where the rest of a
    body may still be on its way."""
    if request.content_length is not None and request.content_length > limit:
        return _closing(_text(413, f"request body over {limit} bytes"))
    body = b""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            while len(body) <= limit:
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        return _closing(_text(408, f"the body did not arrive within {BODY_TIMEOUT:g} s"))
    except (ConnectionError, web.RequestPayloadError) as exc:
        # The client hung up mid-body, or its transfer encoding does not decode: its mistake.
        return _closing(_text(400, f"could not read the request body: {exc}"))
    if len(body) > limit:
        return _closing(_text(413, f"request body over {limit} bytes"))
    return body


def _closing(resp: web.Response) -> web.Response:
    resp.force_close()
    return resp


async def add_checkpoint(request: web.Request) -> web.Response:
    body = await _read_body(request, request.app[MAX_BODY_KEY])
    if isinstance(body, web.Response):
        return body
    try:
        cosigned = await request.app[WITNESS_KEY].add_checkpoint(body)
    except Refusal as refusal:
        return _refused(refusal)
    except Busy as exc:
        return _busy(exc)
    return _text(200, cosigned.lines.removesuffix("\n"))


def _busy(exc: Busy) -> web.Response:
    resp = _text(503, str(exc))
    resp.headers["Retry-After"] = str(RETRY_AFTER)
    return resp


async def checkpoint(request: web.Request) -> web.Response:
    hashed = request.match_info["origin_hash"]
    note = None
    if _HEX_SHA256.fullmatch(hashed):
        try:
            note = await request.app[WITNESS_KEY].checkpoint(hashed)
        except Busy as exc:
            return _busy(exc)
    if note is None:
        return _text(404, "no cosigned checkpoint for this log")
    return web.Response(text=note, content_type=TEXT, charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    return _text(200, "ok")


def create_app(witness: Witness, max_body: int = DEFAULT_MAX_BODY) -> web.Application:
    # aiohttp's own cap is set above ours so that our check answers with our 413 text.
    app = web.Application(client_max_size=max_body + 1)
    app[WITNESS_KEY] = witness
    app[MAX_BODY_KEY] = max_body
    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/{origin_hash}/checkpoint", checkpoint)
    return app


class _Guard(asyncio.Protocol):
    """One accepted connection: handed to aiohttp's handler while fewer than `cap` are
    open, else answered 503 and closed. Counted when made, not when the protocol is created
    (asyncio may create several before any is made), so the cap is exact."""

    def __init__(self, server: web.Server, count: list[int], cap: int) -> None:
        self.server, self.count, self.cap = server, count, cap
        self.inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.count[0] >= self.cap:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        self.count[0] += 1
        self.inner = self.server()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.count[0] -= 1
            self.inner.connection_lost(exc)


class Serving:
    """A listening witness server; `close()` stops it."""

    def __init__(self, runner: web.AppRunner, listener: asyncio.Server) -> None:
        self.runner, self.listener = runner, listener
        self.port: int = listener.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.listener.close()
        await self.runner.cleanup()  # closes the open connections too


async def start(witness: Witness, host: str, port: int, max_body: int = DEFAULT_MAX_BODY,
                max_connections: int = DEFAULT_MAX_CONNECTIONS,
                header_timeout: float = HEADER_TIMEOUT) -> Serving:
    """Listen on host:port (0: any free port, see `Serving.port`)."""
    runner = web.AppRunner(create_app(witness, max_body), handle_signals=False,
                           keepalive_timeout=header_timeout)
    await runner.setup()
    server = runner.server
    assert server is not None
    count = [0]
    try:
        listener = await asyncio.get_running_loop().create_server(
            lambda: _Guard(server, count, max_connections), host, port)
    except BaseException:
        await runner.cleanup()
        raise
    return Serving(runner, listener)


async def serve(witness: Witness, host: str, port: int, max_body: int,
                ready: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
    """Serve until SIGINT or SIGTERM; print `ready` once listening."""
    serving = await start(witness, host, port, max_body, max_connections)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(ready, flush=True)
        await stop.wait()
    finally:
        await serving.close()
