"""The witness's HTTP interface (c2sp.org/tlog-witness), on aiohttp.

    POST /add-checkpoint              200 cosignature line(s), or the spec's 4xx
    GET  /<hex SHA-256 of origin>/checkpoint   the latest cosigned checkpoint (for monitors)
    GET  /healthz                     "ok"

Bodies are read up to --max-body bytes (413 beyond); every refusal is a short text/plain
reason, except the 409 on the old size, whose body is the stored size (text/x.tlog.size).
Nothing slow runs on the event loop: see service.py.
"""

from __future__ import annotations

import asyncio
import re
import signal

from aiohttp import web

from verifier.protocol.witness import DEFAULT_MAX_BODY, SIZE_CONTENT_TYPE, Refusal, format_size
from verifier.witness.service import Witness

TEXT = "text/plain"
BODY_TIMEOUT = 10.0
"""Seconds a client has to send its (small) body: a slow sender holds no connection longer."""
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
    return _text(200, cosigned.lines.removesuffix("\n"))


async def checkpoint(request: web.Request) -> web.Response:
    hashed = request.match_info["origin_hash"]
    note = None
    if _HEX_SHA256.fullmatch(hashed):
        note = await request.app[WITNESS_KEY].checkpoint(hashed)
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


async def serve(witness: Witness, host: str, port: int, max_body: int,
                ready: str) -> None:
    """Serve until SIGINT or SIGTERM; print `ready` once listening."""
    runner = web.AppRunner(create_app(witness, max_body), handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        print(ready, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
