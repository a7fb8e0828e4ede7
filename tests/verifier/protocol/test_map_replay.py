"""verifier.protocol.map_replay: the package state map recomputed by an auditor or monitor."""

from __future__ import annotations

import hashlib

from verifier.protocol.leaves import check_leaves
from verifier.protocol.map_replay import MapReplay, MapRootLeaf, map_item
from verifier.protocol.package_state import (
    Record,
    build_states,
    map_root_entry,
    package_key,
    state_hash,
)
from verifier.protocol.statemap import SparseMap


def lh(i: int) -> bytes:
    return hashlib.sha256(b"leaf %d" % i).digest()


def rel(i: int, package: str, version: str) -> Record:
    return Record(i, lh(i), "release/v1", package, version)


def halt(i: int, package: str, version: str) -> Record:
    return Record(i, lh(i), "halt/v1", package, version)


def root_of(records: list[Record]) -> bytes:
    """The map root over the states of `records`, computed without map_replay."""
    states = build_states(records)
    smap = SparseMap({})
    return smap.update([(package_key(p), state_hash(s)) for p, s in states.items()]).root


def test_honest_map_roots_match_and_the_last_one_ends_the_checkpoint() -> None:
    first = [rel(0, "app", "1.0"), rel(1, "lib", "2.0")]
    replay = MapReplay()
    assert replay.feed([*first, MapRootLeaf(2, lh(2), 2, root_of(first))]) == []
    second = [*first, halt(3, "app", "1.0")]
    assert replay.feed([second[-1], MapRootLeaf(4, lh(4), 4, root_of(second))]) == []
    assert replay.ends_with_map_root(5) and not replay.ends_with_map_root(4)
    assert replay.states["app"]["lifecycle"]["1.0"]["kind"] == "halt/v1"


def test_a_map_root_omitting_a_halt_is_a_mismatch_with_both_roots() -> None:
    before = [rel(0, "app", "1.0")]
    replay = MapReplay()
    assert replay.feed([*before, MapRootLeaf(1, lh(1), 1, root_of(before))]) == []
    [found] = replay.feed([halt(2, "app", "1.0"), MapRootLeaf(3, lh(3), 3, root_of(before))])
    honest = root_of([*before, halt(2, "app", "1.0")])
    assert (found.index, found.committed_root, found.recomputed_root) == (3, root_of(before),
                                                                         honest)
    assert found.evidence()["leaf_hash"] == lh(3).hex()
    assert "commits to map root" in found.message()


def test_a_map_root_covering_another_size_than_its_index_is_a_mismatch() -> None:
    records = [rel(0, "app", "1.0")]
    [found] = MapReplay().feed([*records, MapRootLeaf(1, lh(1), 0, root_of(records))])
    assert found.size == 0 and "claims to cover 0 entries, not the 1 before it" in \
        found.message()


def test_a_restored_replay_continues_as_if_never_stopped() -> None:
    records = [rel(0, "app", "1.0"), rel(1, "lib", "2.0")]
    replay = MapReplay()
    replay.feed([records[0], MapRootLeaf(1, lh(1), 1, root_of(records[:1]))])
    replay.feed([Record(2, lh(2), "release/v1", "lib", "2.0")])  # pending at the stop
    resumed = MapReplay.restore(replay.states, replay.pending, replay.last_root)
    later = [records[0], Record(2, lh(2), "release/v1", "lib", "2.0")]
    assert resumed.feed([MapRootLeaf(3, lh(3), 3, root_of(later))]) == []
    assert resumed.builder.last_index == 2


def test_map_root_leaves_are_valid_entries_and_malformed_ones_are_not() -> None:
    good = map_root_entry(0, b"\x01" * 32)
    bad = good.replace(b'"size":0', b'"size":00')
    [ok, wrong] = check_leaves(0, [good, bad])
    assert ok.error is None and map_item(ok) == MapRootLeaf(0, ok.leaf_hash, 0, b"\x01" * 32)
    assert wrong.error is not None and wrong.error.startswith("invalid_entry: map root entry")
    assert map_item(wrong) is None


def test_incremental_state_hashes_equal_state_hash_as_states_grow() -> None:
    """A hasher that kept a wrong encoding would recompute a wrong root: every monitor would
    then alert on an honest log, or (worse) agree with a log that hashes the same wrong way."""
    import json
    import random

    from verifier.protocol.package_state import StateBuilder, StateHasher

    rng = random.Random(7)
    versions = ["1.0", "2.0-rc.1", "é-1", "tab\there", "quote\"back\\slash", "\x7f\x01",
                "𝟘.1", "u\u2028sep"]
    builder, hasher, plain, index = StateBuilder(), StateHasher(), StateHasher(), 0
    for step in range(60):
        package = rng.choice(["app", "lib", "ünï"])
        version = f"{rng.choice(versions)}.{step}"
        records = [Record(index, lh(index), "release/v1", package, version,
                          rng.choice([None, step, 2**53 - 1]))]
        if step % 3 == 0:
            records.append(Record(index + 1, lh(index + 1), rng.choice(
                ["rollout/v1", "halt/v1", "yank/v1", "resume/v1"]), package, version))
        index += len(records)
        for p in builder.apply(records):
            state = builder.states[p]
            assert hasher.hash(state) == state_hash(state)
            assert json.loads(hasher.text(state)) == state
            # Releases as plain dicts (read back from JSON) are encoded by the hasher itself.
            copy = json.loads(json.dumps(state))
            assert plain.hash(copy) == state_hash(state)
    # A state that is not the one kept (another state of the same package) is encoded afresh.
    other = build_states([rel(0, "app", "9.9")])["app"]
    assert hasher.hash(other) == state_hash(other)
