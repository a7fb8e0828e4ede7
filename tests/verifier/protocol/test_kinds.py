"""The table of entry kinds (verifier/protocol/entries/kinds.py) and what consults it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import make_release
from tests.verifier.protocol.test_entry import fields
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import (
    KINDS,
    REGISTRY_KINDS,
    kind_of,
    parse_log_leaf,
    validate_log_entry,
    validate_registry_entry,
)
from verifier.protocol.entries.lifecycle import (
    HALT_KIND,
    LIFECYCLE_KINDS,
    RESUME_KIND,
    ROLLOUT_KIND,
    YANK_KIND,
)
from verifier.protocol.entries.registry_kinds import (
    KEYS_KIND,
    PUBLISHER_KIND,
    REVOKE_KIND,
    RegistryEntry,
)
from verifier.protocol.entries.release import KIND as RELEASE_KIND
from verifier.protocol.entries.release import Release, validate_entry
from verifier.protocol.entries.schema import load_schema
from verifier.protocol.entries.signing import sign_entry, signed_message, signing_prefix
from verifier.protocol.note import generate_key

ADMIN = generate_key("log-admin")
ACME = generate_key("acme")
ACME2 = generate_key("acme")


def example(kind: str) -> dict[str, Any]:
    """A valid, signed entry of each kind of the table."""
    key, key2 = ACME.verifier().text(), ACME2.verifier().text()
    unsigned = {
        RELEASE_KIND: fields(),
        PUBLISHER_KIND: {"kind": PUBLISHER_KIND, "publisher": "acme", "packages": ["com.acme.*"],
                         "keys": [key]},
        KEYS_KIND: {"kind": KEYS_KIND, "publisher": "acme", "add": [key2], "remove": [key]},
        REVOKE_KIND: {"kind": REVOKE_KIND, "publisher": "acme", "reason": "lost", "keys": [key]},
        ROLLOUT_KIND: {"kind": ROLLOUT_KIND, "package": "com.acme.app", "version": "1.0",
                       "stage": "canary", "percent": 10, "start_time": "2026-01-01T00:00:00Z"},
        HALT_KIND: {"kind": HALT_KIND, "package": "com.acme.app", "version": "1.1",
                    "reason": "crash reports", "rollback_version": "1.0"},
        YANK_KIND: {"kind": YANK_KIND, "package": "com.acme.app", "version": "1.1",
                    "reason": "data loss"},
        RESUME_KIND: {"kind": RESUME_KIND, "package": "com.acme.app", "version": "1.1"},
    }[kind]
    return sign_entry(unsigned, ADMIN)


def test_the_table_holds_the_eight_kinds_in_order() -> None:
    assert list(KINDS) == [RELEASE_KIND, PUBLISHER_KIND, KEYS_KIND, REVOKE_KIND,
                           ROLLOUT_KIND, HALT_KIND, YANK_KIND, RESUME_KIND]
    assert REGISTRY_KINDS == (PUBLISHER_KIND, KEYS_KIND, REVOKE_KIND)
    assert LIFECYCLE_KINDS == (ROLLOUT_KIND, HALT_KIND, YANK_KIND, RESUME_KIND)


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_row_names_its_own_schema_class_and_prefix(kind: str) -> None:
    row = KINDS[kind]
    assert row.name == kind
    assert load_schema(row.schema)["properties"]["kind"]["const"] == kind
    assert row.signing_prefix == signing_prefix(kind) == f"tlog/{kind}\n".encode()
    entry = example(kind)
    assert signed_message(entry).startswith(row.signing_prefix)
    checked = row.validate(entry)
    assert type(checked) is row.entry_class
    assert checked.kind == kind
    assert row.registry == (row.entry_class is RegistryEntry)
    assert row.from_leaf(checked.leaf, entry) == checked
    assert parse_log_leaf(checked.leaf) == checked


@pytest.mark.parametrize("kind", list(KINDS))
def test_rows_leave_the_value_they_check_untouched(kind: str) -> None:
    entry = example(kind)
    checked = KINDS[kind].validate(entry).entry
    assert checked == entry
    checked["extra"] = 1  # the checked entry is a copy: changing it changes nothing else
    assert "extra" not in entry


@pytest.mark.parametrize("value", [{"kind": "future/v1"}, {"kind": 1}, {}, [], "release/v1",
                                   None, {"kind": ["release/v1"]}])
def test_an_entry_of_no_known_kind_meets_the_release_schema(value: Any) -> None:
    """As always: the release/v1 schema refuses it (its kind is a const), with its message."""
    assert kind_of(value) is KINDS[RELEASE_KIND]
    with pytest.raises(EntryError) as via_table:
        validate_log_entry(value)
    with pytest.raises(EntryError) as via_release:
        validate_entry(value)
    assert (via_table.value.code, str(via_table.value)) == (
        via_release.value.code, str(via_release.value))


@pytest.mark.parametrize("value", [{"kind": RELEASE_KIND}, {"kind": "future/v1"}, {}, []])
def test_only_registry_kinds_pass_as_registry_entries(value: Any) -> None:
    with pytest.raises(EntryError, match=r"^kind: must be one of publisher/v1, keys/v1, "
                                         r"revoke/v1$"):
        validate_registry_entry(value)


def test_validated_entries_know_their_kind() -> None:
    release = validate_log_entry(make_release(ACME, "com.acme.app", "1.0"))
    assert isinstance(release, Release) and release.kind == RELEASE_KIND
    rotation = validate_registry_entry(example(KEYS_KIND))
    assert rotation.kind == KEYS_KIND


def test_fields_without_a_kind_are_signed_as_releases_always_were() -> None:
    """sign_entry's output never changed: no string kind, the release/v1 separator."""
    for kindless in ({"package": "p"}, {"kind": 5, "package": "p"}):
        assert signed_message(kindless).startswith(b"tlog/release/v1\n")
    assert signed_message({"kind": "x/v9"}).startswith(b"tlog/x/v9\n")
