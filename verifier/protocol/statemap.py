"""The package state map: an authenticated map from 32-byte keys (SHA-256 of a package name)
to 32-byte value hashes (verifier.protocol.package_state.state_hash), with proofs that a key
maps to a value ("the state of P is V") or to nothing ("P has no state").

The map is a compact sparse Merkle tree of depth 256: key bit i (most significant bit of
byte 0 first) picks the child at depth i, but a subtree holding a single leaf is that leaf,
placed as high as it can go, and an empty subtree is the constant EMPTY. So

    hash(empty subtree)         = EMPTY = SHA-256(b"tlog/map/empty\\n")
    hash(subtree with one leaf) = SHA-256(b"tlog/map/leaf\\n" || key || value_hash)
    hash(subtree with >= 2)     = SHA-256(b"tlog/map/node\\n" || hash(left) || hash(right))

Why compact rather than the plain 256-level tree with per-height default hashes: keys are
SHA-256 outputs, so leaves separate after about log2(n) + 1 levels and a proof is ~21 hashes at
a million packages instead of up to 256 (the bitmap below would elide most of those, but a
plain tree also costs 256 hash computations per update and 256 stored nodes per leaf). This is
the shape of Diem's Jellyfish Merkle tree (binary here) and of the "shortcut" SMT.

Domain separation: the three prefixes differ from each other and from RFC 6962's 0x00 / 0x01
(they start with "t"), and every input has a fixed length per prefix, so no map hash can be
read as a log hash, a leaf as a node, or one split of the input as another.

Every root determines one answer per key: a verifier walks from the root along the key's bits,
and collision resistance lets each hash open in only one way. Proofs are also checked to be
canonical (what an honest map could produce) so a proof has a single encoding.

Proof encoding (all integers big-endian; exact length, nothing after):

    u8  terminal   0 = empty subtree (absent), 1 = the key's own leaf (present),
                   2 = another key's leaf (absent)
    u16 depth      d, 0..256: depth of the terminal (the number of siblings)
    bitmap         ceil(d / 8) bytes; bit i (MSB first) set = the sibling at depth i + 1 is
                   not EMPTY; padding bits zero
    siblings       32 bytes for each set bit, root side first
    terminal 1:    value_hash (32)
    terminal 2:    other_key (32) || other_value_hash (32)

Canonical rules the parser and verifier enforce: the deepest sibling is not EMPTY when d > 0
(otherwise the terminal's parent would hold at most one leaf and be that leaf or empty);
an other-key leaf shares the key's first d bits and differs from the key.

Storage: `SparseMap` keeps nodes in a `NodeStore` keyed by node id (1 << depth) | path, where
path is the key's first `depth` bits (so the root is 1). A stored node is 65 bytes: b"N" ||
left hash || right hash, or b"L" || key || value_hash. `SparseMap.update` applies a batch and
returns the new root and the nodes it wrote, which is exactly what a log persists per batch
(keyed by batch, to answer proofs against older checkpoints). Nothing here does I/O.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Protocol

HASH_SIZE = 32
KEY_BITS = 256
EMPTY = hashlib.sha256(b"tlog/map/empty\n").digest()
LEAF_PREFIX = b"tlog/map/leaf\n"
NODE_PREFIX = b"tlog/map/node\n"
ROOT_ID = 1
MAX_PROOF_SIZE = 3 + 32 + 32 * KEY_BITS + 64

TERMINAL_EMPTY = 0
TERMINAL_LEAF = 1
TERMINAL_OTHER = 2


class MapProofError(ValueError):
    """A map proof is malformed or does not verify against the root."""


def map_leaf_hash(key: bytes, value_hash: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + key + value_hash).digest()


def map_node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def bit(key: bytes, depth: int) -> int:
    """Key bit `depth` (0 = most significant bit of byte 0): which child at that depth."""
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


def node_id(key: bytes, depth: int) -> int:
    """Id of the node at `depth` on the key's path: (1 << depth) | the key's first bits."""
    return (1 << depth) | (int.from_bytes(key, "big") >> (KEY_BITS - depth))


def stored_hash(stored: bytes) -> bytes:
    """The hash of a stored node (b"N" left right, or b"L" key value)."""
    if stored[:1] == b"N":
        return map_node_hash(stored[1:33], stored[33:65])
    return map_leaf_hash(stored[1:33], stored[33:65])


def path_by_hash(nodes: Mapping[bytes, bytes], root: bytes, key: bytes,
                 found: dict[int, bytes]) -> bool:
    """Add to `found` (by node id) the stored nodes on the key's path from `root`, taking
    each from `nodes` by its hash: what SparseMap needs to update or prove the key when
    nodes are kept by hash (a log's table, a cache of it). False when a node on the way
    is not in `nodes`."""
    at, depth = root, 0
    while at != EMPTY:
        node = nodes.get(at)
        if node is None:
            return False
        found[node_id(key, depth)] = node
        if node[:1] != b"N":  # a leaf: the key's own or another's
            return True
        at = node[33:65] if bit(key, depth) else node[1:33]
        depth += 1
    return True


class NodeStore(Protocol):
    """Where the nodes live: a dict in memory, a table in the log's database."""

    def get(self, node: int) -> bytes | None: ...


@dataclass(frozen=True)
class Update:
    """One batch applied: the new root and the nodes written (id -> 65-byte node)."""

    root: bytes
    writes: dict[int, bytes]


class SparseMap:
    """The map over a node store. Reads go through `store`; `update` computes a batch's writes
    without touching the store, `apply` (for a MutableMapping store) writes them, so a log can
    persist them in the same transaction as the batch instead."""

    def __init__(self, store: NodeStore | None = None) -> None:
        self.store: NodeStore = store if store is not None else {}

    def root(self) -> bytes:
        stored = self.store.get(ROOT_ID)
        return EMPTY if stored is None else stored_hash(stored)

    def update(self, updates: Iterable[tuple[bytes, bytes]]) -> Update:
        """New root and writes after setting each key to its value hash. Keys must be unique
        within a batch (so the result cannot depend on their order); keys absent so far are
        inserted. There is no deletion: a package's state never goes away."""
        batch: dict[bytes, bytes] = {}
        for key, value in updates:
            _check_hash(key, "key")
            _check_hash(value, "value hash")
            if key in batch:
                raise ValueError(f"key {key.hex()} twice in one batch")
            batch[key] = value
        writes: dict[int, bytes] = {}
        if not batch:
            return Update(self.root(), writes)
        items = sorted(batch.items())
        root = self._update(0, ROOT_ID, self.store.get(ROOT_ID), items, writes)
        return Update(root, writes)

    def apply(self, update: Update) -> None:
        store = self.store
        assert isinstance(store, MutableMapping)
        store.update(update.writes)

    def _update(
        self,
        depth: int,
        node: int,
        stored: bytes | None,
        items: list[tuple[bytes, bytes]],
        writes: dict[int, bytes],
    ) -> bytes:
        # `items` is sorted by key and every key lies under this node. A leaf sitting here
        # joins the items (unless one of them replaces it) and is pushed down with them.
        if stored is not None and stored[:1] == b"L":
            old_key = stored[1:33]
            if all(k != old_key for k, _ in items):
                items = sorted([*items, (old_key, stored[33:65])])
            stored = None
        if stored is None and len(items) == 1:
            key, value = items[0]
            writes[node] = b"L" + key + value
            return map_leaf_hash(key, value)
        split = _split(items, node, depth)
        left_items, right_items = items[:split], items[split:]
        if stored is None:
            left = self._child(depth, node << 1, None, left_items, writes)
            right = self._child(depth, (node << 1) | 1, None, right_items, writes)
        else:
            left = self._child(depth, node << 1, stored[1:33], left_items, writes)
            right = self._child(depth, (node << 1) | 1, stored[33:65], right_items, writes)
        writes[node] = b"N" + left + right
        return map_node_hash(left, right)

    def _child(
        self,
        depth: int,
        node: int,
        old_hash: bytes | None,
        items: list[tuple[bytes, bytes]],
        writes: dict[int, bytes],
    ) -> bytes:
        if not items:
            return EMPTY if old_hash is None else old_hash
        stored = None if old_hash is None or old_hash == EMPTY else self.store.get(node)
        if old_hash not in (None, EMPTY) and stored is None:
            raise LookupError(f"node store lacks node {node:#x}")
        return self._update(depth + 1, node, stored, items, writes)

    def prove(self, key: bytes) -> bytes:
        """The encoded proof of the key's value or absence against `root()`."""
        _check_hash(key, "key")
        siblings: list[bytes] = []
        stored = self.store.get(ROOT_ID)
        depth = 0
        while stored is not None and stored[:1] == b"N":
            side = bit(key, depth)
            child_hash = stored[33:65] if side else stored[1:33]
            siblings.append(stored[1:33] if side else stored[33:65])
            depth += 1
            if child_hash == EMPTY:
                stored = None
                break
            stored = self.store.get(node_id(key, depth))
            if stored is None:
                raise LookupError(f"node store lacks node {node_id(key, depth):#x}")
        if stored is None:
            return encode_proof(TERMINAL_EMPTY, siblings, b"")
        if stored[1:33] == key:
            return encode_proof(TERMINAL_LEAF, siblings, stored[33:65])
        return encode_proof(TERMINAL_OTHER, siblings, stored[1:65])


def _split(items: list[tuple[bytes, bytes]], node: int, depth: int) -> int:
    """Index of the first item whose key has bit `depth` set. The items are sorted and all
    start with the node's path, so that is the first key at or above path || 1 || 0...0."""
    path = node ^ (1 << depth)
    boundary = (((path << 1) | 1) << (KEY_BITS - 1 - depth)).to_bytes(HASH_SIZE, "big")
    return bisect.bisect_left(items, (boundary,))


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes")


@dataclass(frozen=True)
class MapProof:
    """A parsed proof: terminal kind, siblings root side first, and the terminal's data."""

    terminal: int
    siblings: list[bytes]
    tail: bytes


def encode_proof(terminal: int, siblings: list[bytes], tail: bytes) -> bytes:
    depth = len(siblings)
    bitmap = bytearray((depth + 7) // 8)
    hashes = []
    for i, sibling in enumerate(siblings):
        if sibling != EMPTY:
            bitmap[i >> 3] |= 0x80 >> (i & 7)
            hashes.append(sibling)
    return bytes([terminal]) + depth.to_bytes(2, "big") + bytes(bitmap) + b"".join(hashes) + tail


def parse_proof(data: bytes) -> MapProof:
    """Strict parse of an encoded proof: every length exact, padding bits zero, the deepest
    sibling not EMPTY."""
    if not isinstance(data, bytes) or len(data) < 3 or len(data) > MAX_PROOF_SIZE:
        raise MapProofError("map proof: bad length")
    terminal, depth = data[0], int.from_bytes(data[1:3], "big")
    if terminal not in (TERMINAL_EMPTY, TERMINAL_LEAF, TERMINAL_OTHER):
        raise MapProofError(f"map proof: unknown terminal {terminal}")
    if depth > KEY_BITS:
        raise MapProofError(f"map proof: depth {depth} over {KEY_BITS}")
    bitmap = data[3 : 3 + (depth + 7) // 8]
    if len(bitmap) != (depth + 7) // 8:
        raise MapProofError("map proof: truncated bitmap")
    if depth % 8 and bitmap[-1] & (0xFF >> (depth % 8)):
        raise MapProofError("map proof: padding bits set")
    pos = 3 + len(bitmap)
    siblings = []
    for i in range(depth):
        if bitmap[i >> 3] & (0x80 >> (i & 7)):
            sibling = data[pos : pos + HASH_SIZE]
            if len(sibling) != HASH_SIZE or sibling == EMPTY:
                raise MapProofError("map proof: bad sibling")
            siblings.append(sibling)
            pos += HASH_SIZE
        else:
            siblings.append(EMPTY)
    if depth and siblings[-1] == EMPTY:
        raise MapProofError("map proof: deepest sibling is empty (not canonical)")
    tail = data[pos:]
    want = {TERMINAL_EMPTY: 0, TERMINAL_LEAF: HASH_SIZE, TERMINAL_OTHER: 2 * HASH_SIZE}[terminal]
    if len(tail) != want:
        raise MapProofError("map proof: bad length")
    return MapProof(terminal, siblings, tail)


def verify_proof(root: bytes, key: bytes, proof: bytes) -> bytes | None:
    """The value hash the proof shows for `key` under `root`, or None when it shows the key
    absent. Raises MapProofError when the proof is malformed or does not lead to `root`."""
    _check_hash(root, "root")
    _check_hash(key, "key")
    parsed = parse_proof(proof)
    depth = len(parsed.siblings)
    value: bytes | None = None
    if parsed.terminal == TERMINAL_EMPTY:
        current = EMPTY
    elif parsed.terminal == TERMINAL_LEAF:
        value = parsed.tail
        current = map_leaf_hash(key, value)
    else:
        other = parsed.tail[:HASH_SIZE]
        if other == key or node_id(other, depth) != node_id(key, depth):
            raise MapProofError("map proof: other leaf is not on the key's path")
        current = map_leaf_hash(other, parsed.tail[HASH_SIZE:])
    for d in range(depth - 1, -1, -1):
        sibling = parsed.siblings[d]
        current = (
            map_node_hash(sibling, current) if bit(key, d) else map_node_hash(current, sibling)
        )
    if not hmac.compare_digest(current, root):
        raise MapProofError("map proof does not lead to the map root")
    return value


def verify_inclusion(root: bytes, key: bytes, value_hash: bytes, proof: bytes) -> None:
    """Fail unless the proof shows `key` mapped to exactly `value_hash` under `root`."""
    shown = verify_proof(root, key, proof)
    if shown is None or not hmac.compare_digest(shown, value_hash):
        raise MapProofError("map proof shows a different value for the key")


def verify_absence(root: bytes, key: bytes, proof: bytes) -> None:
    """Fail unless the proof shows `key` absent under `root`."""
    if verify_proof(root, key, proof) is not None:
        raise MapProofError("map proof shows the key present")
