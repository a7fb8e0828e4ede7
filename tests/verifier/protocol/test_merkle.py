"""verifier.protocol.merkle: RFC 6962 vectors, every proof of every small tree, and pymerkle as a
second
implementation. A proof that verifies when one bit of it is wrong is a forgery waiting to
happen, so each proof hash is corrupted in turn and must be rejected."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import VECTORS as VECTOR_DIR
from verifier.protocol.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Node,
    ProofError,
    RightEdge,
    combine,
    consistency_nodes,
    fold,
    inclusion_nodes,
    leaf_hash,
    node_hash,
    range_nodes,
    root_nodes,
    root_of,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)
from verifier.protocol.tiles import TreeBuilder, range_hashes

ROOT_VECTORS = json.loads((VECTOR_DIR / "rfc6962_roots.json").read_text())
MAX_EXHAUSTIVE = 130


def node_table(leaf_hashes: Sequence[bytes]) -> dict[Node, bytes]:
    """Every perfect node hash of the tree over `leaf_hashes`, by (level, index)."""
    table: dict[Node, bytes] = {}
    row, level = list(leaf_hashes), 0
    while row:
        table.update(((level, i), h) for i, h in enumerate(row))
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        level += 1
    return table


def flip(proof: list[bytes], pos: int, bit: int) -> list[bytes]:
    h = bytearray(proof[pos])
    h[(bit // 8) % HASH_SIZE] ^= 1 << (bit % 8)
    return [*proof[:pos], bytes(h), *proof[pos + 1:]]


def accepted(verify: Callable[..., None], *args: object) -> bool:
    """Whether `verify` accepts; cheaper than pytest.raises in the exhaustive loops."""
    try:
        verify(*args)
    except ProofError:
        return False
    return True


LEAVES = [leaf_hash(i.to_bytes(2, "big")) for i in range(MAX_EXHAUSTIVE + 1)]
TABLE = node_table(LEAVES)
ROOTS = [root_of(LEAVES[:n]) for n in range(MAX_EXHAUSTIVE + 2)]


def test_rfc6962_reference_roots_for_every_prefix_size() -> None:
    leaves = [leaf_hash(bytes.fromhex(x)) for x in ROOT_VECTORS["leaves"]]
    table = node_table(leaves)
    assert [v["size"] for v in ROOT_VECTORS["roots"]] == list(range(1, 9))
    for vector in ROOT_VECTORS["roots"]:
        size, want = vector["size"], bytes.fromhex(vector["root"])
        assert root_of(leaves[:size]) == want
        assert fold([table[n] for n in root_nodes(size)]) == want


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert root_of([]) == EMPTY_ROOT
    assert fold([]) == EMPTY_ROOT
    assert root_nodes(0) == []


def test_leaf_and_node_hashes_use_distinct_prefixes() -> None:
    assert leaf_hash(b"ab") == hashlib.sha256(b"\x00ab").digest()
    left, right = b"a" * 32, b"b" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


def test_interior_node_submitted_as_leaf_does_not_forge_root() -> None:
    """Second preimage: the 64 bytes under an interior node, presented as leaf data, must not
    reproduce the root (RFC 6962 §2.1 domain separation)."""
    leaves = LEAVES[:4]
    root = root_of(leaves)
    forged = [leaf_hash(leaves[0] + leaves[1]), leaf_hash(leaves[2] + leaves[3])]
    assert root_of(forged) != root
    assert leaf_hash(leaves[0] + leaves[1]) != node_hash(leaves[0], leaves[1])
    with pytest.raises(ProofError):
        verify_inclusion(0, 2, forged[0], [node_hash(leaves[2], leaves[3])], root)
    with pytest.raises(ProofError):
        verify_inclusion(0, 1, leaf_hash(node_hash(leaves[0], leaves[1]) * 2), [], root)


def test_every_inclusion_proof_verifies_and_any_flipped_bit_is_rejected() -> None:
    for size in range(1, MAX_EXHAUSTIVE + 1):
        root = ROOTS[size]
        for index in range(size):
            proof = combine(inclusion_nodes(index, size), TABLE)
            verify_inclusion(index, size, LEAVES[index], proof, root)
            for pos in range(len(proof)):
                bad = flip(proof, pos, index + pos)
                assert not accepted(verify_inclusion, index, size, LEAVES[index], bad, root)


def test_inclusion_proof_with_wrong_index_size_leaf_or_root_is_rejected() -> None:
    """Sizes are paired with their own root (as in a checkpoint) or changed by a factor of
    two: a root hash does not commit to the tree size on its own, so (size, root) must come
    from one trusted checkpoint."""
    for size in range(1, MAX_EXHAUSTIVE + 1):
        root = ROOTS[size]
        for index in range(size):
            proof = combine(inclusion_nodes(index, size), TABLE)
            leaf = LEAVES[index]
            wrong = [(index, size + 1, leaf, ROOTS[size + 1]), (index, 2 * size, leaf, root),
                     (index, size, leaf, ROOTS[size - 1]), (index, size, LEAVES[index + 1], root)]
            if index < size - 1:
                wrong.append((index, size - 1, leaf, ROOTS[size - 1]))
            if index < size // 2:
                wrong.append((index, size // 2, leaf, root))
            if size > 1:
                wrong.append(((index + 1) % size, size, leaf, root))
            for i, n, h, r in wrong:
                assert not accepted(verify_inclusion, i, n, h, proof, r), (i, n)


def test_every_consistency_proof_verifies_and_any_flipped_bit_is_rejected() -> None:
    for second in range(1, MAX_EXHAUSTIVE + 1):
        for first in range(1, second + 1):
            proof = combine(consistency_nodes(first, second), TABLE)
            verify_consistency(first, second, ROOTS[first], ROOTS[second], proof)
            for pos in range(len(proof)):
                bad = flip(proof, pos, first + pos)
                assert not accepted(verify_consistency, first, second, ROOTS[first],
                                    ROOTS[second], bad)


def test_consistency_proof_with_wrong_sizes_or_roots_is_rejected() -> None:
    """A log must not pass off a forked or rolled-back tree as an extension of the old one."""
    for second in range(2, MAX_EXHAUSTIVE + 1):
        for first in range(1, second):
            proof = combine(consistency_nodes(first, second), TABLE)
            old, new = ROOTS[first], ROOTS[second]
            for args in [(first, second, ROOTS[first - 1], new), (first, second, old, old),
                         (first, second, new, old), (first, second, old, ROOTS[second - 1]),
                         (first, second + 1, old, ROOTS[second + 1]),
                         (first + 1, second, ROOTS[first + 1], new),
                         (first - 1, second, ROOTS[first - 1], new),
                         (first, 2 * second, old, new)]:
                assert not accepted(verify_consistency, *args, proof), args


def test_proof_with_a_hash_added_or_removed_is_rejected() -> None:
    for size in range(1, 40):
        for index in range(size):
            proof = combine(inclusion_nodes(index, size), TABLE)
            with pytest.raises(ProofError, match="hashes, want"):
                verify_inclusion(index, size, LEAVES[index], [*proof, ROOTS[size]], ROOTS[size])
            if proof:
                with pytest.raises(ProofError, match="hashes, want"):
                    verify_inclusion(index, size, LEAVES[index], proof[:-1], ROOTS[size])
        for first in range(1, size):
            proof = combine(consistency_nodes(first, size), TABLE)
            with pytest.raises(ProofError, match="hashes, want"):
                verify_consistency(first, size, ROOTS[first], ROOTS[size], [*proof, ROOTS[1]])
            with pytest.raises(ProofError, match="hashes, want"):
                verify_consistency(first, size, ROOTS[first], ROOTS[size], proof[:-1])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (5, 5), (6, 5), (-1, 5), (0, -1)])
def test_inclusion_of_index_outside_tree_is_rejected(index: int, size: int) -> None:
    with pytest.raises(ProofError, match="not in a tree"):
        verify_inclusion(index, size, LEAVES[0], [], ROOTS[1])
    with pytest.raises(ProofError, match="not in a tree"):
        inclusion_nodes(index, size)


@pytest.mark.parametrize(("first", "second"), [(2, 1), (9, 8), (-1, 3), (1, 0)])
def test_consistency_from_larger_to_smaller_tree_is_rejected(first: int, second: int) -> None:
    with pytest.raises(ProofError, match="no consistency proof"):
        verify_consistency(first, second, ROOTS[1], ROOTS[1], [])
    with pytest.raises(ProofError, match="no consistency proof"):
        consistency_nodes(first, second)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_hash_of_wrong_length_or_type_is_rejected(bad: bytes) -> None:
    proof3 = combine(inclusion_nodes(0, 3), TABLE)
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(0, 3, bad, proof3, ROOTS[3])
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(0, 3, LEAVES[0], proof3, bad)
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(0, 3, LEAVES[0], [proof3[0], bad], ROOTS[3])
    proof = combine(consistency_nodes(2, 3), TABLE)
    with pytest.raises(ProofError, match="32-byte"):
        verify_consistency(2, 3, bad, ROOTS[3], proof)
    with pytest.raises(ProofError, match="32-byte"):
        verify_consistency(2, 3, ROOTS[2], bad, proof)
    with pytest.raises(ProofError, match="32-byte"):
        verify_consistency(2, 3, ROOTS[2], ROOTS[3], [bad])


def test_same_size_consistency_needs_empty_proof_and_equal_roots() -> None:
    assert consistency_nodes(5, 5) == []
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    with pytest.raises(ProofError, match="two different roots"):
        verify_consistency(5, 5, ROOTS[5], ROOTS[4], [])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]])


def test_consistency_from_empty_tree_needs_empty_proof_and_empty_root() -> None:
    assert consistency_nodes(0, 7) == []
    verify_consistency(0, 7, EMPTY_ROOT, ROOTS[7], [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError, match="empty-tree root"):
        verify_consistency(0, 7, ROOTS[1], ROOTS[7], [])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(0, 7, EMPTY_ROOT, ROOTS[7], [ROOTS[7]])


def test_nodes_of_size_7_tree_match_rfc6962_examples() -> None:
    """RFC 6962 §2.1.3: the 7-leaf example tree. Its leaves c, d, e, f, j and nodes g, h, i, k
    are perfect; its node l (over leaves 4..6) is the fold of i and j."""
    _, b, c, d, _, f, j = ((0, i) for i in range(7))
    g, h, i, k = (1, 0), (1, 1), (1, 2), (2, 0)
    assert root_nodes(7) == [k, i, j]
    assert inclusion_nodes(0, 7) == [[b], [h], [i, j]]
    assert inclusion_nodes(3, 7) == [[c], [g], [i, j]]
    assert inclusion_nodes(4, 7) == [[f], [j], [k]]
    assert inclusion_nodes(6, 7) == [[i], [k]]
    assert consistency_nodes(3, 7) == [[c], [d], [g], [i, j]]
    assert consistency_nodes(4, 7) == [[i, j]]
    assert consistency_nodes(6, 7) == [[i], [j], [k]]


def test_subtree_nodes_rejects_ranges_no_proof_can_ask_for() -> None:
    assert subtree_nodes(8, 13) == [(2, 2), (0, 12)]
    assert subtree_nodes(4, 4) == []
    for lo, hi in [(1, 3), (2, 6), (4, 3), (-1, 2)]:
        with pytest.raises(ValueError):
            subtree_nodes(lo, hi)


def test_range_nodes_cover_any_range_with_aligned_perfect_nodes() -> None:
    assert range_nodes(3, 13) == [(0, 3), (2, 1), (2, 2), (0, 12)]
    for lo in range(40):
        for hi in range(lo, 70):
            nodes = range_nodes(lo, hi)
            covered = [i for level, n in nodes for i in range(n << level, (n + 1) << level)]
            assert covered == list(range(lo, hi))
            # Each node as large as allowed: two neighbours of one size never merge.
            assert all(not (a == b and m % 2 == 0 and m + 1 == n)
                       for (a, m), (b, n) in itertools.pairwise(nodes))
            with contextlib.suppress(ValueError):  # where subtree_nodes applies: the same
                assert nodes == subtree_nodes(lo, hi)
    with pytest.raises(ValueError):
        range_nodes(4, 3)


def test_right_edge_root_matches_the_rfc_6962_tree_at_every_size() -> None:
    hashes = [leaf_hash(bytes([i])) for i in range(70)]
    edge = RightEdge()
    assert edge.root() == root_of([])
    for i, h in enumerate(hashes):
        edge.extend(i, 1, [h])
        assert edge.root() == root_of(hashes[:i + 1])
        assert RightEdge(edge.size, edge.hashes).root() == edge.root()
    with pytest.raises(ValueError):
        RightEdge(3, hashes[:1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 70), min_size=1, max_size=8), st.integers(0, 40))
def test_right_edge_grows_by_range_hashes_as_by_leaves(sizes: list[int], start: int) -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(start + sum(sizes))]
    edge = RightEdge()
    for i, h in enumerate(hashes[:start]):
        edge.extend(i, 1, [h])
    first = start
    for n in sizes:
        part = hashes[first:first + n]
        edge.extend(first, n, range_hashes(first, part))
        first += n
        assert edge.root() == root_of(hashes[:first])
        assert RightEdge(edge.size, edge.hashes).root() == edge.root()
    with pytest.raises(ValueError):
        edge.extend(first + 1, 1, [hashes[0]])


def test_right_edge_keeps_one_hash_per_set_bit_and_copies_independently() -> None:
    edge = RightEdge()
    edge.extend(0, 13, range_hashes(0, LEAVES[:13]))
    assert edge.hashes == [TABLE[node] for node in root_nodes(13)]  # 13 = 8 + 4 + 1
    snapshot = edge.copy()
    edge.extend(13, 3, range_hashes(13, LEAVES[13:16]))
    assert (edge.size, edge.hashes) == (16, [TABLE[(4, 0)]])
    assert (snapshot.size, snapshot.root()) == (13, ROOTS[13])
    with pytest.raises(ValueError):  # two hashes where leaves 16..19 make one perfect node
        edge.extend(16, 4, LEAVES[16:18])
    with pytest.raises(ValueError):
        RightEdge(1, [b"short"])


def test_combine_fails_loudly_on_a_missing_node() -> None:
    with pytest.raises(KeyError):
        combine(inclusion_nodes(0, 3), {(0, 1): LEAVES[1]})


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.lists(st.binary(max_size=24), min_size=n,
                                                      max_size=n)), st.data())
def test_roots_and_proofs_agree_with_pymerkle(leaves: list[bytes], data: st.DataObject) -> None:
    """pymerkle 7 (RFC 6962 hashing with its default security=True) is an independent
    implementation. Its inclusion path is [leaf] + the RFC 9162 proof; its consistency path has
    a shape of its own, so consistency proofs are checked crosswise against each other's roots."""
    tree = pymerkle.InmemoryTree.init_from_entries(leaves)
    hashes = [leaf_hash(x) for x in leaves]
    table = node_table(hashes)
    size = data.draw(st.integers(1, len(leaves)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    first = data.draw(st.integers(1, size), label="first")
    root, first_root = tree.get_root(size), tree.get_root(first)

    builder = TreeBuilder()
    for h in hashes[:size]:
        builder.append(h)
    assert root_of(hashes[:size]) == root == builder.root()

    proof = combine(inclusion_nodes(index, size), table)
    assert tree.prove_inclusion(index + 1, size).path == [hashes[index], *proof]
    verify_inclusion(index, size, hashes[index], proof, root)

    proof = combine(consistency_nodes(first, size), table)
    verify_consistency(first, size, first_root, root, proof)
    theirs = tree.prove_consistency(first, size)
    pymerkle.verify_consistency(root_of(hashes[:first]), root_of(hashes[:size]), theirs,
                                prior_size=first, later_size=size)
