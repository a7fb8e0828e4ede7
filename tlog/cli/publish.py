"""`tlog publish`: hash artifacts, sign a release/v1 entry, log it, verify the receipt."""

from __future__ import annotations

import argparse
import json
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


def _entry(args: argparse.Namespace, artifacts: list[Path]) -> dict[str, Any]:
    signer = read_private_key(args.key, owner_only=False)
    fields: dict[str, Any] = {
        "kind": "release/v1", "package": args.package, "version": args.version,
        "artifacts": [describe_artifact(p) for p in artifacts]}
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
    artifacts = [Path(a) for a in args.artifacts]
    try:
        for p in artifacts:
            if not p.is_file():
                raise RemoteError(EXIT_USAGE, f"{p}: not a file")
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
    out = Path(args.out) if args.out else artifacts[0].with_name(
        artifacts[0].name + ".tlog-receipt.json")
    out.write_text(json.dumps(receipt, indent=2) + "\n", encoding="utf-8")
    state = "logged" if status == 201 else "already logged:"
    tree = "cosigned tree size" if trust is not None else "tree size"
    print(f"{state} {args.package} {args.version} at index {reply['index']} "
          f"({tree} {size}); receipt verified and written to {out}")
    return EXIT_OK
