"""The last trusted checkpoint and the rules for replacing it. No I/O.

A client that keeps state moves only forward: a new checkpoint replaces the trusted one
only when a consistency proof (RFC 9162 §2.1.4) shows the old tree is a prefix of the new.
A smaller tree (rollback), a different root at the same size (fork) or a proof that does not
verify is misbehaviour; the two signed checkpoints and the proof are the evidence to publish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


# The one layout of evidence, whoever finds the misbehaviour (tracking, audit, monitor): a
# directory of files, each re-checkable by anyone with the log's public key.
REASON = "reason.txt"  # the finding, then facts (sizes, indices), one per line
CHECKPOINT = "checkpoint"  # the signed checkpoint served entries and tiles are judged against
OLD_CHECKPOINT = "old-checkpoint"  # two signed checkpoints that do not extend each other:
NEW_CHECKPOINT = "new-checkpoint"  # the one trusted before, and the one served now
CONSISTENCY_PROOF = "consistency-proof"  # "consistency OLD NEW" then base64 hashes
COMPUTED_ROOT = "computed-root"  # "size N" and "root B64" the verifier computed itself
# entry-<i>: an entry as served; entry-<i>.tlog-proof: its inclusion proof in CHECKPOINT as a
# C2SP tlog-proof; log-tile-<L>-<N> / computed-tile-<L>-<N>: a hash tile as served and as
# recomputed from the entries.


def entry_file(index: int) -> str:
    """The entry at `index`, as the log served it."""
    return f"entry-{index}"


def entry_proof_file(index: int) -> str:
    """Its inclusion proof in a signed checkpoint, as a C2SP tlog-proof."""
    return f"entry-{index}.tlog-proof"


def tile_files(level: int, n: int) -> tuple[str, str]:
    """The tile (level, n) as the log served it, and as the verifier recomputed it."""
    return f"log-tile-{level}-{n}", f"computed-tile-{level}-{n}"


def evidence(reason: str, *facts: str, **parts: Any) -> dict[str, str | bytes]:
    """The evidence files (name -> content) of one finding: reason.txt and `parts`."""
    return {REASON: "".join(f"{line}\n" for line in (reason, *facts)), **evidence_parts(**parts)}


def evidence_parts(*, checkpoint: str | None = None, old: Trusted | None = None,
                   new: Trusted | None = None,
                   proof: tuple[int, int, Sequence[bytes]] | None = None,
                   computed_root: tuple[int, bytes] | None = None,
                   entries: Mapping[int, bytes] | None = None,
                   entry_proofs: Mapping[int, str] | None = None,
                   tiles: Mapping[tuple[int, int], tuple[bytes, bytes]] | None = None,
                   ) -> dict[str, str | bytes]:
    """Evidence files in the layout above, for a finding whose reason is written later."""
    files: dict[str, str | bytes] = {}
    if checkpoint is not None:
        files[CHECKPOINT] = checkpoint
    if old is not None:
        files[OLD_CHECKPOINT] = old.note
    if new is not None:
        files[NEW_CHECKPOINT] = new.note
    if proof is not None:
        first, second, hashes = proof
        files[CONSISTENCY_PROOF] = (f"consistency {first} {second}\n" +
                                    "".join(b64encode(h) + "\n" for h in hashes))
    if computed_root is not None:
        files[COMPUTED_ROOT] = f"size {computed_root[0]}\nroot {b64encode(computed_root[1])}\n"
    files.update((entry_file(i), leaf) for i, leaf in (entries or {}).items())
    files.update((entry_proof_file(i), text) for i, text in (entry_proofs or {}).items())
    for (level, n), (served, computed) in (tiles or {}).items():
        served_name, computed_name = tile_files(level, n)
        files[served_name], files[computed_name] = served, computed
    return files


def fork_evidence(reason: str, old: Trusted, new: Trusted,
                  proof: Sequence[bytes] | None = None) -> dict[str, str | bytes]:
    """Evidence that `new` does not extend `old`: both signed notes, the proof, the reason."""
    return evidence(reason, f"old size {old.size}, new size {new.size}", old=old, new=new,
                    proof=None if proof is None else (old.size, new.size, proof))


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
            fork_evidence("origin changed", old, new))
    if new.size < old.size:
        reason = f"rollback: the log now shows size {new.size}, it already showed {old.size}"
        raise LogMisbehaviour(reason, fork_evidence(reason, old, new))
    if new.size == old.size:
        if new.root != old.root:
            reason = f"fork: two different roots signed for size {new.size}"
            raise LogMisbehaviour(reason, fork_evidence(reason, old, new))
        return
    try:
        verify_consistency(old.size, new.size, old.root, new.root, proof)
    except ProofError as exc:
        reason = f"inconsistent: size {new.size} does not extend size {old.size} ({exc})"
        raise LogMisbehaviour(reason, fork_evidence(reason, old, new, proof)) from exc
