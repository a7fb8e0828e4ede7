"""built_state_hash (the log's and monitor's fast path) must equal state_hash (RFC 8785 by
rfc8785) for every state built from records, whatever the strings hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.protocol.package_state import (
    LIFECYCLE_KINDS,
    RELEASE_KIND,
    Record,
    StateBuilder,
    built_state_hash,
    state_hash,
)

texts = st.one_of(st.text(min_size=1, max_size=12),
                  st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127),
                          min_size=1, max_size=12),
                  st.sampled_from(['a"b', "a\\b", "a\\u0041", "\u00e9", "\U0001f600", "\x7f"]))
counters = st.one_of(st.none(), st.integers(min_value=-(2**60), max_value=2**60))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(texts, texts, counters, st.sampled_from(sorted(LIFECYCLE_KINDS))),
                min_size=1, max_size=8))
def test_the_fast_state_hash_is_rfc8785s(items: list[tuple[str, str, int | None, str]]) -> None:
    builder = StateBuilder()
    index = 0
    for package, version, counter, kind in items:
        if version in {r["version"] for r in builder.states.get(package, {}).get("releases", [])}:
            continue
        builder.apply([Record(index, bytes(32), RELEASE_KIND, package, version, counter)])
        builder.apply([Record(index + 1, bytes([1]) * 32, kind, package, version)])
        index += 2
    for state in builder.states.values():
        try:
            expected = state_hash(state)
        except Exception:  # rfc8785 refuses counters beyond 2**53 - 1: so must the fast path
            try:
                built_state_hash(state)
            except Exception:
                continue
            raise AssertionError("the fast path hashed a state JCS cannot represent") from None
        assert built_state_hash(state) == expected


def test_a_seeded_builder_leaves_its_seed_untouched() -> None:
    first = StateBuilder()
    first.apply([Record(0, bytes(32), RELEASE_KIND, "p", "1")])
    seed = first.states
    second = StateBuilder(seed, after=0)
    second.apply([Record(1, bytes(32), RELEASE_KIND, "p", "2"),
                  Record(2, bytes(32), "halt/v1", "p", "1")])
    assert [r["version"] for r in seed["p"]["releases"]] == ["1"] and seed["p"]["lifecycle"] == {}
    assert [r["version"] for r in second.states["p"]["releases"]] == ["1", "2"]


def test_a_state_read_back_from_json_hashes_the_same() -> None:
    import json
    builder = StateBuilder()
    builder.apply([Record(i, bytes([i]) * 32, RELEASE_KIND, "p", f"1.{i}", i) for i in range(5)])
    state = builder.states["p"]
    assert built_state_hash(json.loads(json.dumps(state))) == built_state_hash(state) == \
        state_hash(state)
