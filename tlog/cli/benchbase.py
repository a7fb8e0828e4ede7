"""The baseline of `tlog bench --baseline`: a trivial aiohttp server in a child process.

`POST /post?reply=N` reads the whole body and answers N bytes of JSON; `GET /get/N` answers
N bytes. Measured with the same client, concurrency and request mix as the log, it shows
what this machine's HTTP stack alone manages, so the log's figures read as a fraction of it.

Run as `python -m tlog.cli.benchbase`: it listens on a free loopback port and prints
"PORT <n>" once listening.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from dataclasses import dataclass

from aiohttp import web

MAX_REPLY = 64 << 20  # the largest body the baseline makes: an entry bundle is far less


def _sized(request: web.Request, text: str) -> bytes:
    try:
        n = int(text)
    except ValueError as exc:
        raise web.HTTPBadRequest(text="size must be an integer") from exc
    if not 0 <= n <= MAX_REPLY:
        raise web.HTTPBadRequest(text="size out of range")
    cache: dict[int, bytes] = request.app[BODIES]
    body = cache.get(n)
    if body is None:  # made once per size: the handler stays trivial
        body = cache[n] = b'"' + b"x" * max(n - 2, 0) + b'"' if n >= 2 else b"0" * n
    return body


async def post(request: web.Request) -> web.Response:
    await request.read()
    body = _sized(request, request.query.get("reply", "64"))
    return web.Response(body=body, content_type="application/json")


async def get(request: web.Request) -> web.Response:
    body = _sized(request, request.match_info["size"])
    return web.Response(body=body, content_type="application/octet-stream")


BODIES: web.AppKey[dict[int, bytes]] = web.AppKey("bodies", dict)


def make_app() -> web.Application:
    app = web.Application(client_max_size=MAX_REPLY)
    app[BODIES] = {}
    app.router.add_post("/post", post)
    app.router.add_get("/get/{size}", get)
    return app


@dataclass
class Baseline:
    """The running child; `url` is its base URL."""

    proc: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_baseline() -> Baseline:
    """Start the baseline server; raises OSError when it does not come up."""
    proc = subprocess.Popen([sys.executable, "-m", "tlog.cli.benchbase"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the child prints its port once it listens
    if not line.startswith("PORT "):
        proc.kill()
        proc.wait()
        raise OSError(f"the baseline server did not start (exit {proc.returncode})")
    return Baseline(proc, f"http://127.0.0.1:{int(line.split()[1])}")


def main() -> None:
    import asyncio

    import uvloop

    async def serve() -> None:
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # a free port, known before anyone can take it
        await web.SockSite(runner, sock).start()
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    # The loop tlog serve runs on by default: the ceiling is measured like for like.
    with (contextlib.suppress(KeyboardInterrupt),
          asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner):
        runner.run(serve())


if __name__ == "__main__":
    main()
