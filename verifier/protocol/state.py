"""The last trusted checkpoint and the rules for replacing it. No I/O.

A client that keeps state moves only forward: a new checkpoint replaces the trusted one
only when a consistency proof (RFC 9162 §2.1.4) shows the old tree is a prefix of the new.
A smaller tree (rollback), a different root at the same size (fork) or a proof that does not
verify is misbehaviour; the two signed checkpoints and the proof are the evidence to publish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from verifier.errors import LogMisbehaviour
from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.merkle import ProofError, verify_consistency
from verifier.protocol.note import b64encode


@dataclass(frozen=True)
class Trusted:
    """A checkpoint whose signature was verified, with its signed note text verbatim."""

    checkpoint: Checkpoint
    note: str

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


def evidence(reason: str, old: Trusted, new: Trusted,
             proof: Sequence[bytes] | None = None) -> dict[str, str | bytes]:
    """Files that let anyone re-check the claim: both signed notes, the proof, the reason."""
    files: dict[str, str | bytes] = {
        "reason.txt": f"{reason}\nold size {old.size}, new size {new.size}\n",
        "old-checkpoint": old.note,
        "new-checkpoint": new.note,
    }
    if proof is not None:
        files["consistency-proof"] = (
            f"consistency {old.size} {new.size}\n" + "".join(b64encode(h) + "\n" for h in proof))
    return files


def needs_proof(old: Trusted, new: Trusted) -> bool:
    """Whether replacing `old` by `new` needs a consistency proof from the log."""
    return new.size > old.size


def check_update(old: Trusted, new: Trusted, proof: Sequence[bytes] = ()) -> None:
    """Raise LogMisbehaviour (with evidence) unless `new` extends `old`.

    `proof` is the consistency proof from old.size to new.size; it is needed only when
    needs_proof(old, new).
    """
    if old.checkpoint.origin != new.checkpoint.origin:
        raise LogMisbehaviour(
            f"origin changed from {old.checkpoint.origin!r} to {new.checkpoint.origin!r}",
            evidence("origin changed", old, new))
    if new.size < old.size:
        reason = f"rollback: the log now shows size {new.size}, it already showed {old.size}"
        raise LogMisbehaviour(reason, evidence(reason, old, new))
    if new.size == old.size:
        if new.root != old.root:
            reason = f"fork: two different roots signed for size {new.size}"
            raise LogMisbehaviour(reason, evidence(reason, old, new))
        return
    try:
        verify_consistency(old.size, new.size, old.root, new.root, proof)
    except ProofError as exc:
        reason = f"inconsistent: size {new.size} does not extend size {old.size} ({exc})"
        raise LogMisbehaviour(reason, evidence(reason, old, new, proof)) from exc
