"""The checks of a witness's add-checkpoint call, c2sp.org/tlog-witness. No I/O, no clock.

A request body is::

    old <size>
    <base64 consistency proof hash>      (0 to 63 lines)

    <checkpoint note, signed by the log>

and the witness answers, in this order (the spec's; `Refusal.status` is the HTTP status):

- 400 the body is malformed (here: `parse_add_checkpoint`);
- 404 the origin is not a log it witnesses; 403 no signature verifies with a trusted key of
  that origin (signatures by unknown keys are ignored) (`check_signed`);
- 400 old size > checkpoint size; 409 (body: the stored size) old size != the size it last
  cosigned; 409 same size, other root (a fork); 422 the consistency proof from its stored
  checkpoint does not verify, or is not empty from size 0 (`check_extends`).

Refusals of a checkpoint the log did sign that the log's own honest use cannot cause (the
fork 409 and the 422) are `evidence`, worth keeping. The 409 on the old size is not: the spec
makes `old 0` the way to ask for the stored size, and an honest log retrying after a lost
answer gets it too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from verifier.protocol.checkpoint import (
    Checkpoint,
    CheckpointError,
    parse_checkpoint,
    parse_decimal,
)
from verifier.protocol.merkle import EMPTY_ROOT, ProofError, verify_consistency
from verifier.protocol.note import NoteError, Verifier, b64decode_strict, parse_note

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_CLOCK_SKEW",
    "MAX_NOTE_SIGNATURES",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Refusal",
    "Stored",
    "check_extends",
    "check_signed",
    "clock_behind",
    "cosign_time",
    "cosigned_note",
    "format_size",
    "origin_hash",
    "parse_add_checkpoint",
    "trusted_keys",
]

MAX_PROOF_LINES = 63
"""The spec's limit: a consistency proof in a tree of at most 2**63 leaves."""
MAX_NOTE_SIGNATURES = 32
"""Signature lines a submitted checkpoint may carry: a log's key(s) and some cosignatures;
more is a request to make the witness parse (and keep) junk."""
SIZE_CONTENT_TYPE = "text/x.tlog.size"
DEFAULT_MAX_BODY = 16 * 1024
"""A request body limit that fits a checkpoint with some signature lines and 63 proof lines
(under 4 KiB) with room to spare."""
DEFAULT_MAX_CONNECTIONS = 256
"""Connections a witness server keeps open at once: a log keeps one or a few, monitors poll
now and then; this bounds the sockets, buffers and tasks a crowd of clients can pin."""
HASH_SIZE = 32


class Refusal(Exception):
    """Why the witness refuses a request: HTTP status, a short reason, and whether the
    request is evidence to keep (the log did sign its checkpoint)."""

    def __init__(self, status: int, reason: str, *, evidence: bool = False,
                 fork: bool = False, size: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.evidence = evidence or fork
        self.fork = fork
        """Same size, other root: the log signed two trees of one size (only its key can)."""
        self.size = size
        """The stored size, for a 409 on the old size (the body the spec requires)."""


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint request: old size, proof hashes, the note as submitted."""

    old: int
    proof: tuple[bytes, ...]
    note: str
    checkpoint: Checkpoint


@dataclass(frozen=True)
class Stored:
    """What the witness last cosigned for an origin, and the timestamp it used."""

    size: int
    root: bytes
    timestamp: int


def _bad(reason: str) -> Refusal:
    return Refusal(400, reason)


def _parse_old(line: str) -> int:
    if not line.startswith("old "):
        raise _bad("the body must start with an 'old <size>' line")
    try:
        return parse_decimal(line[4:], "old size")
    except CheckpointError as exc:
        raise _bad(str(exc)) from exc


def _parse_proof(lines: Sequence[str]) -> tuple[bytes, ...]:
    if len(lines) > MAX_PROOF_LINES:
        raise _bad(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for n, line in enumerate(lines, 1):
        try:
            h = b64decode_strict(line)
        except ValueError as exc:
            raise _bad(f"consistency proof line {n} is not base64: {exc}") from exc
        if len(h) != HASH_SIZE:
            raise _bad(f"consistency proof line {n} is {len(h)} bytes, want {HASH_SIZE}")
        proof.append(h)
    return tuple(proof)


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint body; Refusal(400) if it is malformed in any way."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("the body is not UTF-8") from exc
    head, sep, note_text = text.partition("\n\n")
    if not sep:
        raise _bad("no empty line between the old size and proof and the checkpoint")
    old_line, *proof_lines = head.split("\n")
    old = _parse_old(old_line)
    proof = _parse_proof(proof_lines)
    try:
        note = parse_note(note_text)
        checkpoint = parse_checkpoint(note.text)
    except (NoteError, CheckpointError) as exc:
        raise _bad(f"malformed checkpoint: {exc}") from exc
    if len(note.signatures) > MAX_NOTE_SIGNATURES:
        raise _bad(f"the checkpoint has more than {MAX_NOTE_SIGNATURES} signature lines")
    return AddCheckpoint(old, proof, note_text, checkpoint)


def trusted_keys(keys: Iterable[Verifier]) -> dict[str, tuple[Verifier, ...]]:
    """The log keys by origin: a log's key is named after its origin (tlog-checkpoint); a
    log may have several (rotation)."""
    by_origin: dict[str, list[Verifier]] = {}
    for key in keys:
        by_origin.setdefault(key.name, []).append(key)
    return {origin: tuple(ks) for origin, ks in by_origin.items()}


def check_signed(req: AddCheckpoint, keys: Mapping[str, Sequence[Verifier]]) -> None:
    """Refusal(404) for an origin it does not witness; Refusal(403) unless a signature by one
    of the origin's keys verifies. Signatures by other keys are ignored, as are invalid
    ones by a trusted key if another verifies (the spec's "none of the signatures")."""
    trusted = keys.get(req.checkpoint.origin)
    if not trusted:
        raise Refusal(404, "unknown log origin")
    note = parse_note(req.note)
    msg = note.text.encode("utf-8")
    for sig in note.signatures:
        for key in trusted:
            if (sig.name == key.name and sig.key_id == key.key_id
                    and key.verify(msg, sig.signature)):
                return
    raise Refusal(403, "no valid signature by a trusted key of this log")


def check_extends(req: AddCheckpoint, stored: Stored | None) -> None:
    """Check a signed request against what the witness last cosigned for its origin
    (`stored`, None if nothing yet, which counts as size 0). Refusal unless it may cosign."""
    cp = req.checkpoint
    if req.old > cp.size:
        raise _bad(f"old size {req.old} is larger than the checkpoint size {cp.size}")
    size = stored.size if stored is not None else 0
    if req.old != size:
        raise Refusal(409, f"old size {req.old} is not the cosigned size {size}", size=size)
    if (stored is not None and cp.size == stored.size
            and not hmac.compare_digest(cp.root, stored.root)):
        raise Refusal(409, f"a checkpoint of size {cp.size} with another root was "
                               "cosigned: this one is a fork", fork=True)
    if req.old == 0:
        if req.proof:
            raise Refusal(422, "the consistency proof from size 0 must be empty",
                          evidence=True)
        if cp.size == 0 and not hmac.compare_digest(cp.root, EMPTY_ROOT):
            raise Refusal(422, "an empty tree's root must be SHA-256 of nothing",
                          evidence=True)
        return
    assert stored is not None  # req.old == stored size > 0
    try:
        verify_consistency(stored.size, cp.size, stored.root, cp.root, req.proof)
    except ProofError as exc:
        raise Refusal(422, f"consistency proof from size {stored.size} does not verify: "
                           f"{exc}", evidence=True) from exc


MAX_CLOCK_SKEW = 300
"""Seconds the last cosignature's time may be ahead of the clock and still be reused.

Within it, a clock that stepped back a little (an NTP step, a VM resumed) does not make a log
see its witness's times go back; the cosignature then claims at most 5 minutes more freshness
than is true, well inside any max-age a client would set. Beyond it, the stored time is not
a small step but a clock that was (or is) wrong, and reusing it would stamp every later
cosignature with that bad time for ever (a far-future time makes a frozen view look fresh)."""


def clock_behind(now: int, stored: Stored | None) -> bool:
    """Whether the last cosignature's time is more than MAX_CLOCK_SKEW ahead of `now`."""
    return stored is not None and stored.timestamp > now + MAX_CLOCK_SKEW


def cosign_time(now: int, stored: Stored | None) -> int:
    """The cosignature's timestamp: the clock, but not before the last one used for this log
    when that is at most MAX_CLOCK_SKEW ahead, so small clock steps back never show.

    Further ahead (`clock_behind`), the clock is used as it is, and the times go back: the
    earlier cosignature's time was wrong, or the clock is now. Refusing instead would stop
    the witness for ever after one jump ahead that the operator then fixed (the clock can
    never catch up with a far-future time); and a time that is too early only makes
    cosignatures look stale, which clients refuse (fail closed), while one too late would
    make them look fresh. The service logs it loudly, for the operator to check the clock."""
    if stored is None or clock_behind(now, stored):
        return now
    return max(now, stored.timestamp)


def cosigned_note(note: str, cosignature_line: str) -> str:
    """The note as submitted, with the witness's cosignature line appended."""
    return note + cosignature_line


def format_size(size: int) -> bytes:
    """The body of a 409 on the old size: the cosigned size in decimal and a newline."""
    return f"{size}\n".encode()


def origin_hash(origin: str) -> str:
    """The path segment naming a log on the read endpoint: hex SHA-256 of its origin line."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()
