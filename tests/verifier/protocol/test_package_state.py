"""Package states built from entries in log order, and the hash the map commits to."""

from __future__ import annotations

import hashlib

import pytest
import rfc8785

from verifier.protocol.package_state import (
    Record,
    StateBuilder,
    StateError,
    build_states,
    package_key,
    state_hash,
)


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
        "lifecycle": {"1.1": {"kind": "halt/v1", "index": 4, "leaf_hash": lh(4).hex()}},
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
