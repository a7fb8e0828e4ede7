"""A test log for the witness tests: leaves, signed checkpoints of any size, consistency
proofs, and add-checkpoint request bodies; forks share a prefix and then diverge."""

from __future__ import annotations

from collections.abc import Sequence

from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.merkle import combine, consistency_nodes, leaf_hash, root_of
from verifier.protocol.note import Signer, b64encode, generate_key, sign_note

ORIGIN = "example.com/log"


class TestLog:
    """A log of `size` leaves named by `tag` (two tags give two forks after `shared`)."""

    __test__ = False

    def __init__(self, signer: Signer | None = None, size: int = 64, tag: str = "a",
                 shared: int = 0) -> None:
        self.signer = signer or generate_key(ORIGIN)
        self.leaves = [leaf_hash(f"{'a' if i < shared else tag}-{i}".encode())
                       for i in range(size)]

    def root(self, size: int) -> bytes:
        return root_of(self.leaves[:size])

    def checkpoint(self, size: int, signers: Sequence[Signer] = ()) -> str:
        """The checkpoint of `size`, signed by the log's key then by `signers` (other keys,
        in that order)."""
        cp = Checkpoint(self.signer.name, size, self.root(size))
        return sign_note(cp.body(), [self.signer, *signers])

    def proof(self, old: int, new: int) -> list[bytes]:
        groups = consistency_nodes(old, new)
        table = {node: root_of(self.leaves[node[1] << node[0]:(node[1] + 1) << node[0]])
                 for group in groups for node in group}
        return combine(groups, table)

    def body(self, old: int, new: int, proof: Sequence[bytes] | None = None,
             note: str | None = None) -> bytes:
        hashes = self.proof(old, new) if proof is None else proof
        lines = [f"old {old}", *(b64encode(h) for h in hashes)]
        return ("\n".join(lines) + "\n\n" + (note or self.checkpoint(new))).encode()
