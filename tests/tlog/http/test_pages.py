"""tlog.http.pages: entries answered from their stored JCS bytes, byte for byte as
json.dumps(json.loads(leaf)) answered them, and pages cut by count and by bytes."""

from __future__ import annotations

import json
from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.http.pages import build_page, dumps_form
from verifier.protocol.merkle import leaf_hash

# What a JCS text can hold: the separators and quotes inside strings, escapes, non-ASCII of
# every UTF-8 length, DEL, and floats JCS and Python spell differently (1e-7, 0.00001).
TEXT = st.text(alphabet=st.sampled_from(
    list('a,:"\\ /u0{}[]\x00\x01\n\x1f\x7f\u00e9\u20ac\u2028\U0001f600')), max_size=8)
NUMBERS = st.one_of(
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.sampled_from([1e-7, 3.3e-5, 0.00001234, 1e21, 1.5e-300, 2.5e300, -1e-6, 123.456, 0.5]),
    st.floats(allow_nan=False, allow_infinity=False))
SCALARS = st.one_of(TEXT, NUMBERS, st.booleans(), st.none())
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=30)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(TEXT, TREES, max_size=5))
def test_entries_are_answered_byte_for_byte_as_json_dumps_answered_them(
        entry: dict[str, Any]) -> None:
    leaf = rfc8785.dumps(entry)
    assert dumps_form(leaf) == json.dumps(json.loads(leaf)).encode()


def test_nested_empty_lists_are_answered_without_parsing_them() -> None:
    leaf = rfc8785.dumps({"metadata": [[[]] for _ in range(15000)], "k": "v,:"})
    assert dumps_form(leaf) == json.dumps(json.loads(leaf)).encode()


def test_a_page_ends_before_the_entry_that_would_pass_the_byte_bound() -> None:
    rows = [(i, rfc8785.dumps({"n": i, "pad": "x" * 300})) for i in range(10)]
    item = len(json.dumps({"index": 0, "leaf_hash": leaf_hash(rows[0][1]).hex(),
                           "entry": json.loads(rows[0][1])})) + 2
    page = json.loads(build_page(rows, 10, 3 * item))
    assert [e["index"] for e in page["entries"]] == [0, 1, 2] and page["next_after"] == 2
    whole = json.loads(build_page(rows, 10, 100 * item))
    assert len(whole["entries"]) == 10 and whole["next_after"] == 9  # full: count bound
    short = json.loads(build_page(rows[:4], 10, 100 * item))
    assert len(short["entries"]) == 4 and short["next_after"] is None  # the last page
    # The store stopped at the byte bound: the rows it gave fit, but more may remain.
    cut = json.loads(build_page(rows[:2], 10, len(rows[0][1]) + len(rows[1][1])))
    assert cut["next_after"] is not None
    assert build_page([], 10, 1024) == b'{"entries": [], "next_after": null}'


def test_an_entry_larger_than_the_bound_is_a_page_alone() -> None:
    rows = [(5, rfc8785.dumps({"pad": "x" * 5000})), (6, rfc8785.dumps({"pad": "y"}))]
    page = json.loads(build_page(rows, 10, 1024))
    assert [e["index"] for e in page["entries"]] == [5] and page["next_after"] == 5
