"""`tlog publish --wait-cosigned`: wait until a checkpoint the witness quorum cosigned covers
the entry, and prove the entry in that checkpoint.

The log answers a submission at once, against the checkpoint it signed alone; witnesses
cosign later (every few seconds). A client that requires a quorum (`tlog-verify --policy`)
refuses a receipt without it, so a publisher who ships receipts waits for the first
quorum-cosigned checkpoint covering the entry and writes the receipt with that one. Its
witnessed time is also when a cooldown (`tlog-verify --min-age`) starts counting.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tlog.cli.remote import RemoteError, call, call_raw, expect
from verifier.errors import EXIT_FAILED, EXIT_TRANSPORT, EXIT_USAGE
from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.policy import PolicyTrust
from verifier.protocol.receipt import make_receipt, verify_receipt

POLL_SECONDS = 1.0
PROGRESS_SECONDS = 10.0


def _cosigned_note(args: argparse.Namespace, index: int) -> str | None:
    """The note of the first quorum-cosigned checkpoint covering `index`; None if none yet
    or the log cannot say now (a 5xx, a 429, a connection that failed): the wait goes on
    until its deadline, as a log that restarts or sheds load answers again shortly."""
    try:
        status, raw = call_raw(args, "GET", f"/v1/checkpoints/cosigned?covering={index}")
    except RemoteError as exc:
        if exc.code != EXIT_TRANSPORT:
            raise
        return None
    if status == 200:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteError(EXIT_FAILED, "the log's cosigned checkpoint is not UTF-8") from exc
    if status == 404 and b'"no_witness_policy"' in raw:
        raise RemoteError(EXIT_USAGE, "the log collects no cosignatures (it runs without "
                                      "--witness-policy): publish without --wait-cosigned")
    if status in (404, 429) or status >= 500:
        return None
    raise RemoteError(EXIT_FAILED, f"GET /v1/checkpoints/cosigned answered {status}")


def wait_for_quorum(args: argparse.Namespace, index: int, trust: PolicyTrust,
                    timeout: float) -> tuple[str, Checkpoint]:
    """Poll until a cosigned checkpoint covering `index` satisfies `trust`; its note and
    checkpoint.

    A note short of the quorum is not yet an answer: the log may still be collecting
    cosignatures, or our policy asks for more witnesses than the log's. Either way the
    publisher is told which, at the deadline.
    """
    deadline = time.monotonic() + timeout
    next_progress = time.monotonic() + PROGRESS_SECONDS
    last_refusal = "no quorum-cosigned checkpoint covers it yet"
    while True:
        note = _cosigned_note(args, index)
        if note is not None:
            try:
                return note, trust.open(note)
            except ValueError as exc:
                last_refusal = f"the log's cosigned checkpoint does not satisfy the policy: {exc}"
        now = time.monotonic()
        if now >= deadline:
            # Transient, not a failed check: the entry is logged and the same command run
            # again finds it (200, already logged) and waits anew.
            raise RemoteError(EXIT_TRANSPORT, f"entry {index} is logged, but gave up after "
                                              f"{timeout:g} s waiting for it to be cosigned "
                                              f"({last_refusal}); run the same command again "
                                              "to wait longer and write the receipt")
        if now >= next_progress and sys.stderr.isatty():
            print(f"still waiting for a checkpoint covering entry {index} with "
                  f"{trust.policy.describe_quorum()}...", file=sys.stderr)
            next_progress = now + PROGRESS_SECONDS
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - now)))


def cosigned_receipt(args: argparse.Namespace, entry: dict[str, Any], leaf_hash: bytes,
                     index: int, trust: PolicyTrust, timeout: float
                     ) -> tuple[dict[str, Any], int]:
    """The receipt of `entry` against the first quorum-cosigned checkpoint covering it,
    verified under the policy before it is returned, and that checkpoint's size."""
    note, checkpoint = wait_for_quorum(args, index, trust, timeout)
    size = checkpoint.size
    reply = expect(*call(args, "GET", f"/v1/proof/inclusion?leaf_hash={leaf_hash.hex()}"
                                      f"&tree_size={size}"), (200,), "the log")
    try:
        if int(reply["index"]) != index:
            raise ValueError(f"the log places the entry at {reply['index']}, not {index}")
        receipt = make_receipt(entry, index, [bytes.fromhex(h) for h in reply["hashes"]], note)
        verify_receipt(receipt, trust)
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(EXIT_FAILED, f"the log's proof against its cosigned checkpoint of "
                                       f"size {size} does not verify: {exc}") from exc
    return receipt, size
