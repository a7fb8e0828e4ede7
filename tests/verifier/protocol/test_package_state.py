"""Package states built from entries in log order, and the hash the map commits to."""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785

from verifier.protocol.package_state import (
    Record,
    StateBuilder,
    StateError,
    build_states,
    check_map_root_leaf,
    map_root_entry,
    package_key,
    parse_map_root_entry,
    state_hash,
    verify_no_state,
    verify_state,
)
from verifier.protocol.statemap import MapProofError, SparseMap


def lh(n: int) -> bytes:
    return hashlib.sha256(bytes([n])).digest()


def rel(i: int, package: str, version: str, counter: int | None = None) -> Record:
    return Record(i, lh(i), "release/v1", package, version, counter)


def life(i: int, kind: str, package: str, version: str) -> Record:
    return Record(i, lh(i), kind, package, version)


def test_state_follows_the_contract() -> None:
    states = build_states(
        [
            rel(0, "app", "1.0", 5),
            rel(1, "other", "0.1"),
            rel(2, "app", "1.1", 7),
            life(3, "rollout/v1", "app", "1.1"),
            life(4, "halt/v1", "app", "1.1"),
            rel(5, "app", "1.0.1", 6),
        ]
    )
    assert states["app"] == {
        "package": "app",
        "releases": [
            {"version": "1.0", "index": 0, "leaf_hash": lh(0).hex(), "counter": 5},
            {"version": "1.1", "index": 2, "leaf_hash": lh(2).hex(), "counter": 7},
            {"version": "1.0.1", "index": 5, "leaf_hash": lh(5).hex(), "counter": 6},
        ],
        "lifecycle": {"1.1": {"kind": "halt/v1", "index": 4, "leaf_hash": lh(4).hex(),
                              "rollout": {"index": 3, "leaf_hash": lh(3).hex()}}},
        "counter": 7,
    }
    assert states["other"]["counter"] is None
    assert states["other"]["lifecycle"] == {}


def test_state_hash_is_domain_separated_jcs() -> None:
    state = build_states([rel(0, "app", "1.0")])["app"]
    want = hashlib.sha256(b"tlog/package-state/v1\n" + rfc8785.dumps(state)).digest()
    assert state_hash(state) == want
    assert package_key("app") == hashlib.sha256(b"app").digest()


def test_halt_changes_the_hash() -> None:
    """A state that leaves out a halt hashes differently, so the map cannot hide it."""
    before = build_states([rel(0, "app", "1.0")])["app"]
    after = build_states([rel(0, "app", "1.0"), life(1, "halt/v1", "app", "1.0")])["app"]
    assert state_hash(before) != state_hash(after)


def test_the_rollout_a_resume_puts_back_in_force_is_named_next_to_it() -> None:
    """The state keeps one statement per version; after halt -> resume the client needs the
    rollout before them, so the state names it (and a rollout needs no second name)."""
    records = [rel(0, "app", "1.0"), life(1, "rollout/v1", "app", "1.0"),
               life(2, "rollout/v1", "app", "1.0"), life(3, "halt/v1", "app", "1.0"),
               life(4, "resume/v1", "app", "1.0")]
    latest = build_states(records)["app"]["lifecycle"]["1.0"]
    assert latest == {"kind": "resume/v1", "index": 4, "leaf_hash": lh(4).hex(),
                      "rollout": {"index": 2, "leaf_hash": lh(2).hex()}}
    assert "rollout" not in build_states(records[:3])["app"]["lifecycle"]["1.0"]
    assert "rollout" not in build_states(
        [rel(0, "app", "1.0"), life(1, "halt/v1", "app", "1.0")])["app"]["lifecycle"]["1.0"]
    without = build_states(records)["app"]
    del without["lifecycle"]["1.0"]["rollout"]
    assert state_hash(without) != state_hash(build_states(records)["app"])


def test_lifecycle_for_unlogged_release_refused() -> None:
    with pytest.raises(StateError, match="not logged before"):
        build_states([rel(0, "app", "1.0"), life(1, "yank/v1", "app", "2.0")])
    with pytest.raises(StateError, match="not logged before"):
        build_states([life(0, "halt/v1", "app", "1.0")])


def test_out_of_order_and_unknown_kinds_refused() -> None:
    with pytest.raises(StateError, match="not after"):
        build_states([rel(1, "app", "1.0"), rel(1, "app", "1.1")])
    with pytest.raises(StateError, match="no package state"):
        build_states([Record(0, lh(0), "publisher/v1", "app", "1.0")])
    with pytest.raises(StateError, match="twice"):
        build_states([rel(0, "app", "1.0"), rel(1, "app", "1.0")])


def test_incremental_equals_whole() -> None:
    records = [
        rel(0, "a", "1"),
        rel(1, "b", "1"),
        life(2, "rollout/v1", "a", "1"),
        rel(3, "a", "2"),
    ]
    builder = StateBuilder()
    assert builder.apply(records[:2]) == {"a", "b"}
    assert builder.apply(records[2:]) == {"a"}
    assert builder.states == build_states(records)
    assert builder.updates(["a"]) == [(package_key("a"), state_hash(builder.states["a"]))]


def test_log_hiding_a_halt_is_caught_by_the_client() -> None:
    """The log answers "state of app" with the state before the halt: the proof fails,
    whether it sends the proof of the real leaf or invents one for the old state."""
    records = [rel(0, "app", "1.0"), rel(1, "lib", "2.0"), life(2, "halt/v1", "app", "1.0")]
    builder = StateBuilder()
    smap = SparseMap()
    smap.apply(smap.update(builder.updates(builder.apply(records[:2]))))
    old_proof, old_state = (
        smap.prove(package_key("app")),
        json.loads(json.dumps(builder.states["app"])),
    )
    smap.apply(smap.update(builder.updates(builder.apply(records[2:]))))
    root, proof = smap.root(), smap.prove(package_key("app"))
    verify_state(root, "app", builder.states["app"], proof)
    for stale_proof in (proof, old_proof):
        with pytest.raises(MapProofError):
            verify_state(root, "app", old_state, stale_proof)
    with pytest.raises(MapProofError):
        verify_no_state(root, "app", proof)
    with pytest.raises(MapProofError, match="not 'lib'"):
        verify_state(root, "lib", builder.states["app"], proof)
    verify_no_state(root, "never-released", smap.prove(package_key("never-released")))


def test_map_root_entry_round_trip() -> None:
    leaf = map_root_entry(41, lh(9))
    assert leaf == b'{"kind":"map-root/v1","root":"' + lh(9).hex().encode() + b'","size":41}'
    assert parse_map_root_entry(leaf) == (41, lh(9))
    assert check_map_root_leaf(42, leaf) == lh(9)


def test_stale_map_root_refused() -> None:
    """A checkpoint's map root must be its last leaf: an older map-root entry (from before
    a halt) offered for a larger checkpoint is refused."""
    with pytest.raises(StateError, match="covers 41 entries, not the 99"):
        check_map_root_leaf(100, map_root_entry(41, lh(9)))


@pytest.mark.parametrize(
    "leaf",
    [
        b"",
        b"[]",
        b'{"kind":"map-root/v1","root":"' + b"AB" * 32 + b'","size":1}',
        b'{"kind":"map-root/v1","root":"' + b"ab" * 31 + b'","size":1}',
        b'{"kind":"map-root/v2","root":"' + b"ab" * 32 + b'","size":1}',
        b'{"kind":"map-root/v1","root":"' + b"ab" * 32 + b'","size":-1}',
        b'{"kind":"map-root/v1","root":"' + b"ab" * 32 + b'","size":1.0}',
        b'{"kind":"map-root/v1","root":"' + b"ab" * 32 + b'","size":true}',
        b'{"kind":"map-root/v1","root":"' + b"ab" * 32 + b'","size":1,"x":1}',
        b'{"kind":"map-root/v1", "root":"' + b"ab" * 32 + b'","size":1}',
        b'{"root":"' + b"ab" * 32 + b'","kind":"map-root/v1","size":1}',
        b'{"kind":"map-root/v1","kind":"map-root/v1","root":"' + b"ab" * 32 + b'","size":1}',
    ],
)
def test_malformed_map_root_entry_refused(leaf: bytes) -> None:
    with pytest.raises(StateError):
        parse_map_root_entry(leaf)
