"""How an entry of any kind is signed, and the checks every kind shares.

An entry carries its signer's Ed25519 key as a signed-note vkey (c2sp.org/signed-note) in
``key`` and the signature in ``signature`` (base64, 64 bytes). The signed message is the
kind's domain separator followed by the entry's RFC 8785 (JCS) encoding without
``signature``::

    b"tlog/" || kind || b"\\n" || JCS(entry without "signature")

so that a signature over one kind (``tlog/release/v1\\n``, ``tlog/keys/v1\\n``, ...) never
verifies as another. The leaf logged is JCS(entry), at most MAX_ENTRY_SIZE bytes
(c2sp.org/tlog-tiles entry bundles use a uint16 length); its hash is RFC 6962's leaf hash.

Refusals raise EntryError: ``entry_too_large``, ``bad_key``, ``bad_signature``, or the
schema's ``invalid_entry``. Nothing here does I/O.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verifier.protocol import ed25519
from verifier.protocol.entries.errors import (
    BAD_KEY,
    BAD_SIGNATURE,
    ENTRY_TOO_LARGE,
    EntryError,
)
from verifier.protocol.entries.schema import check_schema
from verifier.protocol.entries.strict_json import MAX_DEPTH, canonical, require_tree, scan_tree
from verifier.protocol.merkle import leaf_hash as merkle_leaf_hash
from verifier.protocol.note import (
    NoteError,
    Signer,
    Verifier,
    b64decode_strict,
    b64encode,
    parse_vkey,
)

__all__ = ["MAX_ENTRY_SIZE", "SIGNATURE_SIZE", "Signed", "canonical_leaf", "check_signature",
           "check_signed", "message_prefix", "parse_key", "sign_entry", "signed_message",
           "signing_prefix"]

MAX_ENTRY_SIZE = 65535
SIGNATURE_SIZE = 64
# Fields without a string "kind" (which no schema accepts) have always been signed with the
# release/v1 separator; sign_entry keeps doing so, so that its output never changes.
_NO_KIND_PREFIX = b"tlog/release/v1\n"


def signing_prefix(kind: str) -> bytes:
    """The domain separator of an entry kind: b"tlog/" + kind + b"\\n"."""
    return b"tlog/" + kind.encode("utf-8") + b"\n"


def message_prefix(entry: Mapping[str, Any]) -> bytes:
    """The separator the signed message of `entry` starts with, from its "kind" member."""
    kind = entry.get("kind")
    return signing_prefix(kind) if isinstance(kind, str) else _NO_KIND_PREFIX


def signed_message(entry: Mapping[str, Any], tree: int | None = None) -> bytes:
    """The kind's separator followed by JCS(entry without its "signature" member).

    `tree` is scan_tree's verdict on `entry` when the caller has it; dropping "signature" (a
    string) cannot change it.
    """
    unsigned = {name: value for name, value in entry.items() if name != "signature"}
    return message_prefix(entry) + canonical(unsigned, tree)


@functools.lru_cache(maxsize=4096)
def _parse_key(text: str) -> Verifier:
    """Publishers sign many entries with one key: parse each key text once."""
    try:
        return parse_vkey(text)
    except NoteError as e:
        raise EntryError(BAD_KEY, f"key: {e}") from e


def parse_key(text: str) -> Verifier:
    """A vkey inside an entry, or EntryError("bad_key")."""
    return _parse_key(text)


def canonical_leaf(obj: Mapping[str, Any]) -> tuple[bytes, int]:
    """The JCS leaf of a JSON tree and scan_tree's verdict on it; EntryError
    ("entry_too_large") beyond MAX_ENTRY_SIZE bytes."""
    tree = scan_tree(obj, MAX_DEPTH + 1)
    leaf = canonical(obj, tree)
    if len(leaf) > MAX_ENTRY_SIZE:
        raise EntryError(ENTRY_TOO_LARGE, f"entry is {len(leaf)} bytes, at most {MAX_ENTRY_SIZE}")
    return leaf, tree


def check_signature(entry: Mapping[str, Any], key: Verifier, tree: int | None = None) -> None:
    """EntryError("bad_signature") unless entry["signature"] is `key`'s over signed_message."""
    try:
        sig = b64decode_strict(entry["signature"])
    except ValueError as e:
        raise EntryError(BAD_SIGNATURE, f"signature: {e}") from e
    if len(sig) != SIGNATURE_SIZE:
        raise EntryError(BAD_SIGNATURE, f"signature: {len(sig)} bytes, want {SIGNATURE_SIZE}")
    # ed25519.verify, not key.verify (PyNaCl): as strict as libsodium, but faster; see its
    # module docstring for the two (harmless) differences.
    if not ed25519.verify(key.public_key, signed_message(entry, tree), sig):
        raise EntryError(BAD_SIGNATURE, f"signature: does not verify with key {key.name!r}")


@dataclass(frozen=True)
class Signed:
    """An entry of any kind whose schema, canonical form, size and signature were checked."""

    entry: dict[str, Any]
    leaf: bytes
    leaf_hash: bytes
    kind: str
    key: Verifier


@dataclass(frozen=True)
class SignedEntry:
    """Base of the checked entries built on a Signed (registry kinds, lifecycle kinds): what
    the log and the clients read of any entry, delegated to it."""

    signed: Signed

    @property
    def kind(self) -> str:
        return self.signed.kind

    @property
    def entry(self) -> dict[str, Any]:
        return self.signed.entry

    @property
    def leaf(self) -> bytes:
        return self.signed.leaf

    @property
    def leaf_hash(self) -> bytes:
        return self.signed.leaf_hash

    @property
    def key(self) -> Verifier:
        return self.signed.key


def check_signed(obj: Any, schema_name: str) -> Signed:
    """The checks every kind but release/v1 makes, in this order: a JSON tree at most
    MAX_DEPTH deep, schema `schema_name`, the JCS leaf within MAX_ENTRY_SIZE, the signer's
    key, the signature over signing_prefix(kind) + JCS(unsigned).

    `obj` must be a fresh JSON tree (parse_json's result or copied by the caller); it is
    kept, not copied. Kind-specific rules are the caller's.
    """
    require_tree(obj)
    check_schema(obj, schema_name)
    leaf, tree = canonical_leaf(obj)
    key = _parse_key(obj["key"])
    check_signature(obj, key, tree)
    return Signed(obj, leaf, merkle_leaf_hash(leaf), obj["kind"], key)


def sign_entry(fields: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """A copy of ``fields`` (an entry of any kind) with "key" set to the signer's vkey and
    "signature" set.

    Does not validate: pass the result to kinds.validate_log_entry to check it.
    """
    entry = copy.deepcopy({n: v for n, v in fields.items() if n not in ("key", "signature")})
    entry["key"] = signer.verifier().text()
    entry["signature"] = b64encode(signer.sign(signed_message(entry)))
    return entry
