"""A second, independent witness (c2sp.org/tlog-witness, tlog-cosignature, signed-note),
written from the C2SP texts alone for the tests: it shares no code with verifier/ (its own
note parsing, key IDs, base64 handling and Merkle consistency check; Ed25519 from the
`cryptography` package), so that the log is tested against a witness that could disagree
with verifier/'s reading of the specs.

In memory: the latest cosigned (size, root, note) per origin, checked and replaced
atomically under one lock. Test hooks: `extra_signer` adds a cosignature line by a key no
policy knows; `corrupt` returns an invalid cosignature by the witness's own key.

    python -m tests.alt_witness keygen NAME          # prints the private key, then the vkey
    python -m tests.alt_witness serve --key FILE --log-vkey FILE --listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_BODY = 1 << 20
MAX_PROOF_LINES = 63
DASH = "\u2014 "
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise ValueError("non-canonical base64")
    return raw


def _key_id(name: str, alg: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class WitnessKey:
    """A cosignature/v1 key: name, seed; vkey `name+<hex id>+base64(0x04 || public)`."""

    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> WitnessKey:
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> WitnessKey:
        prefix, _, rest = text.strip().partition("PRIVATE+KEY+")
        name, kid, data = rest.split("+", 2)
        raw = _unb64(data)
        if prefix or raw[0] != ALG_COSIGNATURE_V1 or len(raw) != 33:
            raise ValueError("not a cosignature/v1 private key")
        key = cls(name, raw[1:])
        if key.key_id.hex() != kid:
            raise ValueError("key ID mismatch")
        return key

    @property
    def public(self) -> bytes:
        return _raw_public(Ed25519PrivateKey.from_private_bytes(self.seed))

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, ALG_COSIGNATURE_V1, self.public)

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([ALG_COSIGNATURE_V1]) + self.public)}"

    def private_text(self) -> str:
        return (f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+"
                f"{_b64(bytes([ALG_COSIGNATURE_V1]) + self.seed)}")

    def cosign(self, body: str, timestamp: int, corrupt: bool = False) -> str:
        message = f"cosignature/v1\ntime {timestamp}\n{body}".encode()
        sig = Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)
        if corrupt:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        return f"{DASH}{self.name} {_b64(self.key_id + struct.pack('>Q', timestamp) + sig)}\n"


@dataclass(frozen=True)
class LogKey:
    """An Ed25519 note key (type 0x01) of a log the witness follows."""

    name: str
    key_id: bytes
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> LogKey:
        name, kid, data = vkey.strip().split("+", 2)
        raw = _unb64(data)
        if raw[0] != ALG_ED25519 or len(raw) != 33:
            raise ValueError("not an Ed25519 note vkey")
        key = cls(name, bytes.fromhex(kid), raw[1:])
        if _key_id(name, ALG_ED25519, key.public) != key.key_id:
            raise ValueError("key ID mismatch")
        return key

    def verifies(self, body: str, sig: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(sig, body.encode())
        except InvalidSignature:
            return False
        return True


class Refused(Exception):
    def __init__(self, status: int, text: str, size: int | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.size = status, text, size


def _leaf_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def consistent(first: int, second: int, proof: list[bytes], first_root: bytes,
               second_root: bytes) -> bool:
    """RFC 9162 section 2.1.4.2, for 0 < first < second."""
    if not proof:
        return False
    if first & (first - 1) == 0:  # an exact power of two: the old root starts the path
        proof = [first_root, *proof]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _leaf_node(c, fr), _leaf_node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _leaf_node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


@dataclass
class Latest:
    size: int
    root: bytes
    note: str


@dataclass
class AltWitness:
    key: WitnessKey
    logs: dict[str, list[LogKey]]  # origin -> its keys
    state: dict[str, Latest] = field(default_factory=dict)
    extra_signer: WitnessKey | None = None
    corrupt: bool = False
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_checkpoint(self, body: bytes) -> str:
        """The cosignature lines for a request body, or Refused with the status."""
        self.requests += 1
        old, proof, note = self._split(body)
        origin, size, root, text = self._open(note)
        if old > size:
            raise Refused(400, "old size is beyond the checkpoint")
        with self._lock:  # check against the stored size and store, atomically
            have = self.state.get(origin)
            have_size = have.size if have else 0
            if old != have_size:
                raise Refused(409, f"{have_size}\n", have_size)
            if old == size:
                if proof or (have is not None and have.root != root):
                    raise Refused(409, "same size, different root or a proof\n")
            elif old == 0:
                if proof:
                    raise Refused(422, "a proof from size 0 must be empty")
            elif have is None or not consistent(old, size, proof, have.root, root):
                raise Refused(422, "the consistency proof does not verify")
            self.state[origin] = Latest(size, root, note)
        now = int(time.time())
        lines = self.key.cosign(text, now, self.corrupt)
        if self.extra_signer is not None:
            lines += self.extra_signer.cosign(text, now)
        return lines

    def _split(self, body: bytes) -> tuple[int, list[bytes], str]:
        try:
            text = body.decode("utf-8")
            head, sep, note = text.partition("\n\n")
            lines = head.split("\n")
            if not sep or not lines[0].startswith("old "):
                raise ValueError("no old size line or no empty line")
            old_text = lines[0][4:]
            if not _DECIMAL.fullmatch(old_text):
                raise ValueError("bad old size")
            if len(lines) - 1 > MAX_PROOF_LINES:
                raise ValueError("too many proof lines")
            proof = [_unb64(line) for line in lines[1:]]
            if any(len(h) != 32 for h in proof):
                raise ValueError("a proof hash is not 32 bytes")
        except ValueError as exc:
            raise Refused(400, str(exc)) from exc
        return int(old_text), proof, note

    def _open(self, note: str) -> tuple[str, int, bytes, str]:
        cut = note.rfind("\n\n")
        if cut < 0 or not note.endswith("\n"):
            raise Refused(400, "malformed note")
        text, sigs = note[:cut + 1], note[cut + 2:-1].split("\n")
        lines = text.split("\n")
        if len(lines) < 4 or not _DECIMAL.fullmatch(lines[1]):
            raise Refused(400, "malformed checkpoint")
        origin = lines[0]
        keys = self.logs.get(origin)
        if keys is None:
            raise Refused(404, "unknown log")
        try:
            root = _unb64(lines[2])
        except ValueError as exc:
            raise Refused(400, "malformed root") from exc
        if not any(self._signed_by(keys, text, line) for line in sigs):
            raise Refused(403, "no valid signature by a known key of the log")
        return origin, int(lines[1]), root, text

    @staticmethod
    def _signed_by(keys: list[LogKey], text: str, line: str) -> bool:
        if not line.startswith(DASH):
            return False
        name, _, data = line[len(DASH):].partition(" ")
        try:
            raw = _unb64(data)
        except ValueError:
            return False
        return any(k.name == name and k.key_id == raw[:4] and k.verifies(text, raw[4:])
                   for k in keys)

    def app(self) -> web.Application:
        async def add(request: web.Request) -> web.Response:
            body = await request.read()  # at most client_max_size, else 413
            try:
                lines = self.add_checkpoint(body)
            except Refused as exc:
                if exc.size is not None:
                    return web.Response(status=exc.status, body=exc.text.encode(),
                                        headers={"Content-Type": "text/x.tlog.size"})
                return web.Response(status=exc.status, text=exc.text)
            return web.Response(text=lines, content_type="text/plain", charset="utf-8")

        async def latest(request: web.Request) -> web.Response:
            for origin, got in self.state.items():
                if hashlib.sha256(origin.encode()).hexdigest() == request.match_info["hash"]:
                    now = int(time.time())
                    return web.Response(text=got.note + self.key.cosign(
                        got.note[:got.note.rfind("\n\n") + 1], now), charset="utf-8")
            return web.Response(status=404, text="no checkpoint of that log")

        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/add-checkpoint", add)
        app.router.add_get("/{hash:[0-9a-f]{64}}/checkpoint", latest)
        return app


class Running:
    """An AltWitness served on a real port, in this event loop (`await start()`) or in a
    thread of its own (`start_thread()`) for tests whose log runs as a process."""

    def __init__(self, witness: AltWitness, port: int) -> None:
        self.witness, self.port = witness, port
        self.url = f"http://127.0.0.1:{port}"
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.witness.app())
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_thread(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop())
            self._loop.close()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    def stop_thread(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="alt_witness")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("name")
    s = sub.add_parser("serve")
    s.add_argument("--key", required=True)
    s.add_argument("--log-vkey", required=True, action="append")
    s.add_argument("--listen", required=True)
    args = p.parse_args(argv)
    if args.cmd == "keygen":
        key = WitnessKey.generate(args.name)
        print(key.private_text())
        print(key.vkey())
        return 0
    logs: dict[str, list[LogKey]] = {}
    for path in args.log_vkey:
        log_key = LogKey.parse(Path(path).read_text())
        logs.setdefault(log_key.name, []).append(log_key)
    witness = AltWitness(WitnessKey.parse(Path(args.key).read_text()), logs)
    host, _, port = args.listen.rpartition(":")
    web.run_app(witness.app(), host=host, port=int(port), print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
