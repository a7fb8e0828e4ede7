"""One evidence layout, whoever finds the misbehaviour: names and contents anyone can re-check."""

from __future__ import annotations

from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.merkle import EMPTY_ROOT
from verifier.protocol.note import b64encode, generate_key
from verifier.protocol.state import Trusted, evidence, evidence_parts, fork_evidence

LOG = generate_key("log.example.org/evidence")


def trusted(size: int, root: bytes = EMPTY_ROOT) -> Trusted:
    cp = Checkpoint(LOG.name, size, root)
    return Trusted(cp, sign_checkpoint(cp, LOG))


def test_fork_evidence_keeps_both_notes_and_the_proof() -> None:
    old, new = trusted(3, b"\1" * 32), trusted(5, b"\2" * 32)
    files = fork_evidence("proof does not verify", old, new, [b"\3" * 32])
    assert files == {
        "reason.txt": "proof does not verify\nold size 3, new size 5\n",
        "old-checkpoint": old.note, "new-checkpoint": new.note,
        "consistency-proof": "consistency 3 5\n" + b64encode(b"\3" * 32) + "\n"}


def test_entry_tile_and_root_files_share_one_naming() -> None:
    note = trusted(300).note
    files = evidence("entry 7 is bad", "one fact", checkpoint=note, entries={7: b"leaf"},
                     entry_proofs={7: "c2sp.org/tlog-proof@v1\n..."},
                     tiles={(1, 0): (b"served", b"computed")},
                     computed_root=(300, b"\4" * 32))
    assert files["reason.txt"] == "entry 7 is bad\none fact\n"
    assert files["checkpoint"] == note
    assert files["entry-7"] == b"leaf"
    assert str(files["entry-7.tlog-proof"]).startswith("c2sp.org/tlog-proof@v1\n")
    assert (files["log-tile-1-0"], files["computed-tile-1-0"]) == (b"served", b"computed")
    assert files["computed-root"] == "size 300\nroot " + b64encode(b"\4" * 32) + "\n"
    assert "reason.txt" not in evidence_parts(entries={1: b"x"})
