"""The registry entry kinds: ``publisher/v1``, ``keys/v1`` and ``revoke/v1``.

Three kinds sit beside release/v1 (schemas in schema/), and say who may publish what:

- ``publisher/v1``: registers a publisher, or replaces its package patterns and keys; signed
  by an admin key of the log operator.
- ``keys/v1``: adds and/or removes keys of a publisher; signed by a currently valid key of
  that publisher, or by an admin key (recovery after a compromise).
- ``revoke/v1``: revokes keys of a publisher (admin or a valid publisher key), or the whole
  publisher (admin only), with a reason. A revoked key never becomes valid again.

Each is signed like a release (signing.py: ``b"tlog/<kind>\\n" || JCS(entry without
"signature")``). This module checks one entry on its own: schema, signature, and that every
key it names is named after the publisher. Who may sign it at which point of the log is the
replay's business (verifier.protocol.registry). Nothing here does I/O.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from verifier.protocol.entries.errors import INVALID_ENTRY, EntryError
from verifier.protocol.entries.fast import fast_check_signed
from verifier.protocol.entries.signing import SignedEntry, check_signed, parse_key

__all__ = ["KEYS_KIND", "PACKAGE_PATTERN", "PUBLISHER_KIND", "PUBLISHER_NAME", "REVOKE_KIND",
           "RegistryChecks", "RegistryEntry", "check_keys", "check_publisher", "check_revoke"]

PUBLISHER_KIND = "publisher/v1"
KEYS_KIND = "keys/v1"
REVOKE_KIND = "revoke/v1"
# As in the schemas: a package pattern is a package name or a prefix ending in '*'; a
# publisher name is a key name (printable ASCII, no space or '+').
PACKAGE_PATTERN = re.compile(r"[A-Za-z0-9._+/@-]{1,200}\*?")
PUBLISHER_NAME = re.compile(r"[!-*,-~]{1,200}")


@dataclass(frozen=True)
class RegistryEntry(SignedEntry):
    """A validated publisher/v1, keys/v1 or revoke/v1 entry."""

    publisher: str


# -- the rules of each kind that the schema cannot express ----------------------------------


def _named_keys(entry: Mapping[str, Any], member: str, publisher: str) -> list[str]:
    """The vkeys in `member`, each parsed and named after the publisher, as their text."""
    texts = list(entry.get(member, []))
    for i, text in enumerate(texts):
        key = parse_key(text)
        if key.name != publisher:
            raise EntryError(INVALID_ENTRY, f"{member}[{i}]: key is named {key.name!r}, "
                                            f"not after the publisher {publisher!r}")
        texts[i] = key.text()
    return texts


def check_publisher(entry: Mapping[str, Any]) -> None:
    """publisher/v1: every key is the publisher's."""
    _named_keys(entry, "keys", entry["publisher"])


def check_keys(entry: Mapping[str, Any]) -> None:
    """keys/v1: every key is the publisher's, something changes, nothing both comes and goes."""
    publisher = entry["publisher"]
    add, remove = _named_keys(entry, "add", publisher), _named_keys(entry, "remove", publisher)
    if not add and not remove:
        raise EntryError(INVALID_ENTRY, "keys/v1: add or remove at least one key")
    if set(add) & set(remove):
        raise EntryError(INVALID_ENTRY, "keys/v1: a key is both added and removed")


def check_revoke(entry: Mapping[str, Any]) -> None:
    """revoke/v1: every key revoked is the publisher's."""
    _named_keys(entry, "keys", entry["publisher"])


# -- the checks of one kind, for kinds.KINDS -------------------------------------------------


Rules = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class RegistryChecks:
    """A registry kind's checks: signing.check_signed with its schema, then its rules."""

    schema: str
    rules: Rules

    def validate(self, obj: Any) -> RegistryEntry:
        """A parsed entry of this kind (left unmodified) -> its RegistryEntry, or EntryError."""
        signed = check_signed(copy.deepcopy(obj), self.schema)
        self.rules(signed.entry)
        return RegistryEntry(signed, signed.entry["publisher"])

    def from_leaf(self, leaf: bytes, obj: Any) -> RegistryEntry:
        """validate(obj), where `obj` is parse_json(leaf) and leaf must be its JCS encoding."""
        entry = self.validate(obj)
        if entry.leaf != bytes(leaf):
            raise EntryError(INVALID_ENTRY, "leaf is not the RFC 8785 (JCS) encoding of its entry")
        return entry

    def fast(self, obj: dict[str, Any], leaf: bytes) -> RegistryEntry | None:
        """from_leaf on fast.py's path: the entry when provably valid, else None."""
        signed = fast_check_signed(obj, leaf, self.schema)
        if signed is None:
            return None
        try:
            self.rules(obj)
        except EntryError:
            return None  # refused: let the exact path say so, in its order
        return RegistryEntry(signed, obj["publisher"])
