"""A misbehaving log for the browser tests: a reverse proxy in front of a real, honest log
that forwards everything and rewrites one kind of answer, the way a compromised or buggy
log server would, so the explorer's in-browser check must catch it.

Each proxy listens on its own port, so the browser sees each as its own origin (its own
localStorage pins and cache); its mode can change between page loads.

Modes:
- "honest": forwards as is (shows the proxy alone breaks nothing);
- "proof": flips a byte of the first hash of every /v1/proof/inclusion answer;
- "signature": flips a byte of the log's signature in /checkpoint;
- "root": changes the root in /checkpoint and signs it again with the real log key (a
  log that signs a tree the witnesses never saw): only the cosignatures can tell;
- "state": changes the package state of /v1/package-state (the version of a release);
- "other-key": a log that took another key: /checkpoint signed by it, and the explorer's
  pages (data-log-vkey, data-policy) and /v1/log naming it. Only a pinned key can tell.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web

from verifier.protocol.checkpoint import parse_checkpoint, sign_checkpoint
from verifier.protocol.note import Signer, generate_key

MODES = ("honest", "proof", "signature", "root", "state", "other-key")
# Headers that describe the hop or the encoding of the forwarded body, not the content.
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
        "cache-control", "etag", "last-modified", "expires", "host", "accept-encoding"}


def _flip(hex_hash: str) -> str:
    raw = bytearray(bytes.fromhex(hex_hash))
    raw[0] ^= 0x01
    return raw.hex()


def _split_note(note: str) -> tuple[str, list[str]]:
    body, _, sigs = note.partition("\n\n")
    return body + "\n", [line for line in sigs.split("\n") if line]


def _flip_signature(note: str, origin: str) -> str:
    body, lines = _split_note(note)
    out = []
    for line in lines:
        name, _, b64 = line[2:].partition(" ")
        if name == origin:
            raw = bytearray(base64.b64decode(b64))
            raw[-1] ^= 0x01  # the signature's last byte; the key ID before it stays
            line = f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}"
        out.append(line)
    return body + "\n" + "\n".join(out) + "\n"


def _resign(note: str, signer: Signer, new_root: bool) -> str:
    """The note's body (its root changed when `new_root`) signed by `signer` in place of
    the log's signature; the witnesses' cosignature lines kept as they were."""
    body, lines = _split_note(note)
    cp = parse_checkpoint(body)
    if new_root:
        cp = replace(cp, root=bytes([cp.root[0] ^ 0x01]) + cp.root[1:])
    signed = sign_checkpoint(cp, signer)
    cosignatures = [line for line in lines if line[2:].split(" ")[0] != cp.origin]
    return signed + "\n".join(cosignatures) + ("\n" if cosignatures else "")


@dataclass
class Rewriter:
    """The rewrites of one misbehaving log, given the honest log's key."""

    log_signer: Signer
    mode: str = "honest"
    other: Signer = field(init=False)

    def __post_init__(self) -> None:
        # The same origin, another key: what a log that lost its key (or was swapped) shows.
        self.other = generate_key(self.log_signer.name)

    def rewrite(self, path: str, body: bytes, ctype: str) -> bytes:
        origin = self.log_signer.name
        if path == "/checkpoint" and self.mode == "signature":
            return _flip_signature(body.decode(), origin).encode()
        if path == "/checkpoint" and self.mode in ("root", "other-key"):
            signer = self.other if self.mode == "other-key" else self.log_signer
            return _resign(body.decode(), signer, new_root=self.mode == "root").encode()
        if path == "/v1/proof/inclusion" and self.mode == "proof":
            doc = json.loads(body)
            if doc.get("hashes"):
                doc["hashes"][0] = _flip(doc["hashes"][0])
            return json.dumps(doc).encode()
        if path == "/v1/package-state" and self.mode == "state":
            doc = json.loads(body)
            releases = doc.get("state", {}).get("releases", [])
            if releases:
                releases[-1]["version"] += ".1"
            return json.dumps(doc).encode()
        if self.mode == "other-key" and (ctype.startswith("text/html") or path == "/v1/log"):
            honest, other = self.log_signer.verifier().text(), self.other.verifier().text()
            return body.decode().replace(honest, other).encode()
        return body


class MisbehavingLog:
    """Proxies on their own ports in one background thread, each with a Rewriter: one per
    name, in the mode of that name (honest for a name that is not a mode)."""

    def __init__(self, upstream: str, log_signer: Signer, names: tuple[str, ...]) -> None:
        self.upstream = upstream
        self.rewriters = {n: Rewriter(log_signer, n if n in MODES else "honest")
                          for n in names}
        self.urls: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> MisbehavingLog:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=True)
        for name, rewriter in self.rewriters.items():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handler(rewriter))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.urls[name] = f"http://127.0.0.1:{runner.addresses[0][1]}"
            self._runners.append(runner)

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _handler(self, rewriter: Rewriter) -> Callable[[web.Request], Any]:
        async def forward(request: web.Request) -> web.Response:
            assert self._session is not None
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
            async with self._session.request(
                    request.method, self.upstream + request.path_qs, headers=headers,
                    data=await request.read(), allow_redirects=False) as resp:
                body = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
                if resp.status == 200:
                    body = rewriter.rewrite(request.path, body, resp.content_type)
            # The browser must not keep one mode's answers for the next.
            out["Cache-Control"] = "no-store"
            return web.Response(status=resp.status, body=body, headers=out)

        return forward
