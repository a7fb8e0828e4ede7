"""The log's answer to a submission, checked against the log's key (`tlog publish`, `tlog
registry`): the entry is logged only if the checkpoint verifies and proves it included.

The key is the pinned one (--log-key); without it, the key the log announces, which only
shows that the log agrees with itself, so the commands warn.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tlog.cli.remote import RemoteError, call, expect
from verifier.client.keys import read_vkey
from verifier.errors import EXIT_FAILED
from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.merkle import verify_inclusion
from verifier.protocol.note import NoteError, Verifier, parse_vkey
from verifier.protocol.trust import KeyTrust

LOG_KEY_HELP = ("the log's vkey file to verify its answer with (default: ask the log, which "
                "only proves the log is self-consistent)")


def log_key(args: argparse.Namespace, command: str) -> Verifier:
    """The pinned --log-key, else (with a warning) the key the log announces."""
    if args.log_key:
        return read_vkey(args.log_key, "log key")
    info = expect(*call(args, "GET", "/v1/log"), (200,), "GET /v1/log")
    print(f"{command}: warning: no --log-key given; verifying against the key the log "
          "itself announces", file=sys.stderr)
    try:
        return parse_vkey(str(info.get("vkey")))
    except NoteError as exc:
        raise RemoteError(EXIT_FAILED, f"the log announces a malformed key: {exc}") from exc


def check_inclusion(leaf_hash: bytes, reply: dict[str, Any], key: Verifier) -> Checkpoint:
    """The checkpoint of `reply` (a submission's answer), signed by `key` and proving the
    entry of `leaf_hash` at the answer's index; RemoteError (exit 1) otherwise."""
    if reply.get("leaf_hash") != leaf_hash.hex():
        raise RemoteError(EXIT_FAILED, "the log's leaf hash is not the hash of our entry")
    try:
        checkpoint = KeyTrust(key).open(str(reply["checkpoint"]))
        proof = [bytes.fromhex(h) for h in reply["inclusion_proof"]]
        verify_inclusion(int(reply["index"]), checkpoint.size, leaf_hash, proof,
                         checkpoint.root)
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(EXIT_FAILED, f"the log's answer does not prove our entry logged: "
                                       f"{exc}") from exc
    return checkpoint
