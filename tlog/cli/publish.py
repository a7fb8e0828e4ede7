"""`tlog publish`: hash artifacts (or take them from --artifact NAME:SHA256:SIZE), sign a
release/v1 entry, log it, verify the receipt. `--batch FILE` is tlog.cli.publish_batch."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from tlog.cli import proof
from tlog.cli.cosigned import cosigned_receipt
from tlog.cli.remote import RemoteError, call, expect, read_secret
from verifier.client.artifacts import hash_file
from verifier.client.keys import read_policy, read_private_key, read_vkey
from verifier.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from verifier.protocol.duration import parse_duration
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import NoteError, Verifier
from verifier.protocol.policy import PolicyError, PolicyTrust
from verifier.protocol.receipt import make_receipt, verify_receipt
from verifier.protocol.trust import KeyTrust


def describe_artifact(path: Path) -> dict[str, Any]:
    """{name, sha256, size} of a file, as the entry's artifacts list it."""
    digest = hash_file(path)
    return {"name": path.name, "sha256": digest.sha256, "size": digest.size}


_SHA256 = re.compile(r"[0-9a-f]{64}")
_SIZE = re.compile(r"[0-9]{1,16}")
MAX_NAME = 256  # release/v1: artifact names are 1-256 characters
MAX_SIZE = 2**53 - 1


def parse_artifact_spec(spec: str) -> dict[str, Any]:
    """{name, sha256, size} of `--artifact NAME:SHA256:SIZE` (the name may hold colons);
    UsageError naming what is wrong."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3:
        raise UsageError(f"--artifact {spec!r}: expected NAME:SHA256:SIZE")
    name, digest, size = parts
    if not 1 <= len(name) <= MAX_NAME:
        raise UsageError(f"--artifact {spec!r}: the name must be 1-{MAX_NAME} characters")
    if not _SHA256.fullmatch(digest):
        raise UsageError(f"--artifact {name}: SHA256 must be 64 lowercase hex digits, "
                         f"not {digest[:80]!r}")
    if not _SIZE.fullmatch(size) or int(size) > MAX_SIZE:
        raise UsageError(f"--artifact {name}: SIZE must be a decimal byte count "
                         f"(0-{MAX_SIZE}), not {size[:40]!r}")
    return {"name": name, "sha256": digest, "size": int(size)}


def _artifacts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The entry's artifacts: hashed from the FILE arguments, or given by --artifact."""
    if args.artifact_specs and args.artifacts:
        raise UsageError("give FILE arguments or --artifact NAME:SHA256:SIZE, not both")
    if args.artifact_specs:
        return [parse_artifact_spec(s) for s in args.artifact_specs]
    if not args.artifacts:
        raise UsageError("give the release's files (FILE ...), or --artifact "
                         "NAME:SHA256:SIZE for files not here, or --batch FILE")
    for p in map(Path, args.artifacts):
        if not p.is_file():
            raise RemoteError(EXIT_USAGE, f"{p}: not a file")
    return [describe_artifact(Path(p)) for p in args.artifacts]


def _out(args: argparse.Namespace, artifacts: list[dict[str, Any]]) -> Path:
    """--out, else FIRST_ARTIFACT.tlog-receipt.json beside the file (for --artifact: here)."""
    if args.out:
        return Path(args.out)
    if args.artifacts:
        first = Path(args.artifacts[0])
        return first.with_name(first.name + ".tlog-receipt.json")
    base = Path(artifacts[0]["name"]).name
    if not base or base in (".", ".."):
        raise UsageError("the first --artifact name is no file name: give --out FILE")
    return Path(base + ".tlog-receipt.json")


def _entry(args: argparse.Namespace, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    signer = read_private_key(args.key, owner_only=False)
    fields: dict[str, Any] = {
        "kind": "release/v1", "package": args.package, "version": args.version,
        "artifacts": artifacts}
    if args.counter is not None:
        fields["counter"] = args.counter
    entry = sign_entry(fields, signer)
    validate_entry(entry)  # refuse locally what the log would refuse
    return entry


def _submit(args: argparse.Namespace, entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    token = read_secret(args.token_file, "TLOG_TOKEN", "token file")
    status, reply = call(args, "POST", "/v1/entries", entry, bearer=token)
    return status, expect(status, reply, (200, 201), "the log")


def _receipt(entry: dict[str, Any], reply: dict[str, Any], log_key: Verifier) -> dict[str, Any]:
    try:
        receipt = make_receipt(entry, int(reply["index"]),
                               [bytes.fromhex(h) for h in reply["inclusion_proof"]],
                               str(reply["checkpoint"]))
        verified = verify_receipt(receipt, KeyTrust(log_key))
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(EXIT_FAILED, f"the log's receipt does not verify: {exc}") from exc
    if verified.release.leaf_hash.hex() != reply.get("leaf_hash"):
        raise RemoteError(EXIT_FAILED, "the log's leaf hash is not the hash of our entry")
    return receipt


def _policy_trust(args: argparse.Namespace) -> PolicyTrust | None:
    """The policy a --wait-cosigned receipt must satisfy; its log line is the log key."""
    if not args.wait_cosigned:
        if args.policy:
            raise UsageError("--policy is used with --wait-cosigned")
        return None
    if not args.policy:
        raise UsageError("--wait-cosigned needs --policy FILE: the witnesses and quorum the "
                         "receipt's checkpoint must carry")
    pinned = read_vkey(args.log_key, "log key") if args.log_key else None
    try:
        return PolicyTrust.for_log(read_policy(args.policy), pinned)
    except PolicyError as exc:
        raise UsageError(f"--policy {args.policy}: {exc}") from exc


def _wait_timeout(args: argparse.Namespace) -> float:
    try:
        return float(parse_duration(args.wait_timeout))
    except ValueError as exc:
        raise UsageError(f"--wait-timeout: {exc}") from exc


def publish(args: argparse.Namespace) -> int:
    if args.batch:
        from tlog.cli.publish_batch import publish_batch

        return publish_batch(args)
    try:
        if args.receipts or args.chunk_size is not None:
            raise UsageError("--receipts and --chunk-size go with --batch FILE")
        if not args.package or not args.version:
            raise UsageError("give --package and --version (or --batch FILE)")
        artifacts = _artifacts(args)
        out = _out(args, artifacts)
        trust = _policy_trust(args)
        timeout = _wait_timeout(args)
        log_key = trust.log if trust is not None else proof.log_key(args, "tlog publish")
        entry = _entry(args, artifacts)
        status, reply = _submit(args, entry)
        receipt, size = _receipt(entry, reply, log_key), int(reply["tree_size"])
        if trust is not None:
            receipt, size = cosigned_receipt(args, entry, bytes.fromhex(reply["leaf_hash"]),
                                             int(reply["index"]), trust, timeout)
    except RemoteError as exc:
        print(f"tlog publish: {exc}", file=sys.stderr)
        return exc.code
    except (OSError, NoteError, EntryError, UsageError) as exc:
        print(f"tlog publish: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out.write_text(json.dumps(receipt, indent=2) + "\n", encoding="utf-8")
    state = "logged" if status == 201 else "already logged:"
    tree = "cosigned tree size" if trust is not None else "tree size"
    print(f"{state} {args.package} {args.version} at index {reply['index']} "
          f"({tree} {size}); receipt verified and written to {out}")
    return EXIT_OK
