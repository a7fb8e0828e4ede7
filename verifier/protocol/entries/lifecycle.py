"""The lifecycle entry kinds: ``rollout/v1``, ``halt/v1``, ``yank/v1`` and ``resume/v1``.

Each is a statement by a release's publisher about a logged release, named by package and
version (schemas in schema/), signed like a release (signing.py: ``b"tlog/<kind>\\n" ||
JCS(entry without "signature")``); the leaf is JCS(entry). For example::

    {"kind": "rollout/v1", "package": "example.com/tool", "version": "1.2.0",
     "stage": "canary", "percent": 10, "start_time": "2026-01-31T12:00:00Z",
     "key": "example.com/alice+1a2b3c4d+AbC...", "signature": "<base64, 64 bytes>"}

- ``rollout/v1``: devices in the cohort of ``percent`` (verifier.protocol.cohort) may
  install the version, from ``start_time`` on when given;
- ``halt/v1``: no further installs until a resume; optional ``rollback_version``;
- ``yank/v1``: never install again; clients that have it go back to ``rollback_version``;
- ``resume/v1``: lifts a halt.

This module checks one entry on its own: schema, signature, and the start time. Whether the
release is logged, by the same publisher, and whether the signer may make the statement is
the replay's business (verifier.protocol.registry), at the entry's point of the log.
Nothing here does I/O.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from verifier.protocol.entries.errors import INVALID_ENTRY, EntryError
from verifier.protocol.entries.fast import fast_check_signed
from verifier.protocol.entries.signing import Signed, SignedEntry, check_signed
from verifier.protocol.rfc3339 import TimeFormatError, parse_time

__all__ = ["HALT_KIND", "LIFECYCLE_KINDS", "RESUME_KIND", "ROLLOUT_KIND", "YANK_KIND",
           "Lifecycle", "LifecycleChecks"]

ROLLOUT_KIND = "rollout/v1"
HALT_KIND = "halt/v1"
YANK_KIND = "yank/v1"
RESUME_KIND = "resume/v1"
LIFECYCLE_KINDS = (ROLLOUT_KIND, HALT_KIND, YANK_KIND, RESUME_KIND)


@dataclass(frozen=True)
class Lifecycle(SignedEntry):
    """A validated lifecycle entry: which release it speaks of, and who signed it."""

    package: str
    version: str
    publisher: str  # the signer's key name, which must be the release's publisher

    @property
    def rollback_version(self) -> str | None:
        value = self.entry.get("rollback_version")
        return value if isinstance(value, str) else None


def _check_rules(entry: dict[str, Any]) -> None:
    """What the schemas cannot say: a start time that is a real time (not February 30th)."""
    if "start_time" in entry:
        try:
            parse_time(entry["start_time"])
        except TimeFormatError as e:
            raise EntryError(INVALID_ENTRY,
                             f"start_time: {entry['start_time']!r} is not a valid time") from e
    if entry.get("rollback_version") is not None and entry["rollback_version"] == entry["version"]:
        raise EntryError(INVALID_ENTRY, "rollback_version: must be another version than the "
                                        "one the statement is about")


def _lifecycle(signed: Signed) -> Lifecycle:
    e = signed.entry
    return Lifecycle(signed, e["package"], e["version"], signed.key.name)


@dataclass(frozen=True)
class LifecycleChecks:
    """A lifecycle kind's checks, for kinds.KINDS: check_signed with its schema, then its
    rules."""

    schema: str

    def validate(self, obj: Any) -> Lifecycle:
        """A parsed entry of this kind (left unmodified) -> its Lifecycle, or EntryError."""
        signed = check_signed(copy.deepcopy(obj), self.schema)
        _check_rules(signed.entry)
        return _lifecycle(signed)

    def from_leaf(self, leaf: bytes, obj: Any) -> Lifecycle:
        """validate(obj), where `obj` is parse_json(leaf) and leaf must be its JCS encoding."""
        entry = self.validate(obj)
        if entry.leaf != bytes(leaf):
            raise EntryError(INVALID_ENTRY, "leaf is not the RFC 8785 (JCS) encoding of its entry")
        return entry

    def fast(self, obj: dict[str, Any], leaf: bytes) -> Lifecycle | None:
        """from_leaf on fast.py's path: the entry when provably valid, else None."""
        signed = fast_check_signed(obj, leaf, self.schema)
        if signed is None:
            return None
        try:
            _check_rules(obj)
        except EntryError:
            return None  # refused: let the exact path say so, in its order
        return _lifecycle(signed)
