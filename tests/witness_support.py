"""A witnessed log without the log server: tlog-tiles files on disk, checkpoints signed with
the log key and cosigned by witness keys at chosen times, served over HTTP with what a log
run with a witness policy and its witnesses answer (the preamble's contracts):

    <url>/log/checkpoint, tiles, entry bundles      the files (also readable as a file: URL)
    <url>/log/v1/entries?package=&version=          the search API (the release command)
    <url>/log/v1/checkpoints/cosigned?covering=N    the smallest cosigned checkpoint > N
    <url>/witness/<name>/<hex sha256(origin)>/checkpoint    a witness's latest view

A test plays the log (honest or not) by choosing what each of these serves.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.attacks.state_log import package_state_answer, state_map
from tests.support import make_release
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.cosignature import CosignatureSigner, generate_witness_key
from verifier.protocol.entries.release import parse_leaf, validate_entry
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import Signer
from verifier.protocol.package_state import map_root_entry
from verifier.protocol.receipt import make_receipt
from verifier.protocol.tiles import ENTRIES_LEVEL, TILE_WIDTH, TreeBuilder, encode_bundle, tile_path


def cosign(note: str, cosigners: Mapping[CosignatureSigner, int]) -> str:
    """`note` with a cosignature line by each witness at its UNIX time."""
    body = note[:note.index("\n\n") + 1]
    return note + "".join(w.cosign(body, t).line() for w, t in cosigners.items())


def witnesses(*names: str) -> list[CosignatureSigner]:
    return [generate_witness_key(f"{n}.witness.example") for n in names]


def policy_text(log: Signer, quorum: str, ws: Iterable[CosignatureSigner],
                urls: Mapping[str, str] | None = None, extra: str = "") -> str:
    """A policy naming `log` and each witness by its key name's first label."""
    lines = [f"log {log.verifier().text()}"]
    for w in ws:
        url = (urls or {}).get(w.name.split(".")[0], "")
        lines.append(f"witness {w.name.split('.')[0]} {w.verifier().text()} {url}".rstrip())
    return "\n".join([*lines, extra, f"quorum {quorum}", ""])


class TiledLog:
    """A log kept as tlog-tiles files under `root`: every size it grew to keeps its partial
    tiles (so proofs for each size can be built), and the notes of each size are kept."""

    def __init__(self, root: Path, signer: Signer, map_roots: bool = False) -> None:
        self.root, self.signer = root, signer
        # Like tlog, end each growth with a map-root/v1 leaf (or only where a test calls
        # end_batch, with map_roots off).
        self.map_roots = map_roots
        self.root.mkdir(parents=True, exist_ok=True)
        self.leaves: list[bytes] = []
        self.entries: list[dict[str, Any]] = []
        self.notes: dict[int, str] = {}  # size -> the log-signed note
        self.cosigned: dict[int, str] = {}  # size -> the note with its cosignatures

    def grow(self, entries: Iterable[dict[str, Any]]) -> str:
        """Append `entries`, write the tiles of the new size, sign it; return the note."""
        for entry in entries:
            self.entries.append(entry)
            self.leaves.append(validate_entry(entry).leaf)
        if self.map_roots:
            self._append_map_root()
        return self._publish()

    def end_batch(self) -> str:
        """Append the honest map-root/v1 entry a log ends each batch with; return the note."""
        self._append_map_root()
        return self._publish()

    def _append_map_root(self) -> None:
        smap, _ = state_map(self.leaves)
        leaf = map_root_entry(len(self.leaves), smap.root())
        self.entries.append(json.loads(leaf))
        self.leaves.append(leaf)

    def _publish(self) -> str:
        builder = TreeBuilder()
        for leaf in self.leaves:
            builder.append(leaf_hash(leaf))
        for (level, n), data in builder.take_changed().items():
            self._write(tile_path(level, n, len(data) // 32), data)
        for n in range(0, len(self.leaves), TILE_WIDTH):
            bundle = self.leaves[n:n + TILE_WIDTH]
            self._write(tile_path(ENTRIES_LEVEL, n // TILE_WIDTH, len(bundle)),
                        encode_bundle(bundle))
        size = len(self.leaves)
        self.notes[size] = sign_checkpoint(Checkpoint(self.signer.name, size, builder.root()),
                                           self.signer)
        return self.notes[size]

    def releases(self, publisher: Signer, *versions: str, package: str = "com.acme.app") -> str:
        return self.grow(make_release(publisher, package, v) for v in versions)

    def cosign(self, size: int, cosigners: Mapping[CosignatureSigner, int]) -> str:
        """Cosign the note of `size`; it becomes a cosigned checkpoint the log can name."""
        self.cosigned[size] = cosign(self.notes[size], cosigners)
        return self.cosigned[size]

    def serve(self, note: str) -> None:
        """What GET checkpoint answers from now on."""
        self._write("checkpoint", note.encode())

    def receipt(self, index: int, note: str) -> dict[str, Any]:
        """The receipt of entry `index` proven in `note` (a note of this log)."""
        from verifier.client.log import LogClient
        from verifier.protocol.checkpoint import parse_checkpoint
        from verifier.protocol.note import parse_note

        size = parse_checkpoint(parse_note(note).text).size
        proof = LogClient(self.root.as_uri()).inclusion_proof(index, size)
        return make_receipt(self.entries[index], index, proof, note)

    def _write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    @property
    def file_url(self) -> str:
        return self.root.as_uri()


class Endpoints:
    """One HTTP server for a TiledLog and its witnesses' read endpoints."""

    def __init__(self, log: TiledLog) -> None:
        self.log = log
        self.views: dict[str, str] = {}  # witness policy name -> its latest cosigned view
        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def log_url(self) -> str:
        return self.url + "/log"

    def witness_url(self, name: str) -> str:
        return f"{self.url}/witness/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, target: str) -> tuple[int, bytes]:
        """The status and body for the request target `target` (path and query)."""
        self.requests.append(target)
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path, urllib.parse.parse_qs(parts.query)
        if path.startswith("/witness/"):
            name, digest, rest = path[len("/witness/"):].split("/", 2)
            origin = hashlib.sha256(self.log.signer.name.encode()).hexdigest()
            if digest != origin or rest != "checkpoint" or name not in self.views:
                return 404, b"not found\n"
            return 200, self.views[name].encode()
        if not path.startswith("/log/"):
            return 404, b""
        path = path[len("/log/"):]
        if path == "v1/entries":
            return 200, self._search(query)
        if path == "v1/package-state":
            size = int(query.get("size", [str(len(self.log.leaves))])[0])
            answer = package_state_answer(self.log.leaves, query["package"][0], size)
            if answer is None:
                return 404, b'{"code": "no_package_state"}'
            return 200, json.dumps(answer).encode()
        if path == "v1/checkpoints/cosigned":
            covering = int(query["covering"][0])
            sizes = sorted(s for s in self.log.cosigned if s > covering)
            if not sizes:
                return 404, b'{"code": "not_found"}'
            return 200, self.log.cosigned[sizes[0]].encode()
        file = self.log.root / path
        if ".." in path or not file.is_file():
            return 404, b""
        return 200, file.read_bytes()

    def _search(self, query: dict[str, list[str]]) -> bytes:
        package, version = query["package"][0], query.get("version", [None])[0]
        found = [{"index": i} for i, leaf in enumerate(self.log.leaves)
                 if b"map-root/v1" not in leaf and (r := parse_leaf(leaf)).package == package
                 and (version is None or r.version == version)]
        return json.dumps({"entries": found, "next_after": None}).encode()


def _handler(endpoints: Endpoints) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = endpoints.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
