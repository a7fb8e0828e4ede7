"""Offline inclusion proofs (c2sp.org/tlog-proof@v1) and the receipts ``tlog publish`` writes.

A tlog-proof is text (c2sp.org/tlog-proof, "Format")::

    c2sp.org/tlog-proof@v1
    extra <base64>                      (optional, unauthenticated)
    index <n>
    <base64 inclusion proof hash>       (zero or more, leaf's sibling first)

    <the checkpoint note, verbatim>

A receipt is the JSON object ``{"kind": "tlog-receipt/v1", "entry": {...release/v1...},
"proof": "<tlog-proof text>"}``. :func:`verify_receipt` checks it against the log's key
alone: checkpoint signature and origin, publisher signature, and the RFC 6962 inclusion
of the entry's leaf at ``index`` under the checkpoint's root.

A receipt may carry one more member, ``"package_state"`` (verifier.protocol.state_proof):
the package's state proven against the same checkpoint, which must list the entry at its
index, with the leaves of the lifecycle statements the state names for the version. It is
checked here too, so a receipt that carries it carries a proven state; what the state says
(halted, yanked, a rollout) is the client's to decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verifier.protocol.checkpoint import Checkpoint, CheckpointError, parse_decimal
from verifier.protocol.entries.release import Release, validate_entry
from verifier.protocol.merkle import verify_inclusion
from verifier.protocol.note import MAX_NOTE_SIZE, NoteError, b64decode_strict, b64encode
from verifier.protocol.note import parse_note as parse_note_syntax
from verifier.protocol.state_proof import (
    StateEvidence,
    check_release_evidence,
    parse_state_member,
    state_member,
)
from verifier.protocol.trust import LogTrust

__all__ = [
    "HEADER",
    "MAX_PROOF_HASHES",
    "MAX_PROOF_SIZE",
    "RECEIPT_KIND",
    "ReceiptError",
    "TlogProof",
    "VerifiedReceipt",
    "format_tlog_proof",
    "make_receipt",
    "parse_tlog_proof",
    "verify_receipt",
]

HEADER = "c2sp.org/tlog-proof@v1"
RECEIPT_KIND = "tlog-receipt/v1"
HASH_SIZE = 32
MAX_PROOF_HASHES = 63
"""An inclusion proof in a tree of fewer than 2**63 leaves has at most 63 hashes."""
MAX_EXTRA_SIZE = 64 * 1024
MAX_PROOF_SIZE = MAX_NOTE_SIZE + 128 * 1024
"""Largest tlog-proof text accepted: a maximal note plus the header lines."""

_RECEIPT_MEMBERS = frozenset({"kind", "entry", "proof"})
_OPTIONAL_MEMBERS = frozenset({"package_state"})


class ReceiptError(ValueError):
    """A receipt or its tlog-proof text is malformed."""


@dataclass(frozen=True)
class TlogProof:
    """A parsed tlog-proof: entry index, inclusion proof hashes, checkpoint note, extra."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None


@dataclass(frozen=True)
class VerifiedReceipt:
    """The outcome of :func:`verify_receipt`: what was proven to be in which log state."""

    release: Release
    index: int
    checkpoint: Checkpoint
    package_state: StateEvidence | None = None  # verified, when the receipt carries one


def format_tlog_proof(
    index: int, hashes: Sequence[bytes], checkpoint: str, extra: bytes | None = None
) -> str:
    """Write a tlog-proof; the result always parses back with :func:`parse_tlog_proof`."""
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError(f"proof hashes must be {HASH_SIZE} bytes")
    if extra is not None and not extra:
        raise ValueError("extra data, when present, must be non-empty")
    lines = [HEADER]
    if extra is not None:
        lines.append(f"extra {b64encode(extra)}")
    lines.append(f"index {index}")
    lines.extend(b64encode(h) for h in hashes)
    text = "".join(line + "\n" for line in lines) + "\n" + checkpoint
    parse_tlog_proof(text)
    return text


def _decode(text: str, what: str) -> bytes:
    try:
        return b64decode_strict(text)
    except ValueError as e:
        raise ReceiptError(f"tlog-proof {what}: {e}") from e


def _parse_extra(lines: list[str]) -> bytes | None:
    """Pop and decode an ``extra <base64>`` line, if it is the next one."""
    if not lines or not lines[0].startswith("extra "):
        return None
    extra = _decode(lines.pop(0)[len("extra ") :], "extra")
    if not extra or len(extra) > MAX_EXTRA_SIZE:
        raise ReceiptError(f"tlog-proof extra must be 1..{MAX_EXTRA_SIZE} bytes")
    return extra


def _parse_index(lines: list[str]) -> int:
    if not lines or not lines[0].startswith("index "):
        raise ReceiptError("tlog-proof: missing 'index <n>' line")
    try:
        return parse_decimal(lines.pop(0)[len("index ") :], "tlog-proof index")
    except CheckpointError as e:
        raise ReceiptError(str(e)) from e


def _parse_hash(line: str) -> bytes:
    h = _decode(line, "hash")
    if len(h) != HASH_SIZE:
        raise ReceiptError(f"tlog-proof hash is {len(h)} bytes, want {HASH_SIZE}")
    return h


def parse_tlog_proof(text: str) -> TlogProof:
    """Parse a tlog-proof strictly (c2sp.org/tlog-proof, "Format"); ReceiptError if malformed.

    At most MAX_PROOF_SIZE characters and MAX_PROOF_HASHES hashes; the index is a canonical
    decimal; base64 must be canonical; the checkpoint must be a syntactically valid note
    (its signatures are checked by :func:`verify_receipt`, not here).
    """
    if len(text) > MAX_PROOF_SIZE:
        raise ReceiptError(f"tlog-proof larger than {MAX_PROOF_SIZE} characters")
    split = text.find("\n\n")
    if split < 0:
        raise ReceiptError("tlog-proof: no empty line before the checkpoint")
    lines, checkpoint = text[:split].split("\n"), text[split + 2 :]
    if lines.pop(0) != HEADER:
        raise ReceiptError(f"tlog-proof must start with {HEADER!r}")
    extra = _parse_extra(lines)
    index = _parse_index(lines)
    if len(lines) > MAX_PROOF_HASHES:
        raise ReceiptError(f"tlog-proof has more than {MAX_PROOF_HASHES} hashes")
    hashes = tuple(_parse_hash(line) for line in lines)
    try:
        parse_note_syntax(checkpoint)
    except NoteError as e:
        raise ReceiptError(f"tlog-proof checkpoint: {e}") from e
    return TlogProof(index, hashes, checkpoint, extra)


def make_receipt(
    entry: Mapping[str, Any], index: int, hashes: Sequence[bytes], checkpoint: str,
    package_state: StateEvidence | None = None,
) -> dict[str, Any]:
    """The receipt for ``entry`` logged at ``index``, proven against ``checkpoint``, with
    the package's state proven against the same checkpoint when given."""
    receipt = {
        "kind": RECEIPT_KIND,
        "entry": dict(entry),
        "proof": format_tlog_proof(index, hashes, checkpoint),
    }
    if package_state is not None:
        receipt["package_state"] = state_member(package_state)
    return receipt


def _check_receipt_shape(receipt: Any) -> tuple[dict[str, Any], str]:
    if not isinstance(receipt, dict):
        raise ReceiptError("receipt must be a JSON object")
    unknown = sorted(str(name) for name in receipt.keys() - _RECEIPT_MEMBERS
                     - _OPTIONAL_MEMBERS)
    if unknown:
        raise ReceiptError(f"receipt: unknown member(s) {', '.join(unknown)}")
    missing = sorted(_RECEIPT_MEMBERS - receipt.keys())
    if missing:
        raise ReceiptError(f"receipt: missing member(s) {', '.join(missing)}")
    if receipt["kind"] != RECEIPT_KIND:
        raise ReceiptError(f"receipt.kind must be {RECEIPT_KIND!r}")
    if not isinstance(receipt["entry"], dict):
        raise ReceiptError("receipt.entry must be an object")
    if not isinstance(receipt["proof"], str):
        raise ReceiptError("receipt.proof must be a string")
    return receipt["entry"], receipt["proof"]


def verify_receipt(receipt: Any, trust: LogTrust) -> VerifiedReceipt:
    """Verify a receipt offline against what the client trusts about the log.

    Raises ReceiptError (malformed receipt or tlog-proof), NoteError (checkpoint not signed
    as ``trust`` requires), CheckpointError (malformed checkpoint, origin is not the key name),
    EntryError (invalid entry or publisher signature), ProofError (the entry is not
    included at ``index`` under the checkpoint's root, RFC 9162 2.1.3.2), or
    StateProofError (a package_state member that is malformed or not proven).
    """
    entry, text = _check_receipt_shape(receipt)
    # Present means proven: a null or empty member is malformed, not "no state".
    evidence = (parse_state_member(receipt["package_state"]) if "package_state" in receipt
                else None)
    proof = parse_tlog_proof(text)
    checkpoint = trust.open(proof.checkpoint)
    release = validate_entry(entry)
    verify_inclusion(proof.index, checkpoint.size, release.leaf_hash, proof.hashes, checkpoint.root)
    if evidence is not None:
        check_release_evidence(checkpoint, release, proof.index, evidence)
    return VerifiedReceipt(release, proof.index, checkpoint, evidence)
