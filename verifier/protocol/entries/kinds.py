"""The table of entry kinds the log accepts: every decision by kind looks it up here.

Each row of :data:`KINDS` says, for one value of an entry's "kind" member: its JSON Schema
(a resource of this package, copied from schema/), the class of a checked entry, how an
entry of the kind is checked (from a parsed value, from leaf bytes, and on the fast path
for stored leaves, fast.py), and its signing prefix (signing.py). Registry kinds (class
RegistryEntry) are the ones verifier.protocol.registry replays and the log lists under
/v1/registry; lifecycle kinds (class Lifecycle) speak of a logged release and are listed
with it by package.

A new kind is a schema file, a module with its checks, and one row here. Nothing here does
I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from verifier.protocol.entries import release
from verifier.protocol.entries.errors import INVALID_ENTRY, EntryError
from verifier.protocol.entries.fast import fast_tree
from verifier.protocol.entries.lifecycle import (
    HALT_KIND,
    RESUME_KIND,
    ROLLOUT_KIND,
    YANK_KIND,
    Lifecycle,
    LifecycleChecks,
)
from verifier.protocol.entries.registry_kinds import (
    KEYS_KIND,
    PUBLISHER_KIND,
    REVOKE_KIND,
    RegistryChecks,
    RegistryEntry,
    Rules,
    check_keys,
    check_publisher,
    check_revoke,
)
from verifier.protocol.entries.release import Release
from verifier.protocol.entries.signing import signing_prefix
from verifier.protocol.entries.strict_json import parse_json

__all__ = ["KINDS", "LIFECYCLE_KINDS", "REGISTRY_KINDS", "EntryKind", "LogEntry", "kind_of",
           "parse_log_leaf", "parse_log_leaf_exact", "validate_log_entry",
           "validate_registry_entry"]

LogEntry = Release | RegistryEntry | Lifecycle


@dataclass(frozen=True)
class EntryKind:
    """One kind of entry: a row of KINDS."""

    name: str  # the value of the entry's "kind" member
    schema: str  # its JSON Schema, a resource of verifier.protocol.entries
    # What checking an entry gives.
    entry_class: type[Release] | type[RegistryEntry] | type[Lifecycle]
    # A parsed value (left unmodified) -> the checked entry, or EntryError.
    validate: Callable[[Any], LogEntry]
    # Leaf bytes and their parse_json value -> the checked entry, whose leaf it must be.
    from_leaf: Callable[[bytes, Any], LogEntry]
    # fast_tree(leaf) and the leaf -> the checked entry when provably valid, else None.
    fast: Callable[[dict[str, Any], bytes], LogEntry | None]

    @property
    def signing_prefix(self) -> bytes:
        """The domain separator of the kind's signed message (one rule for every kind)."""
        return signing_prefix(self.name)

    @property
    def registry(self) -> bool:
        """Whether entries of the kind change the publisher registry (and are replayed)."""
        return issubclass(self.entry_class, RegistryEntry)

    @property
    def lifecycle(self) -> bool:
        """Whether entries of the kind are statements about a logged release."""
        return issubclass(self.entry_class, Lifecycle)


def _registry_kind(name: str, schema: str, rules: Rules) -> EntryKind:
    checks = RegistryChecks(schema, rules)
    return EntryKind(name, schema, RegistryEntry, checks.validate, checks.from_leaf, checks.fast)


def _lifecycle_kind(name: str, schema: str) -> EntryKind:
    checks = LifecycleChecks(schema)
    return EntryKind(name, schema, Lifecycle, checks.validate, checks.from_leaf, checks.fast)


KINDS: Mapping[str, EntryKind] = MappingProxyType({row.name: row for row in (
    EntryKind(release.KIND, release.SCHEMA_RESOURCE, Release, release.validate_entry,
              release.from_leaf, release.fast_release),
    _registry_kind(PUBLISHER_KIND, "publisher-v1.schema.json", check_publisher),
    _registry_kind(KEYS_KIND, "keys-v1.schema.json", check_keys),
    _registry_kind(REVOKE_KIND, "revoke-v1.schema.json", check_revoke),
    _lifecycle_kind(ROLLOUT_KIND, "rollout-v1.schema.json"),
    _lifecycle_kind(HALT_KIND, "halt-v1.schema.json"),
    _lifecycle_kind(YANK_KIND, "yank-v1.schema.json"),
    _lifecycle_kind(RESUME_KIND, "resume-v1.schema.json"),
)})
# In table order, which messages listing them follow.
REGISTRY_KINDS: tuple[str, ...] = tuple(name for name, row in KINDS.items() if row.registry)
# Statements about a logged release (lifecycle.py), listed with releases by package.
LIFECYCLE_KINDS: tuple[str, ...] = tuple(name for name, row in KINDS.items() if row.lifecycle)
# An object of no known kind, or no object at all, is checked against release/v1's schema,
# which refuses it (its "kind" is a const): the refusal the log has always answered with.
_NO_KIND = KINDS[release.KIND]


def kind_of(obj: Any) -> EntryKind:
    """The row for a parsed entry's "kind" (release/v1's when it has no known kind)."""
    kind = obj.get("kind") if isinstance(obj, dict) else None
    return KINDS.get(kind, _NO_KIND) if isinstance(kind, str) else _NO_KIND


def validate_log_entry(obj: Any) -> LogEntry:
    """A parsed entry of any kind, checked by its kind's row; `obj` is not modified."""
    return kind_of(obj).validate(obj)


def validate_registry_entry(obj: Any) -> RegistryEntry:
    """Schema, signature and key naming of a registry entry (not who may sign it)."""
    row = kind_of(obj)
    if not row.registry:
        raise EntryError(INVALID_ENTRY, f"kind: must be one of {', '.join(REGISTRY_KINDS)}")
    return cast(RegistryEntry, row.validate(obj))  # the row's class says so


def parse_log_leaf(leaf: bytes) -> LogEntry:
    """Leaf bytes of any kind, which must be the entry's own JCS encoding.

    Tries the fast path first (fast.py), which only ever accepts; anything it cannot prove
    valid goes to parse_log_leaf_exact, which makes every decision and writes every message.
    """
    obj = fast_tree(leaf)
    if obj is not None:
        entry = kind_of(obj).fast(obj, leaf)
        if entry is not None:
            return entry
    return parse_log_leaf_exact(leaf)


def parse_log_leaf_exact(leaf: bytes) -> LogEntry:
    """parse_log_leaf without the fast path: the reference for its decisions and messages."""
    obj = parse_json(leaf)
    return kind_of(obj).from_leaf(leaf, obj)
