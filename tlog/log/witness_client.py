"""One add-checkpoint request to a witness (c2sp.org/tlog-witness), and what it answered.

Only the HTTP exchange and the parsing of the answer live here; what to send and what to
do with the answer is tlog.log.witness. Answers are bounded (MAX_ANSWER bytes) and every
request has a deadline (the session's timeout), so a slow or hostile witness costs the
log one task for at most that long, never memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from verifier.protocol.checkpoint import CheckpointError, parse_decimal
from verifier.protocol.note import SIGNATURE_PREFIX, NoteError, Signature, b64encode, parse_note
from verifier.protocol.witness import MAX_PROOF_LINES, SIZE_CONTENT_TYPE

MAX_ANSWER = 64 * 1024  # bytes of a witness's answer: a few signature lines, or a size


class WitnessError(Exception):
    """The witness could not be reached or answered something unusable (a failure of
    that witness, never of the log: the task retries at its next round)."""


@dataclass(frozen=True)
class Cosigned:
    """A 200: the signature lines the witness returned, not verified yet."""

    signatures: tuple[Signature, ...]


@dataclass(frozen=True)
class Conflict:
    """A 409: `size` is the size the witness says it last cosigned, or None when the 409
    carried no size (tlog-witness sends one only for a wrong old size)."""

    size: int | None


def request_body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """`old <size>`, the consistency proof lines, an empty line, the checkpoint note."""
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"a consistency proof of {len(proof)} hashes is too long")
    lines = [f"old {old}\n", *(b64encode(h) + "\n" for h in proof), "\n", note]
    return "".join(lines).encode()


async def add_checkpoint(session: aiohttp.ClientSession, url: str, old: int,
                         proof: Sequence[bytes], note: str) -> Cosigned | Conflict:
    """POST the checkpoint `note` to the witness at `url` (its submission prefix)."""
    body = request_body(old, proof, note)
    try:
        async with session.post(url.rstrip("/") + "/add-checkpoint", data=body,
                                headers={"Content-Type": "text/plain; charset=utf-8"},
                                allow_redirects=False) as resp:
            answer = await _read_capped(resp)
            status, content_type = resp.status, resp.content_type
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise WitnessError(f"unreachable: {type(exc).__name__}: {exc}"[:300]) from exc
    if len(answer) > MAX_ANSWER:
        raise WitnessError(f"answer of more than {MAX_ANSWER} bytes (HTTP {status})")
    if status == 200:
        return Cosigned(_signatures(note, answer))
    if status == 409:
        return Conflict(_size(answer) if content_type == SIZE_CONTENT_TYPE else None)
    shown = answer[:200].decode("utf-8", "replace").strip()
    raise WitnessError(f"HTTP {status}: {shown!r}")


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The body, or its first MAX_ANSWER + 1 bytes when longer (read no further)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER:
        chunk = await resp.content.read(MAX_ANSWER + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _signatures(note: str, answer: bytes) -> tuple[Signature, ...]:
    """The signature lines of a 200, parsed as the spec suggests: appended to the note."""
    mine = len(parse_note(note).signatures)
    try:
        text = answer.decode("utf-8")
        if not text.endswith("\n") or not text.startswith(SIGNATURE_PREFIX):
            raise NoteError("not signature lines ending in a newline")
        return parse_note(note + text).signatures[mine:]
    except (UnicodeDecodeError, NoteError) as exc:
        raise WitnessError(f"malformed cosignature lines: {exc}"[:300]) from exc


def _size(answer: bytes) -> int:
    """The size of a 409's `text/x.tlog.size` body: a tree size as a checkpoint writes it
    (below 2**63, what the log's bigint columns hold), then a newline."""
    text = answer.decode("ascii", "replace")
    try:
        if not text.endswith("\n"):
            raise CheckpointError(f"malformed size {text[:40]!r}: no newline")
        return parse_decimal(text[:-1], "size")
    except CheckpointError as exc:
        raise WitnessError(f"409 with a size no tree has: {exc}") from exc
