"""Hash tiles and entry bundles of C2SP tlog-tiles (c2sp.org/tlog-tiles, v0.1.0).

A tile of level L holds up to 256 consecutive hashes of tree level 8·L: tile (L, N) holds the
hashes of the perfect nodes (8·L, N·256) ... (8·L, N·256 + W - 1). Level-0 tiles hold leaf
hashes. A full tile (W = 256) never changes; the rightmost tile of each level may be partial,
with W = floor(size / 256**L) mod 256, and a partial tile is never hashed into the level above.
Entry bundles (tile "level" -1 here) hold the entries of leaves N·256 ... N·256 + W - 1.

Paths ("Tile paths" in the spec): `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, with N
in groups of three decimal digits, all but the last prefixed with "x":

    tile_path(0, 1234067, 5) == "tile/0/x001/x234/067.p/5"

Every perfect node (l, i) with l = 8·L + r (0 <= r < 8) is the hash_up of 2**r consecutive
hashes in one tile of level L (`node_tile`), so tiles are all a log needs to store to serve
any proof. `TreeBuilder` keeps the right edge of the tree and produces the tiles as leaves are
appended. Nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from verifier.protocol.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Node,
    combine,
    consistency_nodes,
    fold,
    inclusion_nodes,
    node_hash,
    range_nodes,
    root_nodes,
)

TILE_HEIGHT = 8
TILE_WIDTH = 256
MAX_ENTRY_SIZE = 65535
MAX_TILE_LEVEL = 63
ENTRIES_LEVEL = -1

TileKey = tuple[int, int]

_PATH_RE = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<n>(?:x[0-9]{3}/){0,6}[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)
_MAX_INDEX = 1 << 64
_NO_EDGE: Mapping[int, bytes] = MappingProxyType({})


def format_index(n: int) -> str:
    """N in groups of three digits, all but the last prefixed with "x" (C2SP tlog-tiles).

    1234067 -> "x001/x234/067", 5 -> "005", 1000 -> "x001/000". Raises ValueError if n < 0.
    """
    if n < 0:
        raise ValueError(f"negative tile index {n}")
    groups = [f"{n % 1000:03d}"]
    while n >= 1000:
        n //= 1000
        groups.append(f"x{n % 1000:03d}")
    return "/".join(reversed(groups))


def tile_path(level: int, n: int, width: int = TILE_WIDTH) -> str:
    """The C2SP tlog-tiles path (no leading slash) of tile (level, n) holding `width` hashes.

    level -1 names an entry bundle. A width below 256 adds the ".p/<W>" partial suffix.
    Raises ValueError for a level outside -1..63 or a width outside 1..256.
    """
    if not ENTRIES_LEVEL <= level <= MAX_TILE_LEVEL:
        raise ValueError(f"tile level {level} out of range")
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} out of range")
    name = "entries" if level == ENTRIES_LEVEL else str(level)
    path = f"tile/{name}/{format_index(n)}"
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """Parse a tile path without leading slash into (level, n, width).

    level is -1 for entry bundles; width is 256 for a full tile. Parsing is strict: the path
    must be exactly what `tile_path` writes for the result (no leading zeros, no "x000" groups,
    partial width 1..255, level 0..63, n < 2**64). Raises ValueError otherwise.
    """
    m = _PATH_RE.fullmatch(path)
    if m is None:
        raise ValueError(f"malformed tile path {path!r}")
    level = ENTRIES_LEVEL if m["level"] == "entries" else int(m["level"])
    n = int(m["n"].replace("x", "").replace("/", ""))
    width = int(m["width"]) if m["width"] else TILE_WIDTH
    if level > MAX_TILE_LEVEL or n >= _MAX_INDEX:
        raise ValueError(f"tile path {path!r} out of range")
    if tile_path(level, n, width) != path:
        raise ValueError(f"non-canonical tile path {path!r}")
    return level, n, width


def tile_width(level: int, n: int, size: int) -> int:
    """Number of hashes (0..256) in tile (level, n) of a tree of `size` leaves.

    level -1 (entry bundles) counts entries, like level 0. 0 means the tile does not exist yet.
    """
    count = size >> (TILE_HEIGHT * max(level, 0))
    return max(0, min(TILE_WIDTH, count - n * TILE_WIDTH))


def node_tile(node: Node) -> tuple[int, int, int, int]:
    """Where a perfect node's hash is stored: (tile level, tile n, start, count).

    For node (l, i) with l = 8·L + r, the hash is hash_up of the 2**r hashes at tree level 8·L
    starting at i·2**r, that is hashes [start, start + count) of tile (L, n).
    """
    level, index = node
    if level < 0 or index < 0:
        raise ValueError(f"invalid node {node}")
    tile_level, r = divmod(level, TILE_HEIGHT)
    first = index << r
    return tile_level, first // TILE_WIDTH, first % TILE_WIDTH, 1 << r


def hash_up(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree from its 2**k consecutive hashes at one tree level.

    RFC 9162 §2.1.1 with n a power of two. Raises ValueError if the count is not a power of two.
    """
    n = len(hashes)
    if n == 0 or n & (n - 1):
        raise ValueError(f"{n} hashes do not form a perfect subtree")
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def range_hashes(first: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The hashes of the perfect nodes `merkle.range_nodes(first, first + len(leaf_hashes))`,
    from the hashes of leaves first..: what `merkle.RightEdge.extend` appends."""
    out, pos = [], 0
    for level, _ in range_nodes(first, first + len(leaf_hashes)):
        out.append(hash_up(leaf_hashes[pos:pos + (1 << level)]))
        pos += 1 << level
    return out


def tiles_for_nodes(nodes: Iterable[Node]) -> list[TileKey]:
    """The tiles (level, n), sorted and unique, that hold the given perfect nodes."""
    return sorted({node_tile(node)[:2] for node in nodes})


def nodes_from_tiles(nodes: Iterable[Node], tiles: Mapping[TileKey, bytes]) -> dict[Node, bytes]:
    """The hashes of perfect nodes, computed from the tiles holding them (see `node_tile`).

    `tiles` maps (level, n) to tile data of any width that covers the nodes; a wider tile than
    needed is fine, its first hashes never change. Raises ValueError if a tile is missing or
    too short. The result is only as trustworthy as the tiles: check proofs built from it
    against a signed root.
    """
    out: dict[Node, bytes] = {}
    for node in nodes:
        level, n, start, count = node_tile(node)
        data = tiles.get((level, n))
        if data is None or len(data) < HASH_SIZE * (start + count):
            raise ValueError(f"tile {level}/{n} is missing or too short for node {node}")
        if len(data) == FULL_TILE_SIZE:
            out[node] = _full_tile_levels(data)[count.bit_length() - 1][start // count]
        else:
            out[node] = hash_up(split_hashes(data[HASH_SIZE * start:HASH_SIZE * (start + count)]))
    return out


FULL_TILE_SIZE = HASH_SIZE * TILE_WIDTH
_LEVELS_KEPT = 64  # full tiles whose subtree hashes are kept (about 40 KB each)
_levels: dict[bytes, list[list[bytes]]] = {}


def _full_tile_levels(data: bytes) -> list[list[bytes]]:
    """Every subtree hash of a full tile, level by level (levels[k][i]: the 2**k hashes from
    i·2**k). A proof needs up to 8 of them per tile, which cost 247 hashes to make from the
    tile; full tiles never change, and the upper ones are in every proof, so a few hundred
    are kept by their content (keying by content keeps this pure and always right)."""
    levels = _levels.get(data)
    if levels is None:
        levels = [split_hashes(data)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below), 2)])
        if len(_levels) >= _LEVELS_KEPT:
            # the oldest goes; proofs are built in threads, which may race here: no matter
            with contextlib.suppress(RuntimeError, StopIteration):
                _levels.pop(next(iter(_levels)), None)
        _levels[data] = levels
    return levels


class TileProof:
    """A proof to build from tiles, without I/O: `tiles` to read, then `finish` with them.

    One recipe for every reader of tiles (the log over its database, a client over HTTP or a
    mirror): the proof's nodes per RFC 9162 §2.1.3.1 / §2.1.4.1 (`inclusion_nodes`,
    `consistency_nodes`), the tiles holding them, and the proof hashes they combine into.
    Pure: whoever holds the tiles does the reading.
    """

    def __init__(self, groups: Sequence[Sequence[Node]]) -> None:
        self.groups = groups
        self.nodes = [node for group in groups for node in group]
        self.tiles = tiles_for_nodes(self.nodes)

    def finish(self, tiles: Mapping[TileKey, bytes]) -> list[bytes]:
        """The proof hashes. ValueError if a tile is missing or too short."""
        return combine(self.groups, nodes_from_tiles(self.nodes, tiles))


def inclusion_from_tiles(index: int, size: int) -> TileProof:
    """PATH(index, D[0:size]) from tiles. ProofError unless 0 <= index < size."""
    return TileProof(inclusion_nodes(index, size))


def consistency_from_tiles(first: int, second: int) -> TileProof:
    """PROOF(first, D[0:second]) from tiles. ProofError unless 0 <= first <= second."""
    return TileProof(consistency_nodes(first, second))


def split_hashes(tile: bytes) -> list[bytes]:
    """The 32-byte hashes of a hash tile's data. Raises ValueError if len(tile) % 32 != 0."""
    if len(tile) % HASH_SIZE:
        raise ValueError(f"tile data of {len(tile)} bytes is not a whole number of hashes")
    return [tile[i:i + HASH_SIZE] for i in range(0, len(tile), HASH_SIZE)]


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length then its bytes (C2SP
    tlog-tiles "Log entries"). Raises ValueError for an entry over 65535 bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise ValueError(f"entry of {len(entry)} bytes is too large for a bundle")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes, count: int) -> list[bytes]:
    """The entries of a bundle that must hold exactly `count` entries and nothing after them.

    Raises ValueError on a truncated bundle, trailing bytes or a count outside 0..256.
    """
    if not 0 <= count <= TILE_WIDTH:
        raise ValueError(f"bundle entry count {count} out of range")
    entries: list[bytes] = []
    pos = 0
    for i in range(count):
        if pos + 2 > len(data):
            raise ValueError(f"bundle truncated before entry {i}")
        end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
        if end > len(data):
            raise ValueError(f"bundle truncated inside entry {i}")
        entries.append(data[pos + 2:end])
        pos = end
    if pos != len(data):
        raise ValueError(f"bundle has {len(data) - pos} bytes after its {count} entries")
    return entries


class TreeBuilder:
    """The right edge of an append-only tree: the rightmost partial tile of each level.

    `TreeBuilder(size, edge)` resumes a tree of `size` leaves from `edge`, mapping each level L
    in `edge_keys(size)` to the data of its partial tile (exactly width·32 bytes). `append`
    adds leaf hashes; a tile that reaches 256 hashes is full: its hash_up becomes the next hash
    of the level above and its level starts a new, empty partial tile. `take_changed` hands out
    every tile touched since the previous call, for storage to write.
    """

    def __init__(self, size: int = 0, edge: Mapping[int, bytes] = _NO_EDGE) -> None:
        if size < 0:
            raise ValueError(f"negative tree size {size}")
        keys = self.edge_keys(size)
        if set(edge) != {level for level, _, _ in keys}:
            raise ValueError(f"edge levels {sorted(edge)} do not match a tree of size {size}")
        self.size = size
        self._edge: list[list[bytes]] = []
        for level, _, width in keys:
            hashes = split_hashes(edge[level])
            if len(hashes) != width:
                raise ValueError(f"edge tile at level {level} has {len(hashes)} hashes, "
                                 f"want {width}")
            self._level(level).extend(hashes)
        self._full: dict[TileKey, bytes] = {}
        self._touched: set[int] = set()

    @staticmethod
    def edge_keys(size: int) -> list[tuple[int, int, int]]:
        """(level, n, width) of the non-empty partial tiles at the right edge of `size`."""
        keys = []
        level = 0
        while size >> (TILE_HEIGHT * level):
            count = size >> (TILE_HEIGHT * level)
            if count % TILE_WIDTH:
                keys.append((level, count // TILE_WIDTH, count % TILE_WIDTH))
            level += 1
        return keys

    def _level(self, level: int) -> list[bytes]:
        while len(self._edge) <= level:
            self._edge.append([])
        return self._edge[level]

    def _partial_number(self, level: int) -> int:
        return (self.size >> (TILE_HEIGHT * level)) // TILE_WIDTH

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash at index `size` (C2SP tlog-tiles: full tiles feed the level above)."""
        if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        self.size += 1
        level, h = 0, leaf_hash
        while True:
            tile = self._level(level)
            tile.append(h)
            self._touched.add(level)
            if len(tile) < TILE_WIDTH:
                return
            self._full[(level, self._partial_number(level) - 1)] = b"".join(tile)
            h = hash_up(tile)
            tile.clear()
            level += 1

    def edge(self) -> dict[int, bytes]:
        """Level -> data of each non-empty partial tile: what TreeBuilder(size, edge) resumes
        from, so a writer can keep its edge instead of reading it back."""
        return {level: b"".join(tile) for level, tile in enumerate(self._edge) if tile}

    def take_changed(self) -> dict[TileKey, bytes]:
        """Every tile changed since the last call, with its full current data.

        Full tiles that were completed, and the current partial tile of each touched level
        unless it is empty. Partial tiles are returned whole, not as increments.
        """
        changed = self._full
        for level in sorted(self._touched):
            if self._edge[level]:
                changed[(level, self._partial_number(level))] = b"".join(self._edge[level])
        self._full = {}
        self._touched = set()
        return changed

    def root(self) -> bytes:
        """MTH of the tree (RFC 9162 §2.1.1), from the right-edge partial tiles alone.

        The perfect nodes of root_nodes(size) all lie in those tiles. EMPTY_ROOT for size 0.
        """
        if self.size == 0:
            return EMPTY_ROOT
        hashes = []
        for node in root_nodes(self.size):
            level, _, start, count = node_tile(node)
            hashes.append(hash_up(self._edge[level][start:start + count]))
        return fold(hashes)
