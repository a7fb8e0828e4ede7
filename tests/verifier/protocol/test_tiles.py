"""verifier.protocol.tiles: C2SP tlog-tiles paths, bundles, and the TreeBuilder that produces the
tiles.

Clients fetch tiles by path and trust nothing but the checkpoint, so a tile that holds a wrong
hash, or a path that parses two ways, breaks every proof built from it. TreeBuilder is checked
against a reference table of every perfect node hash, size by size."""

from __future__ import annotations

import hashlib
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.verifier.protocol.test_merkle import node_table
from verifier.protocol.merkle import EMPTY_ROOT, Node, fold, root_nodes, root_of
from verifier.protocol.tiles import (
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    TileKey,
    TreeBuilder,
    decode_bundle,
    encode_bundle,
    format_index,
    hash_up,
    node_tile,
    nodes_from_tiles,
    parse_tile_path,
    split_hashes,
    tile_path,
    tile_width,
    tiles_for_nodes,
)

SMALL = 1300
AROUND_65536 = range(65536 - 300, 65536 + 300)
LEAVES = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(AROUND_65536.stop + 1)]


TABLE = node_table(LEAVES)


@cache
def reference_root(size: int) -> bytes:
    return root_of(LEAVES[:size])


def all_tiles(size: int) -> list[TileKey]:
    """Every non-empty hash tile of a tree of `size` leaves."""
    keys, level = [], 0
    while size >> (8 * level):
        count = size >> (8 * level)
        keys += [(level, n) for n in range(-(-count // TILE_WIDTH))]
        level += 1
    return keys


def expected_tile(key: TileKey, size: int) -> bytes:
    level, n = key
    width = tile_width(level, n, size)
    return b"".join(TABLE[(8 * level, n * TILE_WIDTH + i)] for i in range(width))


def grown(before: int, after: int) -> set[TileKey]:
    """Tiles whose width grows from tree size `before` to `after`: what storage must write."""
    return {k for k in all_tiles(after) if tile_width(*k, after) > tile_width(*k, before)}


def check_changed(changed: dict[TileKey, bytes], before: int, after: int) -> None:
    assert set(changed) == grown(before, after)
    for key, data in changed.items():
        assert data == expected_tile(key, after), key


def check_nodes_from_tiles(tiles: dict[TileKey, bytes], size: int) -> None:
    """Every perfect node of the tree is the hash_up of the tile hashes node_tile names."""
    split = {key: split_hashes(tiles[key]) for key in all_tiles(size)}
    for level in range(size.bit_length()):
        for index in range(size >> level):
            tile_level, n, start, count = node_tile((level, index))
            hashes = split[(tile_level, n)][start:start + count]
            assert hash_up(hashes) == TABLE[(level, index)], (level, index)


def edge_of(size: int) -> dict[int, bytes]:
    """What storage loads to resume: the right-edge partial tiles as of `size`."""
    return {level: expected_tile((level, n), size)
            for level, n, _ in TreeBuilder.edge_keys(size)}


@pytest.mark.parametrize(("n", "text"), [
    (0, "000"), (5, "005"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067"),
    (1000000, "x001/x000/000"), (2**64 - 1, "x018/x446/x744/x073/x709/x551/615"),
])
def test_index_is_written_in_groups_of_three_digits(n: int, text: str) -> None:
    assert format_index(n) == text


@pytest.mark.parametrize(("args", "path"), [
    ((0, 1234067), "tile/0/x001/x234/067"),
    ((0, 1234067, 5), "tile/0/x001/x234/067.p/5"),
    ((1, 0, 255), "tile/1/000.p/255"),
    ((63, 0, 256), "tile/63/000"),
    ((-1, 5), "tile/entries/005"),
    ((-1, 1234, 17), "tile/entries/x001/234.p/17"),
])
def test_tile_paths_follow_c2sp(args: tuple[int, ...], path: str) -> None:
    assert tile_path(*args) == path
    level, n, *width = args
    assert parse_tile_path(path) == (level, n, width[0] if width else TILE_WIDTH)


@pytest.mark.parametrize("args", [(-2, 0), (64, 0), (0, -1), (0, 0, 0), (0, 0, 257)])
def test_tile_path_refuses_coordinates_that_do_not_exist(args: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        tile_path(*args)


@given(st.integers(-1, 63), st.integers(0, 2**64 - 1), st.integers(1, 256))
def test_every_tile_path_parses_back_to_its_coordinates(level: int, n: int, width: int) -> None:
    assert parse_tile_path(tile_path(level, n, width)) == (level, n, width)


@pytest.mark.parametrize("path", [
    "tile/0/x000/005", "tile/0/005.p/0", "tile/0/005.p/256", "tile/01/005", "tile/-1/005",
    "tile/0/5", "tile/0/0005", "tile/0/05", "tile/0/005.p/05", "tile/0/005.p/+5",
    "tile/0/x1/005", "tile/0/00a", "tile/0/x001", "tile/0/005/", "/tile/0/005", "tile/0/005\n",
    " tile/0/005", "tile/0/005.p/", "tile/0/005.p/1.p/1", "tile/0/\u0660\u0660\u0665",
    "tile/64/000", "tile/99/000", "tile/100/000", "tile/entries/x000/001", "tile/data/000",
    "tile/8/0/000", "tile/0/-01", "tile/0/x018/x446/x744/x073/x709/x551/616",
    "tile/0/x001/x000/x000/x000/x000/x000/x000/000", "tile/entries", "tile/0", "",
    "tile/0/x001/x005", "tile/0/x1000/005", "TILE/0/005", "tile/0/005.P/5",
])
def test_non_canonical_tile_path_is_rejected(path: str) -> None:
    """One tile, one path: caches and clients must never see two names for the same tile."""
    with pytest.raises(ValueError):
        parse_tile_path(path)


@pytest.mark.parametrize(("level", "n", "size", "width"), [
    (0, 0, 0, 0), (0, 0, 255, 255), (0, 0, 256, 256), (0, 1, 256, 0), (0, 1, 300, 44),
    (1, 0, 255, 0), (1, 0, 256, 1), (1, 0, 65535, 255), (1, 0, 65536, 256), (2, 0, 65536, 1),
    (1, 1, 65536, 0), (-1, 1, 300, 44), (0, 5, 1000, 0),
])
def test_tile_width_is_floor_of_size_over_256_to_the_level(level: int, n: int, size: int,
                                                           width: int) -> None:
    assert tile_width(level, n, size) == width


@pytest.mark.parametrize(("node", "where"), [
    ((0, 5), (0, 0, 5, 1)), ((0, 300), (0, 1, 44, 1)), ((3, 1), (0, 0, 8, 8)),
    ((7, 1), (0, 0, 128, 128)), ((7, 2), (0, 1, 0, 128)), ((8, 0), (1, 0, 0, 1)),
    ((9, 3), (1, 0, 6, 2)),
    ((15, 1), (1, 0, 128, 128)), ((16, 2), (2, 0, 2, 1)),
])
def test_node_tile_locates_the_hashes_under_a_node(node: Node,
                                                   where: tuple[int, int, int, int]) -> None:
    assert node_tile(node) == where


def test_node_tile_rejects_negative_coordinates() -> None:
    for node in [(-1, 0), (0, -1)]:
        with pytest.raises(ValueError):
            node_tile(node)


def test_hash_up_is_the_root_of_a_perfect_subtree() -> None:
    for k in range(9):
        assert hash_up(LEAVES[:2**k]) == root_of(LEAVES[:2**k])
    for count in [0, 3, 6, 255]:
        with pytest.raises(ValueError):
            hash_up(LEAVES[:count])


def test_split_hashes_rejects_partial_hashes() -> None:
    assert split_hashes(b"") == []
    assert split_hashes(b"".join(LEAVES[:3])) == LEAVES[:3]
    for size in [1, 31, 33, 95]:
        with pytest.raises(ValueError):
            split_hashes(b"\x00" * size)


def test_bundle_is_length_prefixed_entries() -> None:
    assert encode_bundle([b"ab", b"", b"c"]) == b"\x00\x02ab\x00\x00\x00\x01c"
    entries = [b"", b"x" * MAX_ENTRY_SIZE, bytes(range(256))]
    assert decode_bundle(encode_bundle(entries), 3) == entries
    assert decode_bundle(b"", 0) == []


def test_bundle_refuses_an_entry_too_large_for_its_length_prefix() -> None:
    with pytest.raises(ValueError):
        encode_bundle([b"x" * (MAX_ENTRY_SIZE + 1)])


@pytest.mark.parametrize(("data", "count"), [
    (b"\x00\x02ab\x00", 2),            # truncated inside a length prefix
    (b"\x00\x02ab\x00\x03cd", 2),      # truncated inside an entry
    (b"\x00\x02a", 1),                 # truncated first entry
    (b"\x00\x02ab\x00", 1),            # trailing byte
    (b"\x00\x02ab\x00\x00", 1),        # one entry too many
    (b"\x00\x02ab", 2),                # one entry too few
    (b"\x00\x02ab", 0),
    (b"", 1),
    (b"", -1),
    (b"\x00\x00" * 257, 257),          # more than a bundle can hold
])
def test_malformed_bundle_is_rejected(data: bytes, count: int) -> None:
    """A bundle must hold exactly the entries the tree size says, so a mirror cannot hide or
    smuggle an entry."""
    with pytest.raises(ValueError):
        decode_bundle(data, count)


@pytest.mark.parametrize(("size", "keys"), [
    (0, []), (1, [(0, 0, 1)]), (255, [(0, 0, 255)]), (256, [(1, 0, 1)]),
    (257, [(0, 1, 1), (1, 0, 1)]), (65535, [(0, 255, 255), (1, 0, 255)]),
    (65536, [(2, 0, 1)]), (65536 + 256 + 3, [(0, 257, 3), (1, 1, 1), (2, 0, 1)]),
])
def test_edge_keys_name_the_nonempty_right_edge_tiles(size: int,
                                                      keys: list[tuple[int, int, int]]) -> None:
    assert TreeBuilder.edge_keys(size) == keys


def test_empty_builder_has_empty_root_and_no_tiles() -> None:
    builder = TreeBuilder()
    assert builder.size == 0
    assert builder.root() == EMPTY_ROOT
    assert builder.take_changed() == {}


def test_completed_tile_moves_up_and_leaves_no_empty_tile_behind() -> None:
    builder = TreeBuilder()
    for h in LEAVES[:256]:
        builder.append(h)
    changed = builder.take_changed()
    assert set(changed) == {(0, 0), (1, 0)}
    assert changed[(1, 0)] == hash_up(LEAVES[:256])
    assert builder.take_changed() == {}


def test_builder_matches_reference_at_every_size() -> None:
    """Root and tiles agree with the reference after each append; every node is readable."""
    builder, stored = TreeBuilder(), {}
    assert builder.root() == EMPTY_ROOT
    for size in range(1, SMALL + 1):
        builder.append(LEAVES[size - 1])
        assert builder.size == size
        assert builder.root() == reference_root(size)
        changed = builder.take_changed()
        check_changed(changed, size - 1, size)
        stored.update(changed)
        if size % 97 == 0 or size in (1, 255, 256, 257, SMALL):
            check_nodes_from_tiles(stored, size)


def test_builder_resumed_from_edge_tiles_continues_identically() -> None:
    """A restarted sequencer resumes from stored partial tiles and must write the same tiles
    and roots as one that never stopped, whatever the prefix."""
    for size in range(SMALL):
        builder = TreeBuilder(size, edge_of(size))
        assert builder.root() == reference_root(size)
        assert builder.take_changed() == {}
        extra = 300 if size % 256 in (0, 1, 255) else 3
        for h in LEAVES[size:size + extra]:
            builder.append(h)
        assert builder.root() == reference_root(size + extra)
        check_changed(builder.take_changed(), size, size + extra)


def test_builder_across_the_second_tile_level_boundary() -> None:
    """Around 65536 = 256**2 leaves a level-1 tile fills and level 2 appears."""
    builder, stored, taken = TreeBuilder(), {}, 0
    for size in range(1, AROUND_65536.stop + 1):
        builder.append(LEAVES[size - 1])
        if size % 4096 == 0 or size in AROUND_65536:
            changed = builder.take_changed()
            check_changed(changed, taken, size)
            stored.update(changed)
            taken = size
        if (size in AROUND_65536 and size % 7 == 0) or size in (65535, 65536, 65537):
            want = fold([TABLE[n] for n in root_nodes(size)])
            assert builder.root() == want
    end = AROUND_65536.stop
    changed = builder.take_changed()
    check_changed(changed, taken, end)
    stored.update(changed)
    assert builder.root() == reference_root(end)
    check_nodes_from_tiles(stored, end)
    for size in (65279, 65280, 65535, 65536, 65537, 65792):
        resumed = TreeBuilder(size, edge_of(size))
        for h in LEAVES[size:end]:
            resumed.append(h)
        assert resumed.root() == builder.root()
        check_changed(resumed.take_changed(), size, end)


@pytest.mark.parametrize(("size", "edge"), [
    (-1, {}),
    (5, {}),
    (5, {0: b"".join(LEAVES[:4])}),
    (5, {0: b"".join(LEAVES[:5]), 1: LEAVES[0]}),
    (256, {0: LEAVES[0]}),
    (256, {1: LEAVES[0] + b"\x00"}),
])
def test_builder_refuses_edge_tiles_that_do_not_fit_the_size(size: int,
                                                             edge: dict[int, bytes]) -> None:
    """Resuming from a torn or mismatched edge would silently fork the tree."""
    with pytest.raises(ValueError):
        TreeBuilder(size, edge)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_builder_refuses_a_leaf_hash_of_wrong_length(bad: bytes) -> None:
    builder = TreeBuilder()
    with pytest.raises(ValueError):
        builder.append(bad)
    assert builder.size == 0


def test_nodes_from_tiles_reads_every_node_from_the_tiles_it_names() -> None:
    size = 700
    builder = TreeBuilder()
    for h in LEAVES[:size]:
        builder.append(h)
    tiles = builder.take_changed()
    nodes = [(level, i) for level in range(size.bit_length()) for i in range(size >> level)]
    assert set(tiles_for_nodes(nodes)) <= set(tiles)
    assert nodes_from_tiles(nodes, tiles) == {n: TABLE[n] for n in nodes}


def test_nodes_from_tiles_refuses_a_missing_or_short_tile() -> None:
    builder = TreeBuilder()
    for h in LEAVES[:300]:
        builder.append(h)
    tiles = builder.take_changed()
    with pytest.raises(ValueError, match="missing or too short"):
        nodes_from_tiles([(0, 299)], {**tiles, (0, 1): tiles[(0, 1)][:32]})
    with pytest.raises(ValueError, match="missing or too short"):
        nodes_from_tiles([(8, 0)], {})


def test_kept_subtree_hashes_of_full_tiles_are_the_tiles_own() -> None:
    """Node hashes come from kept levels for full tiles: they must equal hashing the tile's
    hashes afresh, for every node of two different full tiles and a partial one."""
    from verifier.protocol.tiles import hash_up, nodes_from_tiles, split_hashes
    tiles = {(0, n): bytes((n * 7 + i) % 256 for i in range(32 * 256)) for n in range(2)}
    tiles[(0, 2)] = bytes(range(32)) * 100
    for _ in range(2):  # the second pass reads the kept levels
        for n, width in ((0, 256), (1, 256), (2, 100)):
            hashes = split_hashes(tiles[(0, n)])
            for k in range(8):
                for i in range(width >> k):
                    node = (k, ((n * 256) >> k) + i)
                    want = hash_up(hashes[i << k:(i + 1) << k])
                    assert nodes_from_tiles([node], tiles)[node] == want
