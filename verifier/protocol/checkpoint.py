"""Transparency log checkpoints, as specified by c2sp.org/tlog-checkpoint (v1.0.0).

A checkpoint is a signed note (c2sp.org/signed-note) whose body is::

    <origin>
    <tree size, ASCII decimal, no leading zeros>
    <base64 RFC 6962 root hash>
    [<extension line>...]

Each line ends in "\\n"; extension lines are optional, opaque and non-empty. The log's key
name equals the origin, so :func:`open_checkpoint` requires it. Parsing is strict: the size
must re-format to the same text and the root must be canonical base64 of 32 bytes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from verifier.protocol.note import (
    NoteSigner,
    Verifier,
    b64decode_strict,
    b64encode,
    open_note,
    sign_note,
)

__all__ = [
    "MAX_TREE_SIZE",
    "Checkpoint",
    "CheckpointError",
    "open_checkpoint",
    "parse_checkpoint",
    "parse_decimal",
    "sign_checkpoint",
]

HASH_SIZE = 32
MAX_TREE_SIZE = (1 << 63) - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


class CheckpointError(ValueError):
    """A checkpoint body is malformed, or its origin is not the expected log's."""


def parse_decimal(text: str, what: str) -> int:
    """Parse a canonical non-negative decimal below 2**63 (no sign, spaces, leading zeros)."""
    if not _DECIMAL.fullmatch(text):
        raise CheckpointError(f"malformed {what} {text[:40]!r}: want a decimal, no leading zeros")
    value = int(text)
    if value > MAX_TREE_SIZE:
        raise CheckpointError(f"{what} {text!r} is not below 2**63")
    return value


def _check_origin(origin: str) -> None:
    if not origin:
        raise CheckpointError("checkpoint origin is empty")
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cs") for c in origin):
        raise CheckpointError(f"checkpoint origin {origin[:100]!r} has spaces or controls")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size, 32-byte root hash, and extension lines.

    The constructor validates every field, so :meth:`body` always parses back.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size {self.size} out of range [0, 2**63)")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root hash must be {HASH_SIZE} bytes, not {len(self.root)}")
        for line in self.extensions:
            _check_extension(line)

    def body(self) -> str:
        """The note text (tlog-checkpoint, "Note text"), ending in "\\n"."""
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


def _check_extension(line: str) -> None:
    if not line:
        raise CheckpointError("checkpoint extension lines must be non-empty")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in line):
        raise CheckpointError(f"checkpoint extension line {line[:100]!r} has control characters")


def _parse_root(text: str) -> bytes:
    try:
        root = b64decode_strict(text)
    except ValueError as e:
        raise CheckpointError(f"malformed checkpoint root hash: {e}") from e
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, want {HASH_SIZE}")
    return root


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse a checkpoint note body (tlog-checkpoint, "Note text"); strict, CheckpointError."""
    if not body.endswith("\n"):
        raise CheckpointError("checkpoint body must end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint body needs origin, size and root hash lines")
    origin, size, root = lines[:3]
    return Checkpoint(
        origin=origin,
        size=parse_decimal(size, "tree size"),
        root=_parse_root(root),
        extensions=tuple(lines[3:]),
    )


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> str:
    """Sign the checkpoint as a note; the signer's key name must equal the origin."""
    if signer.name != cp.origin:
        raise CheckpointError(f"key name {signer.name!r} is not the origin {cp.origin!r}")
    return sign_note(cp.body(), [signer])


def open_checkpoint(data: bytes | str, verifier: Verifier) -> Checkpoint:
    """Verify a signed checkpoint with the log's key and parse it.

    The note must carry a valid signature by ``verifier`` (other signatures, such as witness
    cosignatures, are ignored; NoteError otherwise), and its origin must equal the key name
    (tlog-checkpoint, "Signatures"; CheckpointError otherwise).
    """
    note = open_note(data, [verifier])
    cp = parse_checkpoint(note.text)
    if cp.origin != verifier.name:
        raise CheckpointError(f"checkpoint origin {cp.origin!r} is not the log {verifier.name!r}")
    return cp
