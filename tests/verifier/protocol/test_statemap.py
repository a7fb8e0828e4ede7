"""The package state map against a brute-force reference: every proof verifies, and any
tampering with a proof, key, value or root is caught (a log hiding a halt must fail here)."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.protocol import statemap
from verifier.protocol.statemap import (
    EMPTY,
    MapProofError,
    SparseMap,
    bit,
    map_leaf_hash,
    map_node_hash,
    parse_proof,
    verify_absence,
    verify_inclusion,
    verify_proof,
)


def reference_root(entries: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The compact tree's root straight from its definition, with no store."""
    if not entries:
        return EMPTY
    if len(entries) == 1:
        ((key, value),) = entries.items()
        return map_leaf_hash(key, value)
    left = {k: v for k, v in entries.items() if not bit(k, depth)}
    right = {k: v for k, v in entries.items() if bit(k, depth)}
    return map_node_hash(reference_root(left, depth + 1), reference_root(right, depth + 1))


def h(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def build(batches: list[list[tuple[bytes, bytes]]]) -> SparseMap:
    smap = SparseMap()
    for batch in batches:
        update = smap.update(batch)
        smap.apply(update)
        assert smap.root() == update.root
    return smap


def test_empty_map_root_is_pinned() -> None:
    assert hashlib.sha256(b"tlog/map/empty\n").digest() == EMPTY
    assert (
        SparseMap().root().hex()
        == "6f83efe34781fb962241be9076b68cdcf2bc30cba62f5b951574be7045470300"
    )


def test_absent_key_in_empty_map() -> None:
    proof = SparseMap().prove(h(1))
    assert proof == b"\x00\x00\x00"
    verify_absence(EMPTY, h(1), proof)


keys = st.integers(min_value=0, max_value=60).map(h)
values = st.integers(min_value=0, max_value=5).map(lambda n: h(1000 + n))
batch_st = st.dictionaries(keys, values, max_size=12).map(lambda d: list(d.items()))


@settings(max_examples=150, deadline=None)
@given(st.lists(batch_st, max_size=6))
def test_random_batches_match_reference_and_prove(batches: list[list[tuple[bytes, bytes]]]) -> None:
    smap = build(batches)
    expected: dict[bytes, bytes] = {}
    for batch in batches:
        expected.update(batch)
    root = smap.root()
    assert root == reference_root(expected)
    for n in range(0, 64):
        key = h(n)
        proof = smap.prove(key)
        if key in expected:
            verify_inclusion(root, key, expected[key], proof)
        else:
            verify_absence(root, key, proof)
            assert verify_proof(root, key, proof) is None


@settings(max_examples=60, deadline=None)
@given(batch_st, st.randoms())
def test_batch_order_does_not_change_the_root(
    batch: list[tuple[bytes, bytes]], rnd: random.Random
) -> None:
    shuffled = list(batch)
    rnd.shuffle(shuffled)
    base = build([[(h(100), h(7))]])
    assert base.update(batch).root == base.update(shuffled).root
    assert base.update(batch).writes == base.update(shuffled).writes


def test_one_batch_equals_many() -> None:
    items = [(h(n), h(n + 1)) for n in range(300)]
    assert build([items]).root() == build([items[i : i + 7] for i in range(0, 300, 7)]).root()


def test_duplicate_key_in_a_batch_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        SparseMap().update([(h(1), h(2)), (h(1), h(3))])


@pytest.fixture(scope="module")
def big() -> tuple[SparseMap, dict[bytes, bytes]]:
    items = {h(n): h(n + 10_000) for n in range(0, 400, 2)}
    return build([list(items.items())]), items


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def test_hidden_halt_tampered_value_fails(big: tuple[SparseMap, dict[bytes, bytes]]) -> None:
    """A log answering with an older state (one without the halt) cannot make it verify."""
    smap, items = big
    key = h(10)
    proof = smap.prove(key)
    with pytest.raises(MapProofError):
        verify_inclusion(smap.root(), key, h(999), proof)
    with pytest.raises(MapProofError):
        verify_inclusion(smap.root(), h(12), items[key], proof)
    with pytest.raises(MapProofError):
        verify_inclusion(flip(smap.root(), 0), key, items[key], proof)


def test_every_flipped_proof_byte_fails(big: tuple[SparseMap, dict[bytes, bytes]]) -> None:
    smap, items = big
    root = smap.root()
    for key, want in [(h(10), items[h(10)]), (h(11), None)]:
        proof = smap.prove(key)
        assert verify_proof(root, key, proof) == want
        for i in range(len(proof)):
            for mask in (0x01, 0x80):
                bad = proof[:i] + bytes([proof[i] ^ mask]) + proof[i + 1 :]
                with pytest.raises(MapProofError):
                    verify_proof(root, key, bad)


def test_present_key_cannot_be_proven_absent(big: tuple[SparseMap, dict[bytes, bytes]]) -> None:
    """Hiding a package entirely: no proof of absence for a present key verifies."""
    smap, _ = big
    root = smap.root()
    present = h(10)
    for other in range(1, 400, 2):
        with pytest.raises(MapProofError):
            verify_absence(root, present, smap.prove(h(other)))


def test_truncated_or_extended_proofs_refused(big: tuple[SparseMap, dict[bytes, bytes]]) -> None:
    smap, _ = big
    proof = smap.prove(h(10))
    for bad in (proof[:-1], proof + b"\x00", proof[:3], b"", b"\x03" + proof[1:]):
        with pytest.raises(MapProofError):
            verify_proof(smap.root(), h(10), bad)


def test_non_canonical_proofs_refused() -> None:
    # Depth 1 with an EMPTY sibling: that parent would be the leaf itself.
    with pytest.raises(MapProofError, match="canonical"):
        parse_proof(bytes([1, 0, 1, 0]) + h(5))
    # Padding bits in the bitmap.
    with pytest.raises(MapProofError, match="padding"):
        parse_proof(bytes([0, 0, 1, 0xC0]) + h(5))
    # An explicit EMPTY where the bitmap should have said "empty".
    with pytest.raises(MapProofError, match="sibling"):
        parse_proof(bytes([0, 0, 1, 0x80]) + EMPTY)
    with pytest.raises(MapProofError, match="depth"):
        parse_proof(bytes([0, 1, 1]))


def test_other_leaf_must_share_the_path() -> None:
    smap = build([[(h(n), h(n)) for n in range(3)]])
    root = smap.root()
    for n in range(3, 200):
        parsed = parse_proof(smap.prove(h(n)))
        if parsed.terminal == statemap.TERMINAL_OTHER:
            # The same proof offered for a key off that leaf's path must not verify.
            for m in range(3, 200):
                if m != n and parse_proof(smap.prove(h(m))).terminal != statemap.TERMINAL_OTHER:
                    with pytest.raises(MapProofError):
                        verify_absence(root, h(m), smap.prove(h(n)))
                    break
            return
    pytest.fail("no other-leaf proof found")


def test_store_missing_node_fails_loudly() -> None:
    smap = build([[(h(n), h(n)) for n in range(10)]])
    store = smap.store
    assert isinstance(store, dict)
    victim = next(k for k, v in store.items() if k != 1 and v[:1] == b"N")
    del store[victim]
    with pytest.raises(LookupError):
        for n in range(10):
            smap.prove(h(n))


def test_a_path_by_hash_is_the_path_by_id() -> None:
    """path_by_hash (nodes kept by hash) finds exactly the nodes SparseMap keeps by id on a
    key's path, and says when one is missing."""
    import hashlib

    from verifier.protocol.statemap import SparseMap, node_id, path_by_hash, stored_hash
    m = SparseMap()
    keys = [hashlib.sha256(bytes([i])).digest() for i in range(40)]
    m.apply(m.update((k, hashlib.sha256(k).digest()) for k in keys))
    by_id = dict(m.store)  # type: ignore[call-overload]
    by_hash = {stored_hash(n): n for n in by_id.values()}
    for key in [*keys[:5], hashlib.sha256(b"absent").digest()]:
        found: dict[int, bytes] = {}
        assert path_by_hash(by_hash, m.root(), key, found)
        assert found and all(by_id[i] == n for i, n in found.items())
        assert node_id(key, 0) in found
        assert SparseMap(found).prove(key) == m.prove(key)  # all the proof needs
    missing: dict[int, bytes] = {}
    assert not path_by_hash({}, m.root(), keys[0], missing)
