"""Tests for verifier/protocol/entries: strict JSON, JCS, signing and the release/v1 entry."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import string
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.release import SCHEMA_RESOURCE, parse_leaf, validate_entry
from verifier.protocol.entries.schema import fast_validator, validator
from verifier.protocol.entries.signing import MAX_ENTRY_SIZE, sign_entry, signed_message
from verifier.protocol.entries.strict_json import MAX_DEPTH, canonical, parse_json
from verifier.protocol.note import generate_key

ALICE = generate_key("example.com/alice")
BOB = generate_key("example.com/bob")
SHA = "ab" * 32


def fields(**changes: Any) -> dict[str, Any]:
    """A valid unsigned entry, with top-level members replaced (None removes one)."""
    entry: dict[str, Any] = {
        "kind": "release/v1",
        "package": "example.com/tool",
        "version": "1.2.0",
        "counter": 7,
        "artifacts": [{"name": "tool.tar.gz", "sha256": SHA, "size": 1234}],
    }
    entry.update(changes)
    return {name: value for name, value in entry.items() if value is not None}


def signed(**changes: Any) -> dict[str, Any]:
    return sign_entry(fields(**changes), ALICE)


def unsignable(**changes: Any) -> dict[str, Any]:
    """An entry JCS cannot encode, with a key and a placeholder signature."""
    entry = fields(**changes)
    entry["key"] = ALICE.verifier().text()
    entry["signature"] = base64.b64encode(bytes(64)).decode()
    return entry


def artifacts(n: int) -> list[dict[str, Any]]:
    return [{"name": f"a{i}", "sha256": SHA, "size": i} for i in range(n)]


def rejects(obj: Any, code: str, where: str) -> EntryError:
    with pytest.raises(EntryError) as caught:
        validate_entry(obj)
    assert caught.value.code == code, str(caught.value)
    assert where in str(caught.value)
    return caught.value


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- strict JSON ------------------------------------------------------------------------------


def test_parse_json_accepts_plain_json() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x", true, null]}') == {"a": [1, 2.5, "x", True, None]}


@pytest.mark.parametrize("data", [b'{"a": 1, "a": 2}', b'{"x": {"a": 1, "a": 1}}'])
def test_duplicate_member_names_are_rejected(data: bytes) -> None:
    with pytest.raises(EntryError, match="duplicate") as caught:
        parse_json(data)
    assert caught.value.code == "invalid_json"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_rejected(constant: bytes) -> None:
    with pytest.raises(EntryError, match="not JSON") as caught:
        parse_json(b'{"a": ' + constant + b"}")
    assert caught.value.code == "invalid_json"


@pytest.mark.parametrize("number", [b"1e999", b"-1e400"])
def test_overflowing_floats_are_rejected(number: bytes) -> None:
    with pytest.raises(EntryError, match="out of range"):
        parse_json(b"[" + number + b"]")


def test_deep_nesting_of_10000_levels_is_rejected() -> None:
    with pytest.raises(EntryError, match="nested deeper") as caught:
        parse_json(nested(10000))
    assert caught.value.code == "invalid_json"


def test_deep_object_nesting_is_rejected() -> None:
    with pytest.raises(EntryError, match="nested deeper"):
        parse_json(b'{"a":' * 10000 + b"1" + b"}" * 10000)


def test_nesting_up_to_max_depth_is_accepted() -> None:
    parse_json(nested(MAX_DEPTH))
    with pytest.raises(EntryError, match="nested deeper"):
        parse_json(nested(MAX_DEPTH + 1))
    parse_json(nested(5), max_depth=5)


@pytest.mark.parametrize(
    "data", [b'{"a": "\xff"}', b"\xef\xbb\xbf{}", b'{"a": 1} x', b"{'a': 1}", b"", b"[1,]"]
)
def test_malformed_json_is_rejected(data: bytes) -> None:
    with pytest.raises(EntryError) as caught:
        parse_json(data)
    assert caught.value.code == "invalid_json"


# -- valid entries ----------------------------------------------------------------------------


def test_signed_entry_validates() -> None:
    entry = signed()
    release = validate_entry(entry)
    assert release.package == "example.com/tool"
    assert release.version == "1.2.0"
    assert release.counter == 7
    assert release.publisher == "example.com/alice"
    assert release.key == ALICE.verifier()
    assert release.leaf == rfc8785.dumps(entry)
    assert release.leaf_hash == hashlib.sha256(b"\x00" + release.leaf).digest()
    assert release.entry == entry and release.entry is not entry


def test_all_optional_members_validate() -> None:
    entry = signed(
        install_window={
            "not_before": "2025-01-01T00:00:00Z",
            "not_after": "2025-02-01T00:00:00.5Z",
        },
        rollout={"stage": "canary", "percent": 12.5},
        metadata={"purpose": "fix", "origin": {"source": "git", "commit": "abc"}, "n": [1, None]},
    )
    assert validate_entry(entry).entry["rollout"]["percent"] == 12.5


def test_counter_is_optional() -> None:
    assert validate_entry(signed(counter=None)).counter is None


def test_signed_message_is_prefix_and_jcs_without_signature() -> None:
    entry = signed()
    unsigned = {k: v for k, v in entry.items() if k != "signature"}
    assert signed_message(entry) == b"tlog/release/v1\n" + rfc8785.dumps(unsigned)
    sig = base64.b64decode(entry["signature"])
    assert ALICE.verifier().verify(signed_message(entry), sig)


def test_sign_entry_does_not_modify_its_input() -> None:
    f = fields()
    before = copy.deepcopy(f)
    sign_entry(f, ALICE)
    assert f == before


def test_parse_leaf_round_trips() -> None:
    release = validate_entry(signed())
    assert parse_leaf(release.leaf) == release


def test_sixty_four_artifacts_are_accepted() -> None:
    validate_entry(signed(artifacts=artifacts(64)))


# -- invalid entries ---------------------------------------------------------------------------


def test_unknown_member_is_rejected() -> None:
    err = rejects(signed(extra="x"), "invalid_entry", "entry")
    assert "'extra' was unexpected" in str(err)


def test_unknown_artifact_member_is_rejected() -> None:
    entry = signed(artifacts=[{"name": "a", "sha256": SHA, "size": 1, "url": "x"}])
    rejects(entry, "invalid_entry", "artifacts[0]")


@pytest.mark.parametrize("member", ["kind", "package", "version", "artifacts"])
def test_missing_member_is_rejected(member: str) -> None:
    entry = signed(**{member: None})
    assert member in str(rejects(entry, "invalid_entry", "entry"))


def test_missing_signature_is_rejected() -> None:
    entry = signed()
    del entry["signature"]
    rejects(entry, "invalid_entry", "'signature' is a required property")


def test_wrong_kind_is_rejected() -> None:
    rejects(signed(kind="release/v2"), "invalid_entry", "kind")


@pytest.mark.parametrize("package", ["", "a b", "tool!", "pkg\u00e9", "a" * 201, "a\n"])
def test_bad_package_characters_are_rejected(package: str) -> None:
    rejects(signed(package=package), "invalid_entry", "package")


@pytest.mark.parametrize("version", ["1.0 beta", "", "1.0\n", "v\u00e91", "x" * 101, "1\t0"])
def test_version_with_space_or_non_printable_is_rejected(version: str) -> None:
    rejects(signed(version=version), "invalid_entry", "version")


def test_more_than_64_artifacts_are_rejected() -> None:
    err = rejects(signed(artifacts=artifacts(65)), "invalid_entry", "artifacts")
    assert "at most 64" in str(err)


def test_no_artifacts_are_rejected() -> None:
    rejects(signed(artifacts=[]), "invalid_entry", "artifacts")


def test_duplicate_artifact_names_are_rejected() -> None:
    dup = [*artifacts(3), {"name": "a1", "sha256": SHA, "size": 9}]
    err = rejects(signed(artifacts=dup), "invalid_entry", "artifacts[3].name")
    assert "duplicate" in str(err)


@pytest.mark.parametrize("sha", ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, "ab" * 32 + "\n"])
def test_bad_sha256_hex_is_rejected(sha: str) -> None:
    entry = signed(artifacts=[{"name": "a", "sha256": sha, "size": 1}])
    rejects(entry, "invalid_entry", "artifacts[0].sha256")


@pytest.mark.parametrize("size", [1.0, 1.5, -1, "1", True])
def test_non_integer_or_negative_size_is_rejected(size: Any) -> None:
    entry = signed(artifacts=[{"name": "a", "sha256": SHA, "size": size}])
    rejects(entry, "invalid_entry", "artifacts[0].size")


def test_float_size_is_rejected() -> None:
    arts = [*artifacts(1), {"name": "f", "sha256": SHA, "size": 5.0}]
    err = rejects(signed(artifacts=arts), "invalid_entry", "artifacts[1].size")
    assert "integer" in str(err)


def test_bool_counter_is_rejected() -> None:
    rejects(signed(counter=True), "invalid_entry", "counter")


def test_float_counter_is_rejected() -> None:
    rejects(signed(counter=7.0), "invalid_entry", "counter")


def test_counter_2_to_the_53_is_rejected() -> None:
    rejects(unsignable(counter=2**53), "invalid_entry", "counter")
    validate_entry(signed(counter=2**53 - 1))


def test_negative_counter_is_rejected() -> None:
    rejects(signed(counter=-1), "invalid_entry", "counter")


def test_integer_beyond_jcs_range_in_metadata_is_rejected() -> None:
    err = rejects(unsignable(metadata={"n": 2**60}), "invalid_entry", "RFC 8785")
    assert "canonicalized" in str(err)


def test_lone_surrogate_is_rejected() -> None:
    rejects(unsignable(metadata={"s": "\ud800"}), "invalid_entry", "RFC 8785")
    rejects(unsignable(metadata={"\udc00": 1}), "invalid_entry", "RFC 8785")


def test_lone_surrogate_escape_in_leaf_is_rejected() -> None:
    leaf = rfc8785.dumps(signed(metadata={"s": "x"})).replace(b'"x"', b'"\\ud800"')
    with pytest.raises(EntryError) as caught:
        parse_leaf(leaf)
    assert caught.value.code == "invalid_entry"


def test_nan_in_python_object_is_rejected() -> None:
    rejects(unsignable(metadata={"x": float("nan")}), "invalid_entry", "RFC 8785")


def test_deeply_nested_python_object_is_rejected_without_recursion_error() -> None:
    deep: list[Any] = []
    for _ in range(10000):
        deep = [deep]
    rejects(unsignable(metadata={"deep": deep}), "invalid_entry", "nested deeper")


def test_non_json_python_value_is_rejected() -> None:
    rejects(unsignable(metadata={"t": (1, 2)}), "invalid_entry", "metadata.t")
    rejects(unsignable(metadata={1: 2}), "invalid_entry", "member names")


def test_entry_that_is_not_an_object_is_rejected() -> None:
    rejects([signed()], "invalid_entry", "entry")


@pytest.mark.parametrize(
    "window",
    [
        {"not_before": "2025-02-01T00:00:00Z", "not_after": "2025-01-01T00:00:00Z"},
        {"not_before": "2025-13-01T00:00:00Z", "not_after": "2026-01-01T00:00:00Z"},
        {"not_before": "2025-01-01T00:00:00+01:00", "not_after": "2026-01-01T00:00:00Z"},
        {"not_before": "2025-01-01 00:00:00Z", "not_after": "2026-01-01T00:00:00Z"},
        {"not_before": "2025-01-01T00:00:00Z"},
        {"not_before": "2025-01-01T00:00:00Z", "not_after": "2026-01-01T00:00:00Z", "x": 1},
    ],
)
def test_bad_install_window_is_rejected(window: dict[str, Any]) -> None:
    rejects(signed(install_window=window), "invalid_entry", "install_window")


@pytest.mark.parametrize(
    "rollout", [{"stage": "a", "percent": 101}, {"stage": "a"}, {"stage": "", "percent": 1},
                {"stage": "a", "percent": 1, "x": 1}, {"stage": "a", "percent": False}]
)
def test_bad_rollout_is_rejected(rollout: dict[str, Any]) -> None:
    rejects(signed(rollout=rollout), "invalid_entry", "rollout")


def test_non_object_metadata_is_rejected() -> None:
    rejects(signed(metadata=["x"]), "invalid_entry", "metadata")


# -- size, key and signature ---------------------------------------------------------------------


def test_entry_over_65535_bytes_is_rejected() -> None:
    entry = signed(metadata={"blob": "x" * MAX_ENTRY_SIZE})
    rejects(entry, "entry_too_large", "65535")


def test_leaf_over_65535_bytes_is_rejected_before_parsing() -> None:
    with pytest.raises(EntryError) as caught:
        parse_leaf(b" " * (MAX_ENTRY_SIZE + 1))
    assert caught.value.code == "entry_too_large"


def test_entry_of_exactly_65535_bytes_is_accepted() -> None:
    base = len(rfc8785.dumps(signed(metadata={"blob": ""})))
    entry = signed(metadata={"blob": "x" * (MAX_ENTRY_SIZE - base)})
    assert len(validate_entry(entry).leaf) == MAX_ENTRY_SIZE


@pytest.mark.parametrize("key", ["not a key", "", "example.com/alice+00000000+AAAA", 7])
def test_bad_vkey_is_rejected(key: Any) -> None:
    entry = signed()
    entry["key"] = key
    rejects(entry, "invalid_entry" if not isinstance(key, str) else "bad_key", "key")


def test_vkey_with_wrong_key_id_is_rejected() -> None:
    entry = signed()
    name, _, key = entry["key"].split("+", 2)
    entry["key"] = f"{name}+00000000+{key}"
    rejects(entry, "bad_key", "key: key ID")


def test_signature_by_other_key_is_rejected() -> None:
    entry = signed()
    entry["signature"] = base64.b64encode(BOB.sign(signed_message(entry))).decode()
    rejects(entry, "bad_signature", "does not verify")


def test_key_swapped_for_signers_other_key_is_rejected() -> None:
    entry = signed()
    entry["key"] = BOB.verifier().text()
    rejects(entry, "bad_signature", "does not verify")


@pytest.mark.parametrize(
    "change", [("version", "1.2.1"), ("package", "example.com/tool2"), ("counter", 8)]
)
def test_signature_over_modified_entry_is_rejected(change: tuple[str, Any]) -> None:
    entry = signed()
    entry[change[0]] = change[1]
    rejects(entry, "bad_signature", "signature")


def test_signature_over_modified_artifact_is_rejected() -> None:
    entry = signed()
    entry["artifacts"][0]["sha256"] = "cd" * 32
    rejects(entry, "bad_signature", "signature")


@pytest.mark.parametrize(
    "sig", ["", "!!!", base64.b64encode(bytes(63)).decode(), base64.b64encode(bytes(65)).decode(),
            base64.b64encode(bytes(64)).decode().rstrip("=")]
)
def test_malformed_signature_is_rejected(sig: str) -> None:
    entry = signed()
    entry["signature"] = sig
    rejects(entry, "bad_signature", "signature")


def test_non_canonical_leaf_is_rejected() -> None:
    entry = signed()
    for leaf in (json.dumps(entry).encode(), json.dumps(entry, sort_keys=True, indent=1).encode()):
        with pytest.raises(EntryError, match="RFC 8785") as caught:
            parse_leaf(leaf)
        assert caught.value.code == "invalid_entry"


def test_leaf_with_duplicate_members_is_rejected() -> None:
    leaf = rfc8785.dumps(signed()).replace(b'{"artifacts"', b'{"version":"9","artifacts"', 1)
    with pytest.raises(EntryError) as caught:
        parse_leaf(leaf)
    assert caught.value.code == "invalid_json"


# -- property: signing and validating round-trip -------------------------------------------------

PACKAGE_CHARS = string.ascii_letters + string.digits + "._-+/@"
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))

artifact_strategy = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=40),
        "sha256": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        "size": st.integers(min_value=0, max_value=2**53 - 1),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    package=st.text(alphabet=PACKAGE_CHARS, min_size=1, max_size=200),
    version=st.text(alphabet=PRINTABLE, min_size=1, max_size=100),
    counter=st.none() | st.integers(min_value=0, max_value=2**53 - 1),
    arts=st.lists(artifact_strategy, min_size=1, max_size=64, unique_by=lambda a: a["name"]),
    metadata=st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
)
def test_sign_entry_then_validate_round_trips(
    package: str,
    version: str,
    counter: int | None,
    arts: list[dict[str, Any]],
    metadata: dict[str, str] | None,
) -> None:
    f = fields(package=package, version=version, counter=counter, artifacts=arts,
               metadata=metadata)
    entry = sign_entry(f, ALICE)
    release = validate_entry(entry)
    assert (release.package, release.version, release.counter) == (package, version, counter)
    assert release.publisher == ALICE.name
    assert parse_leaf(release.leaf).entry == entry


_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2**54), st.floats(allow_nan=False,
                                                                   allow_infinity=False),
    st.text(max_size=8), st.sampled_from(["release/v1", "a" * 64, "1.0\n", "2026-01-01T00:00:00Z"]))
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "sha256", "size", "stage", "percent", "not_before",
                         "not_after", "x"]), inner, max_size=4),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(member=st.sampled_from(["kind", "package", "version", "counter", "artifacts",
                               "install_window", "rollout", "metadata", "key", "signature",
                               "extra"]),
       value=_json_values)
def test_fast_and_reference_schema_validators_agree(member: str, value: Any) -> None:
    """The compiled validator must never accept what the reference jsonschema refuses."""
    entry = sign_entry(fields(), generate_key("differential"))
    entry[member] = value
    try:
        fast_validator(SCHEMA_RESOURCE)(entry)
        fast_ok = True
    except Exception:
        fast_ok = False
    assert fast_ok == validator(SCHEMA_RESOURCE).is_valid(entry)


_jcs_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=6), inner,
                      max_size=4),
    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(value=st.dictionaries(st.text(max_size=4), _jcs_values, max_size=5))
def test_fast_canonical_encoding_is_byte_identical_to_rfc8785(value: dict[str, Any]) -> None:
    """The json.dumps fast path must never produce bytes other than RFC 8785's."""
    try:
        expected = bytes(rfc8785.dumps(value))
    except (ValueError, TypeError):
        with pytest.raises(EntryError):
            canonical(value)
        return
    assert canonical(value) == expected


def test_lone_surrogate_is_refused_on_the_fast_canonical_path() -> None:
    with pytest.raises(EntryError):
        canonical({"a": "\ud800", "b": 1})
