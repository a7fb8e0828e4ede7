"""Differential tests of the leaf fast path (verifier/protocol/entries/fast.py).

parse_leaf and parse_log_leaf try a fast path that only ever accepts and defer everything
else to parse_leaf_exact / parse_log_leaf_exact. These tests check, over generated valid and
broken leaves, that both give the same Release / RegistryEntry or the same error code and
message, and that the fast path really takes the plain valid leaves.
"""

from __future__ import annotations

import base64
import copy
import json
import string
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.verifier.protocol.test_entry import SHA, fields
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.fast import encode, fast_check_signed, fast_message, fast_tree
from verifier.protocol.entries.kinds import (
    KINDS,
    REGISTRY_KINDS,
    parse_log_leaf,
    parse_log_leaf_exact,
)
from verifier.protocol.entries.registry_kinds import KEYS_KIND, PUBLISHER_KIND, REVOKE_KIND
from verifier.protocol.entries.release import fast_release, parse_leaf, parse_leaf_exact
from verifier.protocol.entries.schema import load_schema
from verifier.protocol.entries.signing import MAX_ENTRY_SIZE, sign_entry, signed_message
from verifier.protocol.entries.strict_json import MAX_DEPTH, parse_json
from verifier.protocol.note import Signer, generate_key

ALICE = generate_key("example.com/alice")
BOB = generate_key("example.com/bob")
ADMIN = generate_key("log-admin")

Outcome = tuple[Any, ...]


def outcome(parse: Callable[[bytes], Any], leaf: bytes) -> Outcome:
    try:
        return ("ok", parse(leaf))
    except Exception as e:  # any exception must match too, not only EntryError
        return ("error", type(e).__name__, getattr(e, "code", None), str(e))


def same_decisions(leaf: bytes) -> Outcome:
    """Assert that the fast and exact paths agree on `leaf`; return the exact outcome."""
    exact = outcome(parse_leaf_exact, leaf)
    assert outcome(parse_leaf, leaf) == exact
    log_exact = outcome(parse_log_leaf_exact, leaf)
    assert outcome(parse_log_leaf, leaf) == log_exact
    # The fast path's parts on their own: whatever they accept, the exact path accepts with
    # an equal result.
    obj = fast_tree(leaf)
    if obj is not None:
        release = fast_release(copy.deepcopy(obj), leaf)
        if release is not None:
            assert exact == ("ok", release)
        kind = obj.get("kind")
        if kind in REGISTRY_KINDS:
            signed = fast_check_signed(copy.deepcopy(obj), leaf, KINDS[kind].schema)
            if signed is not None and log_exact[0] == "ok":
                assert log_exact[1].signed == signed
    return log_exact


def fast_accepts(leaf: bytes) -> bool:
    obj = fast_tree(leaf)
    if obj is None:
        return False
    kind = obj.get("kind")
    if kind in REGISTRY_KINDS:
        return fast_check_signed(obj, leaf, KINDS[kind].schema) is not None
    return fast_release(obj, leaf) is not None


def has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(has_float(v) for v in value)
    return False


def check(leaf: bytes) -> Outcome:
    """same_decisions, plus: a valid ASCII leaf without floats must take the fast path."""
    result = same_decisions(leaf)
    if result[0] == "ok" and leaf.isascii() and not has_float(parse_json(leaf)):
        assert fast_accepts(leaf), leaf[:200]
    return result




def jcs(entry: dict[str, Any]) -> bytes:
    try:
        return bytes(rfc8785.dumps(entry))
    except Exception:  # big integers, surrogates: any faithful encoding will do
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"),
                          sort_keys=True).encode("utf-8", "surrogatepass")


def signed_or_not(entry_fields: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """The signed entry, or for fields JCS cannot encode one with a dummy signature."""
    try:
        return sign_entry(entry_fields, signer)
    except EntryError:
        entry = copy.deepcopy(entry_fields)
        entry["key"] = signer.verifier().text()
        entry["signature"] = base64.b64encode(bytes(64)).decode()
        return entry


def leaf_of(signer: Signer = ALICE, **changes: Any) -> bytes:
    return jcs(sign_entry(fields(**changes), signer))


VALID = leaf_of()


# -- examples --------------------------------------------------------------------------------


def test_plain_valid_leaf_takes_the_fast_path() -> None:
    assert check(VALID)[0] == "ok"
    assert fast_accepts(VALID)
    assert parse_leaf(VALID) == parse_leaf_exact(VALID)


def test_all_optional_members_take_the_fast_path() -> None:
    leaf = leaf_of(install_window={"not_before": "2025-01-01T00:00:00Z",
                                   "not_after": "2026-01-01T00:00:00.5Z"},
                   rollout={"stage": "canary", "percent": 5},
                   metadata={"purpose": "fix", "n": [1, -2, 2**53 - 1, -(2**53 - 1)],
                             "deep": {"a": {"b": [None, True, False, "x\u0001\"\\/"]}}})
    assert check(leaf)[0] == "ok"
    assert fast_accepts(leaf)


def test_no_counter_takes_the_fast_path() -> None:
    leaf = leaf_of(counter=None)
    assert check(leaf)[0] == "ok" and fast_accepts(leaf)


def replace_once(leaf: bytes, old: bytes, new: bytes) -> bytes:
    assert old in leaf
    return leaf.replace(old, new, 1)


BROKEN = {
    "whitespace after {": VALID.replace(b"{", b"{ ", 1),
    "trailing newline": VALID + b"\n",
    "leading space": b" " + VALID,
    "BOM": b"\xef\xbb\xbf" + VALID,
    "trailing garbage": VALID + b"x",
    "two values": VALID + VALID,
    "escaped slash": replace_once(VALID, b"example.com/tool", b"example.com\\/tool"),
    "escaped letter in value": replace_once(VALID, b'"1.2.0"', b'"1.2.\\u0030"'),
    "escaped letter in name": replace_once(VALID, b'"kind"', b'"\\u006bind"'),
    "upper-case escape": replace_once(VALID, b'"1.2.0"', b'"1.2.\\u0030"').replace(b"u0030",
                                                                                  b"U0030"),
    "duplicate top-level member": replace_once(VALID, b'{"artifacts"',
                                               b'{"version":"9","artifacts"'),
    "duplicate same value": replace_once(VALID, b'"version":"1.2.0"',
                                         b'"version":"1.2.0","version":"1.2.0"'),
    "duplicate artifact member": replace_once(VALID, b'{"name"', b'{"size":1,"name"'),
    "unsorted members": json.dumps(json.loads(VALID), separators=(",", ":")).encode()
    .replace(b'{"artifacts"', b'{"kind":"release/v1","artifacts"').replace(
        b',"kind":"release/v1"', b"", 1),
    "counter 7.0": replace_once(VALID, b'"counter":7', b'"counter":7.0'),
    "counter 7e0": replace_once(VALID, b'"counter":7', b'"counter":7e0'),
    "counter 7E0": replace_once(VALID, b'"counter":7', b'"counter":7E0'),
    "counter 07": replace_once(VALID, b'"counter":7', b'"counter":07'),
    "counter -0": replace_once(VALID, b'"counter":7', b'"counter":-0'),
    "counter true": replace_once(VALID, b'"counter":7', b'"counter":true'),
    "counter NaN": replace_once(VALID, b'"counter":7', b'"counter":NaN'),
    "counter Infinity": replace_once(VALID, b'"counter":7', b'"counter":-Infinity'),
    "counter 2**53": replace_once(VALID, b'"counter":7', b'"counter":9007199254740992'),
    "counter 5000 digits": replace_once(VALID, b'"counter":7', b'"counter":' + b"9" * 5000),
    "size 1E2": replace_once(VALID, b'"size":1234', b'"size":1E2'),
    "non-ASCII raw": replace_once(VALID, b"tool.tar.gz", "tööl.tar.gz".encode()),
    "invalid UTF-8": replace_once(VALID, b"tool.tar.gz", b"t\xffol.tar.gz"),
    "lone surrogate escape": replace_once(VALID, b"tool.tar.gz", b"\\ud800ool.tar.gz"),
    "NUL byte": replace_once(VALID, b"tool.tar.gz", b"t\x00ol.tar.gz"),
    "control character": replace_once(VALID, b"tool.tar.gz", b"t\x01ol.tar.gz"),
    "not an object": b"[" + VALID + b"]",
    "scalar": b"5",
    "string": b'"release/v1"',
    "empty": b"",
    "empty object": b"{}",
    "truncated": VALID[:-1],
    "signature removed": replace_once(VALID, b'"package"', b'"signaturf":"x","package"'),
    "too large": VALID[:-1] + b',"x":"' + b"a" * MAX_ENTRY_SIZE + b'"}',
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_leaves_get_the_exact_paths_answer(name: str) -> None:
    result = check(BROKEN[name])
    assert result[0] == "error", name
    assert not fast_accepts(BROKEN[name])


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
def test_nesting_limit_in_metadata_is_the_same(depth: int) -> None:
    # The entry is depth 1 and metadata depth 2, so the whole tree is `depth` deep.
    leaf = jcs(sign_entry(fields(metadata={"x": nested_list(depth - 2)}), ALICE))
    result = check(leaf)
    assert (result[0] == "ok") == (depth <= MAX_DEPTH)
    assert fast_accepts(leaf) == (depth <= MAX_DEPTH)
    if depth > MAX_DEPTH:
        assert result[2] == "invalid_json"


def test_very_deep_short_leaf_is_refused_identically() -> None:
    body = b'{"x":' * 5000 + b"1" + b"}" * 5000
    leaf = replace_once(VALID, b'"package"', b'"metadata":' + body + b',"package"')
    assert check(leaf)[0] == "error"
    assert check(b"[" * 30000 + b"]" * 30000)[0] == "error"


@pytest.mark.parametrize("value", [2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 10**30, -(10**400),
                                   0, -1])
def test_integers_at_the_jcs_limit_in_metadata(value: int) -> None:
    if abs(value) <= 2**53 - 1:
        assert check(leaf_of(metadata={"n": value}))[0] == "ok"
    else:  # sign_entry cannot sign it: JCS has no encoding for it
        leaf = replace_once(leaf_of(metadata={"n": 1}), b'"n":1', b'"n":%d' % value)
        assert check(leaf)[:3] == ("error", "EntryError", "invalid_entry")


@pytest.mark.parametrize("number", [b"1E2", b"1e2", b"100.0", b"0.5", b"-0", b"-0.0", b"1e400"])
def test_number_forms_in_metadata(number: bytes) -> None:
    leaf = replace_once(leaf_of(metadata={"n": 1}), b'"n":1', b'"n":' + number)
    check(leaf)
    assert not fast_accepts(leaf)


def test_float_in_rollout_takes_the_exact_path_and_is_accepted() -> None:
    leaf = leaf_of(rollout={"stage": "canary", "percent": 12.5})
    assert check(leaf)[0] == "ok"
    assert not fast_accepts(leaf)


def test_signature_member_in_nested_objects() -> None:
    entry = sign_entry(fields(metadata={"signature": "x", "a": {"signature": "y"}}), ALICE)
    assert check(jcs(entry))[0] == "ok" and fast_accepts(jcs(entry))
    # The top-level signature copied into metadata: the leaf then holds ',"signature":"<sig>"'
    # twice, and the signed message must still be cut at the top-level member.
    leaf = jcs(entry).replace(b'"signature":"x"', b'"signature":"' +
                              entry["signature"].encode() + b'"', 1)
    assert check(leaf)[0] == "error"  # metadata changed after signing
    signer_entry = sign_entry(fields(metadata={"signature": "AAAA"}), ALICE)
    assert check(jcs(signer_entry))[0] == "ok"


def test_bad_signatures_and_keys_get_the_exact_paths_answer() -> None:
    entry = sign_entry(fields(), ALICE)
    cases = {
        "other signer": dict(entry, signature=sign_entry(fields(), BOB)["signature"]),
        "key swapped": dict(entry, key=BOB.verifier().text()),
        "short signature": dict(entry, signature=base64.b64encode(bytes(63)).decode()),
        "non-canonical base64": dict(entry, signature=entry["signature"][:-3] + "B=="),
        "not base64": dict(entry, signature="!" * 88),
        "bad key": dict(entry, key="example.com/alice+00000000+AQ=="),
        "zero signature": dict(entry, signature=base64.b64encode(bytes(64)).decode()),
    }
    for name, bad in cases.items():
        result = check(jcs(bad))
        assert result[0] == "error", name
        assert result[2] in ("bad_signature", "bad_key"), name


def test_semantic_refusals_get_the_exact_paths_answer() -> None:
    cases = [
        fields(artifacts=[{"name": "a", "sha256": SHA, "size": 1}] * 2),
        fields(install_window={"not_before": "2026-01-01T00:00:00Z",
                               "not_after": "2025-01-01T00:00:00Z"}),
        fields(install_window={"not_before": "2026-13-01T00:00:00Z",
                               "not_after": "2027-01-01T00:00:00Z"}),
        fields(counter=-1),
        fields(extra=1),
        fields(kind="publisher/v1"),
        fields(kind=5),
        fields(kind=None),
    ]
    for f in cases:
        result = check(jcs(sign_entry(f, ALICE)))
        assert result[0] == "error"
        assert result[2] == "invalid_entry"


def registry_leaves() -> list[bytes]:
    keys = [ALICE.verifier().text()]
    return [
        jcs(sign_entry({"kind": PUBLISHER_KIND, "publisher": ALICE.name,
                        "packages": ["example.com/*"], "keys": keys}, ADMIN)),
        jcs(sign_entry({"kind": KEYS_KIND, "publisher": ALICE.name, "add": keys,
                        "remove": []}, ALICE)),
        jcs(sign_entry({"kind": REVOKE_KIND, "publisher": ALICE.name,
                        "reason": "leaked", "keys": keys}, ADMIN)),
        jcs(sign_entry({"kind": REVOKE_KIND, "publisher": ALICE.name,
                        "reason": "gone"}, ADMIN)),
    ]


def test_registry_leaves_take_the_fast_path() -> None:
    for leaf in registry_leaves():
        result = check(leaf)
        assert result[0] == "ok"
        assert fast_accepts(leaf)
        assert outcome(parse_leaf, leaf) == outcome(parse_leaf_exact, leaf)  # not a release


def test_registry_refusals_get_the_exact_paths_answer() -> None:
    bob_key = BOB.verifier().text()
    cases: list[dict[str, Any]] = [
        # keys named after someone else, empty rotation, add and remove the same key
        {"kind": PUBLISHER_KIND, "publisher": ALICE.name, "packages": ["a"], "keys": [bob_key]},
        {"kind": KEYS_KIND, "publisher": ALICE.name, "add": [], "remove": []},
        {"kind": KEYS_KIND, "publisher": ALICE.name, "add": [ALICE.verifier().text()],
         "remove": [ALICE.verifier().text()]},
        {"kind": REVOKE_KIND, "publisher": ALICE.name, "reason": "x\n"},
        {"kind": REVOKE_KIND, "publisher": ALICE.name, "reason": "x", "metadata": {}},
    ]
    for f in cases:
        result = check(jcs(sign_entry(f, ADMIN)))
        assert result[0] == "error"
    for leaf in registry_leaves():
        assert check(leaf.replace(b'{"', b'{ "', 1))[0] == "error"
        assert check(leaf.replace(b'"kind"', b'"kind":"x","kind"', 1))[0] == "error"


# -- generated entries and mutations -----------------------------------------------------------

PACKAGE_CHARS = string.ascii_letters + string.digits + "._-+/@"
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
# Strings that stress escaping: quotes, backslashes, controls, '/', DEL, non-ASCII, surrogates.
_tricky_text = st.lists(st.sampled_from(
    ['a', 'Z', '0', ' ', '"', '\\', '/', '\x00', '\x1f', '\x7f', '\n', 'é', '€', '😀',
     '\ud800', 'signature', ',']), max_size=6).map("".join)
_text = st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=8) | _tricky_text
_ints = st.integers(-(2**53 - 1), 2**53 - 1) | st.sampled_from(
    [2**53, -(2**53), 2**64, 10**30, 0, -1])
_scalars = (st.none() | st.booleans() | _ints | _text
            | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1.0, -0.0]))
_names = st.sampled_from(["signature", "a", "z", "kind", "version", "sig", "signaturf"]) | _text
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_names, inner, max_size=3), max_leaves=10)

_artifact = st.fixed_dictionaries({
    "name": st.text(alphabet=string.ascii_letters + "-._", min_size=1, max_size=20)
    | st.text(min_size=1, max_size=5),
    "sha256": st.sampled_from([SHA, "cd" * 32, "AB" * 32, "ab" * 31]),
    "size": st.sampled_from([0, 1, 2**53 - 1, 2**53, -1]) | st.integers(0, 10**9),
})
_time = st.sampled_from(["2025-01-01T00:00:00Z", "2026-06-30T12:00:00.123456789Z",
                         "2025-02-30T00:00:00Z", "2025-01-01T00:00:00+00:00"])
_entries = st.fixed_dictionaries(
    {"kind": st.just("release/v1"),
     "package": st.text(alphabet=PACKAGE_CHARS, min_size=1, max_size=30),
     "version": st.text(alphabet=PRINTABLE, min_size=1, max_size=12),
     "artifacts": st.lists(_artifact, min_size=1, max_size=3)},
    optional={"counter": _ints | st.sampled_from([True, 1.5]),
              "install_window": st.fixed_dictionaries({"not_before": _time, "not_after": _time}),
              "rollout": st.fixed_dictionaries({"stage": st.sampled_from(["a", "canary"]),
                                                "percent": st.sampled_from([0, 50, 100, 12.5,
                                                                            101])}),
              "metadata": st.dictionaries(_names, _json, max_size=4)})


def _mutations(leaf: bytes, entry: dict[str, Any]) -> st.SearchStrategy[bytes]:
    n = len(leaf)
    unsorted = dict(reversed(list(entry.items())))
    return st.one_of(
        st.just(leaf),
        st.integers(0, n).map(lambda i: leaf[:i] + b" " + leaf[i:]),
        st.integers(0, n - 1).map(lambda i: leaf[:i] + leaf[i + 1:]),
        st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
            lambda t: leaf[:t[0]] + bytes([leaf[t[0]] ^ t[1]]) + leaf[t[0] + 1:]),
        st.sampled_from([b"/", b"a", b"e", b"0", b"7"]).map(
            lambda c: leaf.replace(c, {b"/": b"\\/"}.get(c, b"\\u%04x" % c[0]), 1)),
        st.sampled_from(sorted(entry)).map(
            lambda name: leaf.replace(b"{", b"{" + json.dumps(name).encode() + b":"
                                      + json.dumps(entry[name], separators=(",", ":"),
                                                   sort_keys=True).encode() + b",", 1)),
        st.just(json.dumps(unsorted, ensure_ascii=False, separators=(",", ":"))
                .encode("utf-8", "surrogatepass")),
        st.just(json.dumps(entry, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
                .encode()),
        st.sampled_from([b"7.0", b"7e0", b"-0", b"07", b"1E2"]).map(
            lambda num: leaf.replace(b":7,", b":" + num + b",", 1).replace(b":7}", b":" + num
                                                                         + b"}", 1)),
    )


@settings(max_examples=600, deadline=None)
@given(data=st.data(), entry_fields=_entries, bob=st.booleans())
def test_fast_and_exact_paths_agree_on_generated_release_leaves(
        data: st.DataObject, entry_fields: dict[str, Any], bob: bool) -> None:
    entry = signed_or_not(entry_fields, ALICE)
    if bob:  # valid signature, other key: bad_signature
        entry["key"] = BOB.verifier().text()
    leaf = jcs(entry)
    check(data.draw(_mutations(leaf, entry)))


_vkeys = st.sampled_from([ALICE.verifier().text(), BOB.verifier().text(), "bad+key",
                          generate_key("example.com/alice").verifier().text()])
_registry_entries = st.one_of(
    st.fixed_dictionaries({"kind": st.just(PUBLISHER_KIND), "publisher": st.just(ALICE.name),
                           "packages": st.lists(st.sampled_from(["a", "b.*", "c d"]),
                                                min_size=1, max_size=2),
                           "keys": st.lists(_vkeys, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"kind": st.just(KEYS_KIND), "publisher": st.just(ALICE.name),
                           "add": st.lists(_vkeys, max_size=2),
                           "remove": st.lists(_vkeys, max_size=2)}),
    st.fixed_dictionaries({"kind": st.just(REVOKE_KIND), "publisher": st.just(ALICE.name),
                           "reason": _text},
                          optional={"keys": st.lists(_vkeys, min_size=1, max_size=2),
                                    "metadata": _json}),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), entry_fields=_registry_entries)
def test_fast_and_exact_paths_agree_on_generated_registry_leaves(
        data: st.DataObject, entry_fields: dict[str, Any]) -> None:
    entry = signed_or_not(entry_fields, ADMIN)
    leaf = jcs(entry)
    check(data.draw(_mutations(leaf, entry)))


_safe_ints = st.integers(-(2**53 - 1), 2**53 - 1)  # the trees the fast path lets through
_members = st.dictionaries(
    st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=12)
    | st.sampled_from(["signature", "signaturf", "signatur", "signature0", "kind", "version"]),
    _safe_ints | st.text(alphabet=string.printable, max_size=8) | st.lists(_safe_ints, max_size=2)
    | st.dictionaries(st.sampled_from(["signature", "x"]), st.text(max_size=3), max_size=2),
    max_size=6)


@settings(max_examples=500, deadline=None)
@given(members=_members, kind=st.none() | st.sampled_from(["release/v1", "keys/v1", "x"]),
       sig=st.binary(max_size=70))
def test_signed_message_cut_from_the_leaf_equals_signed_message(
        members: dict[str, Any], kind: str | None, sig: bytes) -> None:
    obj = dict(members)
    if kind is not None:
        obj["kind"] = kind
    obj["signature"] = base64.b64encode(sig).decode()
    obj = dict(sorted(obj.items()))  # as fast_tree returns it: leaf (sorted) order
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    leaf = text.encode("utf-8")
    assert fast_message(obj, leaf, obj["signature"]) == signed_message(obj)


def test_real_samples_agree() -> None:
    """Leaves built the way bench/build_log.py builds them (realistic sizes and names)."""
    import random

    rng = random.Random(7)
    signers = [generate_key(f"publisher{i}.example") for i in range(3)]
    for i in range(60):
        count = rng.choice((1, 1, 2, 3))
        version = f"1.{i // 10}.{i % 10}"
        name = f"tool{i:04d}"
        f = {"kind": "release/v1", "package": f"{signers[i % 3].name}/{name}",
             "version": version, "counter": i + 1,
             "artifacts": [{"name": f"{name}-{version}-{p}", "sha256": rng.randbytes(32).hex(),
                            "size": rng.randint(100_000, 80_000_000)}
                           for p in ("linux-amd64.tar.gz", "darwin-arm64.tar.gz",
                                     "windows-amd64.zip")[:count]]}
        leaf = jcs(sign_entry(f, signers[i % 3]))
        assert check(leaf)[0] == "ok"
        assert fast_accepts(leaf)


def test_signed_message_cut_with_the_signature_repeated_in_metadata() -> None:
    entry = sign_entry(fields(metadata={"a": 1}), ALICE)
    sig = entry["signature"]
    for nested in ({"a": 0, "signature": sig}, [{"a": 1, "signature": sig}]):
        obj = dict(entry, metadata=nested)
        leaf = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        obj = json.loads(leaf)
        assert leaf.count(b',"signature":"' + entry["signature"].encode()) == 2
        assert fast_message(obj, leaf, obj["signature"]) == signed_message(obj)


def _closed_depth(schema: Any, root: Any, where: str) -> int:
    """How many containers deep an instance of `schema` can be, asserting what the fast
    path's step 2 relies on: closed objects, bounded numbers, nothing unconstrained."""
    if "$ref" in schema:
        assert schema["$ref"].startswith("#/$defs/"), where
        return _closed_depth(root["$defs"][schema["$ref"].split("/")[-1]], root, where)
    known = {"type", "const", "pattern", "description", "minLength", "maxLength", "minimum",
             "maximum", "properties", "required", "additionalProperties", "items", "minItems",
             "maxItems", "uniqueItems", "$schema", "$id", "title", "$defs"}
    assert set(schema) <= known, f"{where}: review the fast path for {set(schema) - known}"
    if "const" in schema:
        assert isinstance(schema["const"], str), where
        return 0
    kind = schema.get("type")
    if kind == "object":
        assert schema.get("additionalProperties") is False, f"{where}: object not closed"
        return 1 + max((_closed_depth(s, root, f"{where}.{n}")
                        for n, s in schema.get("properties", {}).items()), default=0)
    if kind == "array":
        return 1 + _closed_depth(schema["items"], root, f"{where}[]")
    if kind in ("integer", "number"):
        assert -(2**53 - 1) <= schema["minimum"] <= schema["maximum"] <= 2**53 - 1, where
        return 0
    assert kind in ("string", "boolean", "null"), f"{where}: unconstrained value"
    return 0


@pytest.mark.parametrize("name", [row.schema for row in KINDS.values()])
def test_schemas_bound_depth_and_integers_outside_metadata(name: str) -> None:
    """The fast path checks depth and integer range in release/v1's metadata only (step 2 in
    verifier/protocol/entries/fast.py): every other member must be closed, shallow and
    bounded."""
    schema = copy.deepcopy(load_schema(name))
    if name == "release-v1.schema.json":  # the one free-form member, checked by the fast path
        assert schema["properties"].pop("metadata")["type"] == "object"
    assert _closed_depth(schema, schema, "entry") <= 3 < MAX_DEPTH


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_names, _json, max_size=4) | st.lists(_json, max_size=3))
def test_prebuilt_encoder_writes_what_json_dumps_writes(value: Any) -> None:
    assert encode(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                                        sort_keys=True)
