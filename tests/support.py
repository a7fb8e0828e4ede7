"""Helpers shared by the end-to-end tests and the benchmarks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, Verifier


def release_fields(package: str, version: str, payload: bytes = b"",
                   counter: int | None = None) -> dict[str, Any]:
    import hashlib

    fields: dict[str, Any] = {
        "kind": "release/v1", "package": package, "version": version,
        "artifacts": [{"name": f"{package.replace('/', '_')}-{version}.tar.gz",
                       "sha256": hashlib.sha256(payload or version.encode()).hexdigest(),
                       "size": len(payload)}],
    }
    if counter is not None:
        fields["counter"] = counter
    return fields


def make_release(signer: Signer, package: str, version: str, **kw: Any) -> dict[str, Any]:
    return sign_entry(release_fields(package, version, **kw), signer)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """`app` on a free loopback port for the block (a stub witness, a lying proxy); yields
    its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def write_key(path: Path, signer: Signer) -> Path:
    path.write_text(signer.text() + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Server:
    """A `tlog serve` child process."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(database_url: str, key_file: Path, workdir: Path, timeout: float = 30,
                 extra: Sequence[str] = ("--policy", "open"), scheme: str = "http",
                 env: Mapping[str, str] | None = None, port: int | None = None) -> Server:
    """Start `tlog serve` (an open log unless `extra` says otherwise) and wait until ready;
    `env` adds to the environment, `port` reuses a port (a restart the clients find)."""
    port = port or free_port()
    log_path = workdir / f"serve-{port}.log"
    out = log_path.open("ab")  # a restart on the same port appends to the same log
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlog", "serve", "--database-url", database_url,
         "--key", str(key_file), "--listen", f"127.0.0.1:{port}", *extra],
        stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    server = Server(proc, f"{scheme}://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tlog serve exited {proc.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=1,
                                        context=_no_verify()) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"tlog serve did not become ready:\n{server.output()}")


@dataclass
class Result:
    status: int
    body: dict[str, Any]
    seconds: float


async def submit_all(urls: Sequence[str], entries: Sequence[dict[str, Any]],
                     connections: int = 400) -> list[Result]:
    """POST every entry at once, round-robin over the servers; results in entry order."""
    conn = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def one(i: int, entry: dict[str, Any]) -> Result:
            started = time.perf_counter()
            async with session.post(urls[i % len(urls)] + "/v1/entries", json=entry) as resp:
                body = await resp.json()
                return Result(resp.status, body, time.perf_counter() - started)

        return list(await asyncio.gather(*(one(i, e) for i, e in enumerate(entries))))


def _no_verify() -> ssl.SSLContext:
    """Readiness polling only: the test servers use throwaway certificates."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def published_size(url: str, vkey: Verifier, want: int, timeout: float = 20) -> int:
    """The size of the log's /checkpoint (verified with `vkey`) once it is `want`, or the
    last size seen after `timeout` s (-1 if none). A log with witnesses publishes a round
    after its appends, and answers 503 until its first cosigned checkpoint."""
    deadline, size = time.monotonic() + timeout, -1
    while size != want and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/checkpoint", timeout=5) as resp:
                size = open_checkpoint(resp.read(), vkey).size
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
        if size != want:
            time.sleep(0.1)
    return size
