"""`tlog-verify witness`: run a witness (c2sp.org/tlog-witness) for logs you do not run.

    tlog-verify witness keygen --name NAME --out DIR [--force]
    tlog-verify witness serve --key NAME.key --log-key LOG.vkey [--log-key ...] --state DIR
                              --listen HOST:PORT [--max-body BYTES]
                              [--max-connections N]
    tlog-verify witness evidence --state DIR [--json] [--limit N]

keygen writes DIR/NAME.key (mode 0600, never over an existing key without --force) and
DIR/NAME.vkey, a '/' in NAME becoming '_'. serve cosigns each log's checkpoints that extend
what it cosigned before, keeping its state and the evidence of refused requests in
DIR/witness.db; SIGINT or SIGTERM stop it. evidence prints the refused requests whose
checkpoint the log had signed and an honest log cannot cause (forks, bad consistency
proofs), once per signed checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from verifier.client.files import atomic_write
from verifier.client.keys import KeyFileError, read_vkey, read_witness_key
from verifier.errors import EXIT_OK, UsageError
from verifier.protocol.cosignature import generate_witness_key
from verifier.protocol.note import NoteError, Verifier
from verifier.protocol.witness import DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS

MAX_BODY_LIMIT = 1 << 20
MAX_CONNECTIONS_LIMIT = 10_000


def key_files(out: Path, name: str) -> tuple[Path, Path]:
    """Where keygen puts a key: a '/' in the name becomes '_' (as `tlog keygen` does)."""
    stem = name.replace("/", "_")
    return out / f"{stem}.key", out / f"{stem}.vkey"


def cmd_keygen(args: argparse.Namespace) -> int:
    key_path, vkey_path = key_files(Path(args.out), args.name)
    try:
        signer = generate_witness_key(args.name)
    except NoteError as exc:
        raise UsageError(f"bad witness name {args.name!r}: {exc}") from exc
    vkey = signer.verifier().text()
    try:
        # Linked into place unless --force: a key that exists (or appears meanwhile) stays.
        atomic_write(key_path, (signer.text() + "\n").encode(), durable=True,
                     overwrite=args.force)
        atomic_write(vkey_path, (vkey + "\n").encode(), durable=True, mode=0o644)
    except FileExistsError as exc:
        raise UsageError(f"{key_path} exists; refusing to overwrite a key (--force to "
                         "replace it)") from exc
    except OSError as exc:
        raise UsageError(f"couldn't write the key to {args.out}: {exc.strerror or exc}") from exc
    print(f"private key: {key_path} (mode 0600; keep it secret)")
    print(f"public key:  {vkey_path}")
    print(vkey)
    return EXIT_OK


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen wants HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def _log_keys(paths: list[str]) -> list[Verifier]:
    keys = []
    for path in paths:
        try:
            keys.append(read_vkey(path, "log key"))
        except KeyFileError as exc:
            raise UsageError(f"--log-key: {exc}") from exc
    return keys


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here: only the server needs aiohttp, not every tlog-verify command.
    from verifier.witness.server import serve
    from verifier.witness.service import Witness

    host, port = _listen(args.listen)
    if not 0 < args.max_body <= MAX_BODY_LIMIT:
        raise UsageError(f"--max-body must be in 1..{MAX_BODY_LIMIT}")
    if not 0 < args.max_connections <= MAX_CONNECTIONS_LIMIT:
        raise UsageError(f"--max-connections must be in 1..{MAX_CONNECTIONS_LIMIT}")
    signer = read_witness_key(args.key)
    log_keys = _log_keys(args.log_key)
    try:
        witness = Witness(signer, log_keys, Path(args.state))
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"couldn't open the state in {args.state}: {exc}") from exc
    ready = (f"witness {signer.name} {signer.verifier().text()} listening on "
             f"http://{args.listen} for {', '.join(witness.origins())}")
    try:
        asyncio.run(serve(witness, host, port, args.max_body, ready, args.max_connections))
    except OSError as exc:
        raise UsageError(f"couldn't listen on {args.listen}: {exc.strerror or exc}") from exc
    finally:
        witness.close()
    return EXIT_OK


def _time(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def cmd_evidence(args: argparse.Namespace) -> int:
    from verifier.witness.store import DB_FILE, WitnessStore

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    state = Path(args.state)
    if not (state / DB_FILE).is_file():
        raise UsageError(f"no witness state in {state} (no {DB_FILE})")
    try:
        store = WitnessStore(state, read_only=True)  # while the server may be writing
        try:
            rows = store.evidence(args.limit)
        finally:
            store.close()
    except sqlite3.Error as exc:
        raise UsageError(f"couldn't read the witness state in {state}: {exc}") from exc
    if args.json:
        out: list[dict[str, Any]] = [
            {"id": e.id, "time": _time(e.time), "origin": e.origin, "reason": e.reason,
             "body": e.body.decode("utf-8", "replace")} for e in rows]
        json.dump(out, sys.stdout, indent=2)
        print()
        return EXIT_OK
    for e in rows:
        print(f"#{e.id} {_time(e.time)} {e.origin}: {e.reason}")
        for line in e.body.decode("utf-8", "replace").splitlines():
            print(f"    {line}")
    print(f"{len(rows)} evidence record(s)")
    return EXIT_OK


def register(sub: Any) -> None:
    w = sub.add_parser("witness", help="run a witness that cosigns logs' checkpoints")
    wsub = w.add_subparsers(dest="witness_command", required=True, metavar="COMMAND")

    k = wsub.add_parser("keygen", help="make a witness key pair")
    k.add_argument("--name", required=True, help="the witness's name (key name)")
    k.add_argument("--out", required=True, help="directory for NAME.key and NAME.vkey")
    k.add_argument("--force", action="store_true", help="replace an existing key")
    k.set_defaults(func=cmd_keygen)

    s = wsub.add_parser("serve", help="serve add-checkpoint (c2sp.org/tlog-witness)")
    s.add_argument("--key", required=True, help="the witness's private key file")
    s.add_argument("--log-key", action="append", required=True, metavar="VKEY_FILE",
                   help="a witnessed log's key (repeatable: several logs, or rotated keys "
                        "of one origin)")
    s.add_argument("--state", required=True, help="directory of the witness's database")
    s.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to serve add-checkpoint and the read endpoint on "
                        "(e.g. 0.0.0.0:7380)")
    s.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                   help=f"largest request body accepted (default {DEFAULT_MAX_BODY})")
    s.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                   metavar="N", help="connections open at once; more get a 503 and are "
                                     f"closed (default {DEFAULT_MAX_CONNECTIONS})")
    s.set_defaults(func=cmd_serve)

    e = wsub.add_parser("evidence", help="print the refused requests kept as evidence")
    e.add_argument("--state", required=True, help="the witness's state directory")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--limit", type=int, help="only the last N records")
    e.set_defaults(func=cmd_evidence)
