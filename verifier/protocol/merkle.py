"""Merkle tree hashing and proofs of RFC 6962 §2.1 as restated by RFC 9162 §2.1.

The tree over leaves D[0:n] has root MTH(D[0:n]) (RFC 9162 §2.1.1):

    MTH({})        = SHA-256()                                  (EMPTY_ROOT)
    MTH({d0})      = SHA-256(0x00 || d0)                        (leaf_hash)
    MTH(D[0:n])    = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) (node_hash)

where k is the largest power of two smaller than n. The distinct 0x00 / 0x01 prefixes keep a
leaf from ever hashing like an interior node (second-preimage resistance).

A `Node` (level, index) names the perfect subtree over leaves [index * 2**level,
(index + 1) * 2**level); only such nodes are ever stored. Any other subtree hash that a proof
needs is the right fold of a few perfect nodes, largest first. For example, a tree of size 7
has root fold([H(2, 0), H(1, 2), H(0, 6)]) and the inclusion proof of leaf 0 is

    [H(0, 1), H(1, 1), fold([H(1, 2), H(0, 6)])]

which `inclusion_nodes(0, 7)` describes as [[(0, 1)], [(1, 1)], [(1, 2), (0, 6)]].

Proof building follows Go's golang.org/x/mod/sumdb/tlog: `inclusion_nodes` /
`consistency_nodes` list the stored nodes a proof needs, storage reads them in one batch, and
`combine` folds them into the proof. Verification (`verify_inclusion`, `verify_consistency`)
takes trusted (index, size, root) values and a bare list of hashes. `RightEdge` is a tree
being appended to, kept as the few perfect-subtree hashes its root needs. Nothing here does
I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]


class ProofError(ValueError):
    """A proof does not verify, or its (index, size) arguments are invalid."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data), the hash of a leaf (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right), the hash of an interior node (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes, computed directly from the definition (RFC 9162 §2.1.1).

    This is the reference: it does not use perfect-node decomposition.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return leaves[lo]
    k = _split(hi - lo)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold of subtree hashes listed largest (leftmost) first.

    fold([a, b, c]) = node_hash(a, node_hash(b, c)). This turns the perfect nodes of
    `subtree_nodes(lo, hi)` into MTH(D[lo:hi]). fold([]) is EMPTY_ROOT, the MTH of no leaves.
    """
    if not hashes:
        return EMPTY_ROOT
    h = hashes[-1]
    for x in reversed(hashes[:-1]):
        h = node_hash(x, h)
    return h


def subtree_nodes(lo: int, hi: int) -> list[Node]:
    """The perfect nodes, largest (leftmost) first, whose right fold is MTH(D[lo:hi]).

    D[lo:hi] must be a subtree that occurs in RFC 9162 §2.1.1 recursion (or in a proof):
    lo is a multiple of the largest power of two <= hi - lo. Raises ValueError otherwise.
    An empty range gives an empty list.
    """
    if not 0 <= lo <= hi:
        raise ValueError(f"invalid leaf range [{lo}, {hi})")
    nodes: list[Node] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo & ((1 << level) - 1):
            raise ValueError(f"leaf range starting at {lo} is not aligned for level {level}")
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def range_nodes(lo: int, hi: int) -> list[Node]:
    """The perfect nodes covering D[lo:hi], left to right, each as large as the alignment of
    its first leaf and the leaves left allow (subtree_nodes for any range, aligned or not):
    what appending leaves lo..hi-1 to a tree of lo leaves adds, a few nodes at a time."""
    if not 0 <= lo <= hi:
        raise ValueError(f"invalid leaf range [{lo}, {hi})")
    nodes: list[Node] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)  # lo & -lo: lo's lowest set bit
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def root_nodes(size: int) -> list[Node]:
    """The perfect nodes whose right fold is the root of a tree of `size` leaves."""
    return subtree_nodes(0, size)


def inclusion_nodes(index: int, size: int) -> list[list[Node]]:
    """Stored nodes for the inclusion proof PATH(index, D[0:size]) of RFC 9162 §2.1.3.1.

    One group per proof hash, in proof order (from the leaf up); the proof hash is the
    right fold of its group. Raises ProofError unless 0 <= index < size.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    groups: list[list[Node]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            groups.append(subtree_nodes(lo + k, hi))
            hi = lo + k
        else:
            groups.append(subtree_nodes(lo, lo + k))
            lo += k
    groups.reverse()
    return groups


def consistency_nodes(first: int, second: int) -> list[list[Node]]:
    """Stored nodes for the consistency proof PROOF(first, D[0:second]), RFC 9162 §2.1.4.1.

    One group per proof hash, in proof order (SUBPROOF order, deepest first). The proof is
    empty when first == 0 or first == second. Raises ProofError unless 0 <= first <= second.
    """
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    groups: list[list[Node]] = []
    lo, hi, m, whole = 0, second, first, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            groups.append(subtree_nodes(lo + k, hi))
            hi = lo + k
        else:
            groups.append(subtree_nodes(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        groups.append(subtree_nodes(lo, hi))
    groups.reverse()
    return groups


def combine(groups: Sequence[Sequence[Node]], hashes: Mapping[Node, bytes]) -> list[bytes]:
    """The proof hashes: the right fold of each group's node hashes, looked up in `hashes`.

    Raises KeyError if a node is missing from `hashes`.
    """
    return [fold([hashes[node] for node in group]) for group in groups]


def _check_hash(name: str, h: bytes) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ProofError(f"{name} is not a {HASH_SIZE}-byte hash")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof hash {i}", h)


def _inclusion_length(index: int, size: int) -> int:
    """Length of PATH(index, D[0:size]): levels below where the paths to index and size - 1
    diverge, plus one hash per left sibling above (RFC 9162 §2.1.3.1)."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Check that `leaf` (a leaf hash) is at `index` in the tree of `size` with `root`.

    Implements RFC 9162 §2.1.3.2. `index` and the pair (`size`, `root`) must come from trusted
    sources (a verified checkpoint): a root hash does not commit to the tree size by itself, and
    a proof against the root of size n can also verify for some other size with that same root.
    `proof` is the bare list of hashes. Raises ProofError.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    _check_hash("leaf hash", leaf)
    _check_hash("root hash", root)
    want = _inclusion_length(index, size)
    if len(proof) != want:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, want {want}")
    _check_proof_hashes(proof)
    if not hmac.compare_digest(_inclusion_root(index, size, leaf, proof), root):
        raise ProofError(f"inclusion proof for leaf {index} does not match the root of size {size}")


def _inclusion_root(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Steps 2-5 of RFC 9162 §2.1.3.2: the root that `proof` implies for `leaf`."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof for leaf {index} is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"inclusion proof for leaf {index} is too short")
    return r


def _consistency_length(first: int, second: int) -> int:
    """Length of PROOF(first, D[0:second]) for 0 < first < second (RFC 9162 §2.1.4.1)."""
    shift = (first & -first).bit_length() - 1
    length = _inclusion_length(first - 1, second) - shift
    return length if first == 1 << shift else length + 1


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Check that the tree of size `first` with `first_root` is a prefix of the tree of size
    `second` with `second_root`.

    Implements RFC 9162 §2.1.4.2 for 0 < first < second; each (size, root) pair must come from
    one trusted checkpoint, as for `verify_inclusion`. For first == second the proof must be
    empty and the roots equal; for first == 0 the proof must be empty and `first_root` must be
    EMPTY_ROOT (every tree extends the empty one). Raises ProofError.
    """
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    _check_hash("first root", first_root)
    _check_hash("second root", second_root)
    if first in (0, second):
        _verify_trivial_consistency(first, second, first_root, second_root, proof)
        return
    want = _consistency_length(first, second)
    if len(proof) != want:
        raise ProofError(f"consistency proof has {len(proof)} hashes, want {want}")
    _check_proof_hashes(proof)
    if first & (first - 1) == 0:
        proof = [first_root, *proof]
    fr, sr = _consistency_roots(first, second, proof)
    if not hmac.compare_digest(fr, first_root):
        raise ProofError(f"consistency proof does not match the root of size {first}")
    if not hmac.compare_digest(sr, second_root):
        raise ProofError(f"consistency proof does not match the root of size {second}")


def _verify_trivial_consistency(first: int, second: int, first_root: bytes,
                                second_root: bytes, proof: Sequence[bytes]) -> None:
    if proof:
        raise ProofError(f"consistency proof from size {first} to {second} must be empty")
    if first == 0 and not hmac.compare_digest(first_root, EMPTY_ROOT):
        raise ProofError("root of size 0 is not the empty-tree root")
    if first == second and not hmac.compare_digest(first_root, second_root):
        raise ProofError(f"two different roots for size {first}")


def _consistency_roots(first: int, second: int, proof: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Steps 3-7 of RFC 9162 §2.1.4.2: the (first, second) roots that `proof` implies.

    `proof` has the first root prepended when `first` is a power of two. Raises ProofError
    if its length does not match the shape of the two trees.
    """
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from size {first} to {second} is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"consistency proof from size {first} to {second} is too short")
    return fr, sr


class RightEdge:
    """The right edge of the tree over the leaves appended so far, as a compact range.

    One perfect-subtree hash per set bit of `size`, largest (leftmost) first: the perfect nodes
    of `root_nodes(size)`, whose right fold is MTH(D[0:size]) (RFC 9162 §2.1.1). Appending a
    perfect subtree (`extend`) merges the trailing subtrees of its size, as a binary counter
    carries, so memory stays at most one hash per bit of the size.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count() or any(
                len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"{len(hashes)} edge hashes do not fit a tree of size {size}")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> RightEdge:
        return RightEdge(self.size, self.hashes)

    def extend(self, first: int, count: int, nodes: Sequence[bytes]) -> None:
        """Append leaves first..first+count-1, given as the hashes of their
        `range_nodes(first, first + count)` (tiles.range_hashes computes them)."""
        levels = [level for level, _ in range_nodes(first, first + count)]
        if first != self.size or len(nodes) != len(levels):
            raise ValueError(f"{len(nodes)} hashes of leaves {first}.. do not extend a tree "
                             f"of size {self.size}")
        for level, h in zip(levels, nodes, strict=True):
            self._push(level, h)

    def _push(self, level: int, h: bytes) -> None:
        """Append a perfect subtree of 2**level leaves; `size` is a multiple of 2**level."""
        size = self.size >> level
        while size & 1:  # merge with the equal-sized subtrees at the right edge
            h = node_hash(self.hashes.pop(), h)
            size >>= 1
        self.hashes.append(h)
        self.size += 1 << level

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT
