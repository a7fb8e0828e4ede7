"""`tlog publish`: hash artifacts, sign a release/v1 entry, log it, verify the receipt."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from verifier.entry import EntryError, sign_entry, validate_entry
from verifier.note import NoteError, Verifier, parse_private_key, parse_vkey
from verifier.proof import make_receipt, verify_receipt

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
MAX_REPLY = 1 << 20
TIMEOUT = 30


class PublishError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def describe_artifact(path: Path) -> dict[str, Any]:
    """{name, sha256, size} of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"name": path.name, "sha256": digest.hexdigest(), "size": size}


def _http(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return int(resp.status), resp.read(MAX_REPLY)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(MAX_REPLY)
    except (urllib.error.URLError, OSError) as exc:
        raise PublishError(EXIT_UNREACHABLE, f"couldn't reach the log at {url}: {exc}") from exc


def _log_key(args: argparse.Namespace) -> Verifier:
    if args.log_key:
        return parse_vkey(Path(args.log_key).read_text(encoding="utf-8").strip())
    status, body = _http(args.log.rstrip("/") + "/v1/log")
    if status != 200:
        raise PublishError(EXIT_UNREACHABLE, f"GET /v1/log answered {status}")
    print("warning: no --log-key given; verifying against the key the log itself announces",
          file=sys.stderr)
    return parse_vkey(json.loads(body)["vkey"])


def _entry(args: argparse.Namespace, artifacts: list[Path]) -> dict[str, Any]:
    signer = parse_private_key(Path(args.key).read_text(encoding="utf-8").strip())
    fields: dict[str, Any] = {
        "kind": "release/v1", "package": args.package, "version": args.version,
        "artifacts": [describe_artifact(p) for p in artifacts]}
    if args.counter is not None:
        fields["counter"] = args.counter
    entry = sign_entry(fields, signer)
    validate_entry(entry)  # refuse locally what the log would refuse
    return entry


def _submit(log_url: str, entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, body = _http(log_url.rstrip("/") + "/v1/entries", json.dumps(entry).encode())
    try:
        reply = json.loads(body)
    except ValueError as exc:
        raise PublishError(EXIT_UNREACHABLE, f"the log answered {status} with non-JSON") from exc
    if status not in (200, 201):
        err = reply.get("error", {}) if isinstance(reply, dict) else {}
        raise PublishError(EXIT_FAIL, f"the log refused the entry ({status} "
                           f"{err.get('code')}): {err.get('message')}")
    if not isinstance(reply, dict):
        raise PublishError(EXIT_FAIL, "the log's reply is not a JSON object")
    return status, reply


def _receipt(entry: dict[str, Any], reply: dict[str, Any], log_key: Verifier) -> dict[str, Any]:
    try:
        receipt = make_receipt(entry, int(reply["index"]),
                               [bytes.fromhex(h) for h in reply["inclusion_proof"]],
                               str(reply["checkpoint"]))
        verified = verify_receipt(receipt, log_key)
    except (KeyError, TypeError, ValueError) as exc:
        raise PublishError(EXIT_FAIL, f"the log's receipt does not verify: {exc}") from exc
    if verified.release.leaf_hash.hex() != reply.get("leaf_hash"):
        raise PublishError(EXIT_FAIL, "the log's leaf hash is not the hash of our entry")
    return receipt


def publish(args: argparse.Namespace) -> int:
    artifacts = [Path(a) for a in args.artifacts]
    try:
        for p in artifacts:
            if not p.is_file():
                raise PublishError(EXIT_USAGE, f"{p}: not a file")
        log_key = _log_key(args)
        entry = _entry(args, artifacts)
        status, reply = _submit(args.log, entry)
        receipt = _receipt(entry, reply, log_key)
    except PublishError as exc:
        print(f"tlog publish: {exc}", file=sys.stderr)
        return exc.code
    except (OSError, NoteError, EntryError) as exc:
        print(f"tlog publish: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out else artifacts[0].with_name(
        artifacts[0].name + ".tlog-receipt.json")
    out.write_text(json.dumps(receipt, indent=2) + "\n", encoding="utf-8")
    state = "logged" if status == 201 else "already logged:"
    print(f"{state} {args.package} {args.version} at index {reply['index']} "
          f"(tree size {reply['tree_size']}); receipt verified and written to {out}")
    return EXIT_OK
