"""Submit one signed entry to a log (POST /v1/entries) and check the log's answer.

The verifier's own small counterpart of `tlog publish`'s submission (verifier never imports
tlog): used by the monitor to log the halts it signs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from verifier.client.http import HttpFetcher
from verifier.errors import LogMisbehaviour, TransportError
from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.merkle import ProofError, verify_inclusion
from verifier.protocol.note import NoteError
from verifier.protocol.trust import LogTrust

MAX_REPLY = 1 << 20  # a submission's answer: index, leaf hash, proof and a checkpoint


@dataclass(frozen=True)
class Answer:
    """The log's answer to a submission: its HTTP status and parsed JSON body."""

    status: int
    body: dict[str, Any]

    @property
    def refusal(self) -> dict[str, Any]:
        """{"status", "code", "message"} of a refused submission."""
        err = self.body.get("error")
        err = err if isinstance(err, dict) else {}
        return {"status": self.status, "code": err.get("code"), "message": err.get("message")}


def submit_entry(log: HttpFetcher, entry: dict[str, Any], token: str | None) -> Answer:
    """POST `entry`; the answer whatever its status. TransportError when the log could not be
    reached, answered a redirect (never followed with a token), 429 or a 5xx, or not JSON."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, raw = log.request("POST", "/v1/entries", json.dumps(entry).encode(), headers,
                              MAX_REPLY)
    if 300 <= status < 400 or status >= 500 or status == 429:  # 429: busy, try again later
        raise TransportError(f"the log answered the submission with {status}")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise TransportError(f"the log answered the submission ({status}) with non-JSON") from exc
    return Answer(status, body if isinstance(body, dict) else {})


def check_logged(leaf_hash: bytes, body: dict[str, Any], trust: LogTrust) -> Checkpoint:
    """The answer's checkpoint, opened under `trust`, proving the entry of `leaf_hash` at the
    answer's index; LogMisbehaviour otherwise (the log accepted it but does not prove it)."""
    if body.get("leaf_hash") != leaf_hash.hex():
        raise LogMisbehaviour("the log's leaf hash is not the hash of the submitted entry")
    try:
        checkpoint = trust.open(str(body["checkpoint"]))
        proof = [bytes.fromhex(h) for h in body["inclusion_proof"]]
        verify_inclusion(int(body["index"]), checkpoint.size, leaf_hash, proof, checkpoint.root)
    except (KeyError, TypeError, ValueError, NoteError, ProofError) as exc:
        raise LogMisbehaviour(f"the log's answer does not prove the submitted entry logged: "
                              f"{exc}") from exc
    return checkpoint
