"""The fast path for stored leaves: proving a plain leaf valid at a fraction of the cost.

An auditor re-validates millions of leaves that are nearly all valid, small and plain:
ASCII, integers, no floats. For those, the exact path spends most of its time on work whose
outcome is known in advance: an object_pairs_hook in Python, two tree walks, and two more
json.dumps (leaf and signed message). The functions here prove, more cheaply, that the exact
path would accept a leaf, and let each kind (kinds.KINDS) build the identical entry. They
never refuse anything: whatever they cannot prove, including every invalid leaf, goes to the
exact path, so the accepted set and every error code and message stay the same.

The proof, step by step (E(x) is json.dumps(x, ensure_ascii=False, separators=(",", ":"),
sort_keys=True), which is what strict_json.canonical uses for trees scan_tree calls
TREE_OK):

1. fast_tree: the leaf is ASCII (so UTF-8 decoding gives the same text, no BOM), at most
   MAX_ENTRY_SIZE bytes, and json parses it without floats or NaN/Infinity (the hooks
   raise _Defer) into a dict `obj` with E(obj) == leaf. Because E emits every member of a
   dict exactly once and two different names never encode alike, a leaf with duplicate
   member names cannot equal E(obj); so parse_json's _unique_members would not have
   fired, its float and constant hooks would not have been called, and it returns an
   equal tree, in the same member order. Equality with E(obj) also rules out whitespace,
   unsorted members, escapes E would not write (\\u00e9, \\/, \\u0041), non-ASCII member
   names (E writes them raw, the leaf is ASCII), lone surrogates (E writes them raw too),
   -0 and leading zeros; exponents and fractions are floats, refused by the hook. Too
   deep nesting (RecursionError) and integers of more than 4300 digits (ValueError) also
   defer.
2. Nesting depth and integer range: the schemas leave only release/v1's `metadata`
   free-form. Everything else is closed (additionalProperties: false) and at most 3
   containers deep, and its numbers are bounded by minimum/maximum within [0, 2**53)
   (registry kinds hold no numbers at all). So once the schema passes, scan_tree on
   metadata alone (depth limit MAX_DEPTH - 1: metadata sits at depth 2) shows the whole
   tree is within MAX_DEPTH and TREE_OK: no floats, ASCII names, safe integers. Then
   json_problem finds nothing and canonical(obj) is E(obj), which is the leaf.
   tests/verifier/protocol/test_entry_fast.py walks the schemas and fails if a change breaks
   this premise.
3. The schema: the same compiled validator as schema.check_schema.
4. The kind's own rules (release/v1: integer types, unique artifact names, the install
   window; registry kinds: key naming): counter and sizes passed the schema's "integer"
   type (which refuses bools) with minimum 0 and maximum 2**53 - 1, and are not floats
   (step 1), so release's integer check holds; the other rules are checked by the kind as
   on the exact path.
5. Key and signature: the same parse_key, b64decode_strict, length check and verify, on
   the same message, cut out of the leaf (fast_message).

The differential tests in tests/verifier/protocol/test_entry_fast.py compare both paths on
generated leaves.
Nothing here does I/O.
"""

from __future__ import annotations

import json
from typing import Any

import fastjsonschema

from verifier.protocol import ed25519
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.schema import fast_validator
from verifier.protocol.entries.signing import (
    MAX_ENTRY_SIZE,
    SIGNATURE_SIZE,
    Signed,
    message_prefix,
    parse_key,
    signed_message,
)
from verifier.protocol.entries.strict_json import MAX_DEPTH, TREE_OK, scan_tree
from verifier.protocol.merkle import leaf_hash as merkle_leaf_hash
from verifier.protocol.note import Verifier, b64decode_strict

__all__ = ["encode", "fast_check_signed", "fast_message", "fast_schema_ok", "fast_signature",
           "fast_tree"]


class _Defer(Exception):
    """Raised from the fast path's JSON hooks: this leaf needs the exact path."""


def _defer(_text: str) -> Any:
    raise _Defer


# Built once: json.loads(text, **hooks) would build a new decoder for every call.
_FAST_DECODER = json.JSONDecoder(parse_float=_defer, parse_constant=_defer)
# E(x) of the proof above; check_circular=False as a parsed tree has no cycles.
_FAST_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                                 check_circular=False)
# JSONEncoder.encode builds the C encoder anew on every call (a third of its cost on an
# entry). Build it once, with exactly the arguments JSONEncoder.iterencode passes it for
# _FAST_ENCODER (no markers, no indent); without the C accelerator, use encode().
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE: Any = None if _C_MAKE_ENCODER is None else _C_MAKE_ENCODER(
    None, _FAST_ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False,
    True)


def encode(value: Any) -> str:
    """E(value), as json.dumps with E's arguments writes it."""
    if _C_ENCODE is None:
        return _FAST_ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


_SIGNATURE_MEMBER = b',"signature":"'


def fast_tree(leaf: bytes) -> dict[str, Any] | None:
    """The object `leaf` encodes, if the leaf provably is E(object) (step 1 above), else None.

    None says nothing about validity: the exact path decides.
    """
    if type(leaf) is not bytes:
        leaf = bytes(leaf)
    if len(leaf) > MAX_ENTRY_SIZE or not leaf.isascii():
        return None
    text = leaf.decode("ascii")
    try:
        # raw_decode: no whitespace skipping around the value, and trailing bytes are left
        # over; both only make E(obj) != text, so decode()'s extra checks are not needed.
        obj, _ = _FAST_DECODER.raw_decode(text)
        # Comparing text, not bytes: E(obj) may hold lone surrogates, which would not encode.
        if type(obj) is not dict or encode(obj) != text:
            return None
    except (_Defer, ValueError, RecursionError):  # ValueError includes JSONDecodeError
        return None
    return obj


def _fast_depth_ok(obj: dict[str, Any]) -> bool:
    """Step 2 above, for a tree that passed its schema: the one free-form member is fine."""
    metadata = obj.get("metadata")
    return metadata is None or scan_tree(metadata, MAX_DEPTH - 1) == TREE_OK


def fast_message(obj: dict[str, Any], leaf: bytes, sig_text: str) -> bytes:
    """signed_message(obj), cut out of leaf == E(obj) instead of encoding obj again.

    E encodes a dict as "{" + its members name:E(value), sorted and joined by ",", + "}", and
    each member independently of the others. sig_text is canonical base64 (the caller
    checked), which E writes unescaped: '"' + sig_text + '"'. So unless "signature" is the
    first member (obj keeps the leaf's member order), the leaf holds the bytes
    M = ',"signature":"' + sig_text + '"' at the top-level member, followed by "," and the
    next member or by "}"; removing M leaves exactly E(obj without "signature"). If M occurs
    only once in the leaf, that one occurrence is the top-level member; a nested "signature"
    member with the same value would make it occur twice, and then (as for "signature" first,
    which no schema allows) we encode the message the slow way.
    """
    member = _SIGNATURE_MEMBER + sig_text.encode("ascii") + b'"'
    start = leaf.find(member)
    if start > 0 and next(iter(obj)) != "signature" and leaf.find(member, start + 1) < 0:
        return message_prefix(obj) + leaf[:start] + leaf[start + len(member):]
    return signed_message(obj, TREE_OK)


def fast_signature(obj: dict[str, Any], leaf: bytes) -> Verifier | None:
    """Step 5 above: the signer's key if the key parses and the signature verifies."""
    try:
        key = parse_key(obj["key"])
        sig_text = obj["signature"]
        sig = b64decode_strict(sig_text)
    except (EntryError, ValueError):
        return None
    if len(sig) != SIGNATURE_SIZE:
        return None
    if not ed25519.verify(key.public_key, fast_message(obj, leaf, sig_text), sig):
        return None
    return key


def fast_schema_ok(obj: dict[str, Any], schema_name: str) -> bool:
    """Steps 2 and 3 above: the schema, then the depth of the one free-form member."""
    try:
        fast_validator(schema_name)(obj)
    except fastjsonschema.JsonSchemaException:
        return False
    return _fast_depth_ok(obj)


def fast_check_signed(obj: dict[str, Any], leaf: bytes, schema_name: str) -> Signed | None:
    """signing.check_signed(obj, schema_name) for `obj` = fast_tree(leaf) whose JCS leaf must
    be `leaf`, when provably valid; else None. Kind-specific rules stay the caller's."""
    leaf = bytes(leaf)
    if not fast_schema_ok(obj, schema_name):
        return None
    key = fast_signature(obj, leaf)
    return None if key is None else Signed(obj, leaf, merkle_leaf_hash(leaf), obj["kind"], key)
