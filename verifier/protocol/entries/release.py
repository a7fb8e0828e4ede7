"""The ``release/v1`` log entry: a software release, signed by its publisher.

An entry is a JSON object described by ``release-v1.schema.json`` (JSON Schema draft
2020-12), for example::

    {"kind": "release/v1", "package": "example.com/tool", "version": "1.2.0",
     "counter": 7,
     "artifacts": [{"name": "tool.tar.gz", "sha256": "<64 lowercase hex>", "size": 1234}],
     "key": "example.com/alice+1a2b3c4d+AbC...", "signature": "<base64, 64 bytes>"}

- The publisher signs ``b"tlog/release/v1\\n" || JCS(entry without "signature")`` with the
  Ed25519 key whose vkey (c2sp.org/signed-note) is ``key``; the key's name is the publisher
  (signing.py).
- The log leaf is JCS(entry) (RFC 8785), at most 65,535 bytes; its leaf hash is
  SHA-256(0x00 || leaf) (RFC 6962, 2.1).

Beyond the schema: integers are ints (not 5.0, not bools) below 2**53, artifact names are
unique, and an install window's not_before is not after its not_after (RFC 3339 times).
Refusals raise EntryError (errors.py). parse_leaf first tries the fast path (fast.py), which
only ever accepts; parse_leaf_exact makes every refusal and writes every message. Entries of
any kind go through kinds.py, whose table holds this module's functions. Nothing here does
I/O.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from verifier.protocol.entries.errors import ENTRY_TOO_LARGE, INVALID_ENTRY, EntryError, short
from verifier.protocol.entries.fast import fast_schema_ok, fast_signature, fast_tree
from verifier.protocol.entries.schema import check_schema
from verifier.protocol.entries.signing import (
    MAX_ENTRY_SIZE,
    canonical_leaf,
    check_signature,
    parse_key,
)
from verifier.protocol.entries.strict_json import MAX_SAFE_INTEGER, parse_json, require_tree
from verifier.protocol.merkle import leaf_hash as merkle_leaf_hash
from verifier.protocol.note import Verifier
from verifier.protocol.rfc3339 import TimeFormatError, parse_time

__all__ = ["KIND", "PACKAGE_NAME", "SCHEMA_RESOURCE", "VERSION_TEXT", "Release",
           "check_install_window", "fast_release", "from_leaf", "parse_leaf",
           "parse_leaf_exact", "validate_entry"]

KIND = "release/v1"
SCHEMA_RESOURCE = "release-v1.schema.json"
# The schema's patterns for `package` and `version`, for callers that check a name alone.
PACKAGE_NAME = re.compile(r"[A-Za-z0-9._+/@-]{1,200}")
VERSION_TEXT = re.compile(r"[!-~]{1,100}")


@dataclass(frozen=True)
class Release:
    """A validated release entry, its leaf (JCS bytes) and leaf hash, and its publisher."""

    entry: dict[str, Any]
    leaf: bytes
    leaf_hash: bytes
    package: str
    version: str
    counter: int | None
    key: Verifier
    publisher: str

    @property
    def kind(self) -> str:
        """The entry's kind, as every logged entry has one (kinds.KINDS)."""
        return KIND


# -- checks the schema cannot express ------------------------------------------------------


def _check_integer(where: str, value: Any) -> None:
    """Integers must be Python ints (not floats such as 5.0, not bools) below 2**53."""
    if type(value) is not int:
        raise EntryError(INVALID_ENTRY, f"{where}: must be an integer, not {short(value)}")
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise EntryError(INVALID_ENTRY, f"{where}: must be in [0, 2**53), not {value}")


def _check_artifacts(artifacts: list[dict[str, Any]]) -> None:
    names: set[str] = set()
    for i, artifact in enumerate(artifacts):
        _check_integer(f"artifacts[{i}].size", artifact["size"])
        if artifact["name"] in names:
            name = short(artifact["name"])
            raise EntryError(INVALID_ENTRY, f"artifacts[{i}].name: duplicate name {name}")
        names.add(artifact["name"])


def _parse_time(where: str, text: str) -> datetime:
    try:
        return parse_time(text)
    except TimeFormatError as e:
        raise EntryError(INVALID_ENTRY, f"{where}: {text!r} is not a valid time") from e


def check_install_window(window: dict[str, Any]) -> None:
    """RFC 3339 UTC times, with not_before <= not_after (the schema checked their form)."""
    not_before = _parse_time("install_window.not_before", window["not_before"])
    not_after = _parse_time("install_window.not_after", window["not_after"])
    if not_before > not_after:
        raise EntryError(INVALID_ENTRY, "install_window: not_before is after not_after")


def _check_semantics(entry: dict[str, Any]) -> None:
    if "counter" in entry:
        _check_integer("counter", entry["counter"])
    _check_artifacts(entry["artifacts"])
    if "install_window" in entry:
        check_install_window(entry["install_window"])


# -- the exact path -------------------------------------------------------------------------


def validate_entry(obj: Any) -> Release:
    """Validate a parsed release/v1 entry and its publisher signature.

    Checks, in order: a JSON tree at most MAX_DEPTH deep; the schema; integer types,
    unique artifact names and the install window; the JCS leaf size (entry_too_large); the
    key (bad_key); the signature (bad_signature). Returns the Release, which holds its own
    copy of the entry.
    """
    require_tree(obj)
    release = _validate_tree(obj)
    return dataclasses.replace(release, entry=json.loads(release.leaf))


def _validate_tree(obj: Any) -> Release:
    """validate_entry for a value already known to be a JSON tree; `obj` is kept, not copied."""
    check_schema(obj, SCHEMA_RESOURCE)
    _check_semantics(obj)
    leaf, tree = canonical_leaf(obj)
    key = parse_key(obj["key"])
    check_signature(obj, key, tree)
    return _release(obj, leaf, key)


def _release(obj: dict[str, Any], leaf: bytes, key: Verifier) -> Release:
    """The Release of a validated release/v1 tree `obj`, its JCS leaf and its signer's key."""
    return Release(entry=obj, leaf=leaf, leaf_hash=merkle_leaf_hash(leaf),
                   package=obj["package"], version=obj["version"],
                   counter=obj.get("counter"), key=key, publisher=key.name)


def from_leaf(leaf: bytes, obj: Any) -> Release:
    """The Release of leaf bytes whose parse_json result is `obj` (fresh: it is kept).

    The leaf's size is checked before anything else, and the leaf must be the entry's own
    JCS encoding.
    """
    if len(leaf) > MAX_ENTRY_SIZE:
        raise EntryError(ENTRY_TOO_LARGE, f"leaf is {len(leaf)} bytes, at most {MAX_ENTRY_SIZE}")
    release = _validate_tree(obj)
    if release.leaf != bytes(leaf):
        raise EntryError(INVALID_ENTRY, "leaf is not the RFC 8785 (JCS) encoding of its entry")
    return release


def parse_leaf(leaf: bytes) -> Release:
    """Parse and validate leaf bytes, which must be the entry's own JCS encoding.

    Same result and same errors as :func:`parse_leaf_exact`; plain valid leaves (ASCII, no
    floats) take a fast path that costs a fraction of the exact one.
    """
    obj = fast_tree(leaf)
    if obj is not None:
        release = fast_release(obj, leaf)
        if release is not None:
            return release
    return parse_leaf_exact(leaf)


def parse_leaf_exact(leaf: bytes) -> Release:
    """parse_leaf without the fast path: the reference for its decisions and messages."""
    if len(leaf) > MAX_ENTRY_SIZE:
        raise EntryError(ENTRY_TOO_LARGE, f"leaf is {len(leaf)} bytes, at most {MAX_ENTRY_SIZE}")
    return from_leaf(leaf, parse_json(leaf))  # parse_json returns a fresh, checked tree


# -- the fast path (fast.py) ------------------------------------------------------------------


def fast_release(obj: dict[str, Any], leaf: bytes) -> Release | None:
    """parse_leaf_exact(leaf) for `obj` = fast_tree(leaf), when provably valid; else None."""
    leaf = bytes(leaf)
    if not fast_schema_ok(obj, SCHEMA_RESOURCE):
        return None
    artifacts = obj["artifacts"]
    if len({artifact["name"] for artifact in artifacts}) != len(artifacts):
        return None
    if "install_window" in obj:
        try:
            check_install_window(obj["install_window"])
        except EntryError:
            return None
    key = fast_signature(obj, leaf)
    return None if key is None else _release(obj, leaf, key)
