"""The ``release/v1`` log entry: strict JSON, schema, canonical leaf and publisher signature.

An entry is a JSON object described by ``release-v1.schema.json`` (JSON Schema draft
2020-12), for example::

    {"kind": "release/v1", "package": "example.com/tool", "version": "1.2.0",
     "counter": 7,
     "artifacts": [{"name": "tool.tar.gz", "sha256": "<64 lowercase hex>", "size": 1234}],
     "key": "example.com/alice+1a2b3c4d+AbC...", "signature": "<base64, 64 bytes>"}

- The publisher signs ``b"tlog/release/v1\\n" || JCS(entry without "signature")`` with the
  Ed25519 key whose vkey (c2sp.org/signed-note) is ``key``; the key's name is the publisher.
- The log leaf is JCS(entry) (RFC 8785), at most 65,535 bytes (c2sp.org/tlog-tiles entry
  bundles use a uint16 length); its leaf hash is SHA-256(0x00 || leaf) (RFC 6962, 2.1).

Every failure raises :class:`EntryError` whose ``code`` is one of ``invalid_json``,
``invalid_entry``, ``bad_key``, ``bad_signature`` or ``entry_too_large``, and whose message
names the offending member (``artifacts[1].sha256: ...``).

parse_leaf first tries a fast path (see "fast path for stored leaves" below) that only ever
accepts: when it cannot prove a leaf valid it hands the leaf to the exact path
(parse_leaf_exact), which makes every refusal and writes every message.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.resources
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fastjsonschema
import jsonschema
import rfc8785

from verifier.protocol import ed25519
from verifier.protocol.merkle import leaf_hash as merkle_leaf_hash
from verifier.protocol.note import (
    NoteError,
    Signer,
    Verifier,
    b64decode_strict,
    b64encode,
    parse_vkey,
)
from verifier.protocol.rfc3339 import TimeFormatError, parse_time

__all__ = [
    "KIND",
    "MAX_DEPTH",
    "MAX_ENTRY_SIZE",
    "SIGNING_PREFIX",
    "EntryError",
    "Release",
    "Signed",
    "check_signed",
    "fast_check_signed",
    "fast_release",
    "fast_tree",
    "parse_json",
    "parse_key",
    "parse_leaf",
    "parse_leaf_exact",
    "sign_entry",
    "signed_message",
    "signing_prefix",
    "validate_entry",
]

KIND = "release/v1"
SIGNING_PREFIX = b"tlog/release/v1\n"
MAX_ENTRY_SIZE = 65535
MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
# The schema's patterns for `package` and `version`, for callers that check a name alone.
PACKAGE_NAME = re.compile(r"[A-Za-z0-9._+/@-]{1,200}")
VERSION_TEXT = re.compile(r"[!-~]{1,100}")
SIGNATURE_SIZE = 64
SCHEMA_RESOURCE = "release-v1.schema.json"

INVALID_JSON = "invalid_json"
INVALID_ENTRY = "invalid_entry"
BAD_KEY = "bad_key"
BAD_SIGNATURE = "bad_signature"
ENTRY_TOO_LARGE = "entry_too_large"

_MAX_MESSAGE = 300
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EntryError(ValueError):
    """A release entry was rejected; ``code`` says why, the message says where."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


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


# -- strict JSON --------------------------------------------------------------------------


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise ValueError(f"duplicate object member name {name[:100]!r}")
        obj[name] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _IDENTIFIER.fullmatch(key):
        return f"{path}[{json.dumps(key)[:100]}]"
    return f"{path}.{key}" if path else key


_SCALARS = (str, int, float, bool, type(None))
_TREE_OK, _TREE_NEEDS_RFC8785, _TREE_BAD = 0, 1, 2


def _scan_tree(value: Any, max_depth: int) -> int:
    """Classify a parsed value quickly, without building paths (the hot path).

    _TREE_OK: a JSON tree within max_depth whose JCS encoding json.dumps reproduces (no
    floats, ASCII member names, integers within +-(2**53 - 1)); _TREE_NEEDS_RFC8785: a JSON
    tree that needs the full RFC 8785 encoder; _TREE_BAD: anything else (the caller then
    asks _json_problem for a message).
    """
    result = _TREE_OK
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return _TREE_BAD
        if type(node) is dict:
            for key in node:
                if type(key) is not str:
                    return _TREE_BAD
                if not key.isascii():
                    result = _TREE_NEEDS_RFC8785
            children: Any = node.values()
        elif type(node) is list:
            children = node
        else:
            return _TREE_BAD
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int:
                if not -MAX_SAFE_INTEGER <= child <= MAX_SAFE_INTEGER:
                    result = _TREE_NEEDS_RFC8785
            elif kind is float:
                result = _TREE_NEEDS_RFC8785
            elif kind not in _SCALARS:
                return _TREE_BAD
    return result


def _json_problem(value: Any, max_depth: int) -> str | None:
    """Why ``value`` is not a JSON tree at most ``max_depth`` containers deep, or None.

    Walks iteratively, so arbitrarily deep input cannot exhaust the Python stack.
    """
    if type(value) in (dict, list) and _scan_tree(value, max_depth) != _TREE_BAD:
        return None
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if node is None or isinstance(node, str | int | float):
            continue
        if not isinstance(node, dict | list):
            return f"{path or 'entry'}: a {type(node).__name__} is not a JSON value"
        if depth > max_depth:
            return f"{path or 'entry'}: nested deeper than {max_depth} levels"
        if isinstance(node, dict) and not all(isinstance(key, str) for key in node):
            return f"{path or 'entry'}: object member names must be strings"
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend((child, depth + 1, _child_path(path, key)) for key, child in items)
    return None


def parse_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict JSON (RFC 8259) from UTF-8 bytes, raising EntryError("invalid_json").

    Rejects invalid UTF-8 (and a byte order mark), duplicate object member names, NaN and
    Infinity, numbers that overflow a float, and nesting deeper than ``max_depth``
    containers (checked without recursion).
    """
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise EntryError(INVALID_JSON, f"not UTF-8: {e.reason} at byte {e.start}") from e
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_members,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError as e:
        raise EntryError(INVALID_JSON, f"nested deeper than {max_depth} levels") from e
    except ValueError as e:
        raise EntryError(INVALID_JSON, f"invalid JSON: {e}") from e
    problem = _json_problem(value, max_depth)
    if problem is not None:
        raise EntryError(INVALID_JSON, problem)
    return value


# -- schema -------------------------------------------------------------------------------


@functools.cache
def _compile_pattern(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """The ``pattern`` keyword with ECMA-262's ``$``, which only matches at the very end.

    Python's ``$`` also matches before a final newline, which would let "1.0\\n" through.
    """
    if validator.is_type(instance, "string") and not _compile_pattern(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _schema(name: str = SCHEMA_RESOURCE) -> Any:
    resource = importlib.resources.files("verifier.protocol.entries").joinpath(name)
    return json.loads(resource.read_text(encoding="utf-8"))


@functools.cache
def _fast_validator(name: str = SCHEMA_RESOURCE) -> Any:
    """The schema compiled to Python code: ~20x faster than jsonschema on valid entries.

    fastjsonschema gives ``$`` ECMA-262's meaning (end of input) too. Only when it refuses
    an entry does jsonschema run, to find the clearest reason.
    """
    return fastjsonschema.compile(_schema(name))


@functools.cache
def _validator(name: str = SCHEMA_RESOURCE) -> Any:
    """The schema validator for an entry kind, loaded once from the package resource."""
    schema = _schema(name)
    base = jsonschema.Draft202012Validator
    base.check_schema(schema)
    cls = jsonschema.validators.extend(base, {"pattern": _ecma_pattern})
    return cls(schema)


def _format_path(path: Iterable[Any]) -> str:
    where = ""
    for key in path:
        where = _child_path(where, key)
    return where or "entry"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _explain(error: Any) -> str:
    """A one-line reason for a jsonschema error, without dumping huge instances."""
    kind, limit, schema = error.validator, error.validator_value, error.schema
    if kind == "pattern" and isinstance(schema, dict) and "description" in schema:
        return f"{_short(error.instance)} is not {schema['description']}"
    messages = {
        "maxItems": f"must have at most {limit} items",
        "minItems": f"must have at least {limit} item(s)",
        "maxLength": f"must be at most {limit} characters",
        "minLength": f"must be at least {limit} character(s)",
        "type": f"{_short(error.instance)} is not of type {limit!r}",
    }
    return str(messages.get(kind, error.message))


def _check_schema(obj: Any, name: str = SCHEMA_RESOURCE) -> None:
    try:
        _fast_validator(name)(obj)
        return
    except fastjsonschema.JsonSchemaException as exc:
        fast_reason = str(exc)
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(obj))
    if error is None:  # the two validators disagree: refusing is the safe side
        raise EntryError(INVALID_ENTRY, fast_reason[:_MAX_MESSAGE])
    message = f"{_format_path(error.absolute_path)}: {_explain(error)}"
    raise EntryError(INVALID_ENTRY, message[:_MAX_MESSAGE])


# -- checks the schema cannot express ------------------------------------------------------


def _check_integer(where: str, value: Any) -> None:
    """Integers must be Python ints (not floats such as 5.0, not bools) below 2**53."""
    if type(value) is not int:
        raise EntryError(INVALID_ENTRY, f"{where}: must be an integer, not {_short(value)}")
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise EntryError(INVALID_ENTRY, f"{where}: must be in [0, 2**53), not {value}")


def _check_artifacts(artifacts: list[dict[str, Any]]) -> None:
    names: set[str] = set()
    for i, artifact in enumerate(artifacts):
        _check_integer(f"artifacts[{i}].size", artifact["size"])
        if artifact["name"] in names:
            name = _short(artifact["name"])
            raise EntryError(INVALID_ENTRY, f"artifacts[{i}].name: duplicate name {name}")
        names.add(artifact["name"])


def _parse_time(where: str, text: str) -> datetime:
    try:
        return parse_time(text)
    except TimeFormatError as e:
        raise EntryError(INVALID_ENTRY, f"{where}: {text!r} is not a valid time") from e


def _check_install_window(window: dict[str, Any]) -> None:
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
        _check_install_window(entry["install_window"])


# -- canonical encoding and signature ------------------------------------------------------


def _canonical(value: Mapping[str, Any], tree: int | None = None) -> bytes:
    """RFC 8785 (JCS) encoding; integers beyond 2**53 or lone surrogates are invalid.

    For trees without floats or non-ASCII member names, json.dumps with sorted keys and no
    whitespace produces exactly the JCS bytes (same escapes, same integer form, and code
    point order equals UTF-16 order for ASCII names) about ten times faster; the test suite
    checks the two agree. Anything else goes through the rfc8785 library. `tree` is the
    _scan_tree result when the caller already has it.
    """
    if tree is None:
        tree = _scan_tree(value, MAX_DEPTH + 1)
    if tree == _TREE_OK:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                              sort_keys=True, allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 refuse it with its own message
    try:
        return bytes(rfc8785.dumps(dict(value)))
    except (ValueError, TypeError) as e:
        raise EntryError(INVALID_ENTRY, f"entry cannot be canonicalized (RFC 8785): {e}") from e


def signed_message(entry: Mapping[str, Any], tree: int | None = None) -> bytes:
    """``b"tlog/release/v1\\n"`` followed by JCS(entry without its "signature" member)."""
    unsigned = {name: value for name, value in entry.items() if name != "signature"}
    kind = entry.get("kind")
    prefix = signing_prefix(kind) if isinstance(kind, str) and kind != KIND else SIGNING_PREFIX
    return prefix + _canonical(unsigned, tree)


def signing_prefix(kind: str) -> bytes:
    """The domain separator of an entry kind: b"tlog/" + kind + b"\\n" (release/v1 included)."""
    return b"tlog/" + kind.encode("utf-8") + b"\n"


@functools.lru_cache(maxsize=4096)
def _parse_key(text: str) -> Verifier:
    """Publishers sign many entries with one key: parse each key text once."""
    try:
        return parse_vkey(text)
    except NoteError as e:
        raise EntryError(BAD_KEY, f"key: {e}") from e


def _check_signature(entry: Mapping[str, Any], key: Verifier, tree: int | None = None) -> None:
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


def validate_entry(obj: Any) -> Release:
    """Validate a parsed release/v1 entry and its publisher signature.

    Checks, in order: a JSON tree at most MAX_DEPTH deep; the schema; integer types,
    unique artifact names and the install window; the JCS leaf size (entry_too_large); the
    key (bad_key); the signature (bad_signature). Returns the Release, which holds its own
    copy of the entry.
    """
    problem = _json_problem(obj, MAX_DEPTH)
    if problem is not None:
        raise EntryError(INVALID_ENTRY, problem)
    release = _validate_tree(obj)
    return dataclasses.replace(release, entry=json.loads(release.leaf))


def _validate_tree(obj: Any) -> Release:
    """validate_entry for a value already known to be a JSON tree; `obj` is kept, not copied."""
    _check_schema(obj)
    _check_semantics(obj)
    tree = _scan_tree(obj, MAX_DEPTH + 1)  # dropping "signature" (a string) cannot change it
    leaf = _canonical(obj, tree)
    if len(leaf) > MAX_ENTRY_SIZE:
        raise EntryError(ENTRY_TOO_LARGE, f"entry is {len(leaf)} bytes, at most {MAX_ENTRY_SIZE}")
    key = _parse_key(obj["key"])
    _check_signature(obj, key, tree)
    return _release(obj, leaf, key)


def _release(obj: dict[str, Any], leaf: bytes, key: Verifier) -> Release:
    """The Release of a validated release/v1 tree `obj`, its JCS leaf and its signer's key."""
    return Release(entry=obj, leaf=leaf, leaf_hash=merkle_leaf_hash(leaf),
                   package=obj["package"], version=obj["version"],
                   counter=obj.get("counter"), key=key, publisher=key.name)


@dataclass(frozen=True)
class Signed:
    """An entry of any kind whose schema, canonical form, size and signature were checked."""

    entry: dict[str, Any]
    leaf: bytes
    leaf_hash: bytes
    kind: str
    key: Verifier


def check_signed(obj: Any, schema_name: str) -> Signed:
    """For entry kinds other than release/v1: schema `schema_name`, JCS leaf within
    MAX_ENTRY_SIZE, the signer's key and signature over signing_prefix(kind) + JCS(unsigned).

    `obj` must be a fresh JSON tree (parse_json's result or validated by the caller); it is
    kept, not copied. Kind-specific rules are the caller's.
    """
    problem = _json_problem(obj, MAX_DEPTH)
    if problem is not None:
        raise EntryError(INVALID_ENTRY, problem)
    _check_schema(obj, schema_name)
    tree = _scan_tree(obj, MAX_DEPTH + 1)
    leaf = _canonical(obj, tree)
    if len(leaf) > MAX_ENTRY_SIZE:
        raise EntryError(ENTRY_TOO_LARGE, f"entry is {len(leaf)} bytes, at most {MAX_ENTRY_SIZE}")
    key = _parse_key(obj["key"])
    _check_signature(obj, key, tree)
    return Signed(obj, leaf, merkle_leaf_hash(leaf), obj["kind"], key)


def parse_key(text: str) -> Verifier:
    """A vkey inside an entry, or EntryError("bad_key")."""
    return _parse_key(text)


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
    release = _validate_tree(parse_json(leaf))  # parse_json returns a fresh, checked tree
    if release.leaf != bytes(leaf):
        raise EntryError(INVALID_ENTRY, "leaf is not the RFC 8785 (JCS) encoding of its entry")
    return release


# -- fast path for stored leaves ------------------------------------------------------------
#
# An auditor re-validates millions of leaves that are nearly all valid, small and plain:
# ASCII, integers, no floats. For those, the exact path spends most of its time on work
# whose outcome is known in advance: an object_pairs_hook in Python, two tree walks, and
# two more json.dumps (leaf and signed message). The fast path below proves, more cheaply,
# that the exact path would accept the leaf, and builds the identical Release or Signed.
# It never refuses anything: whatever it cannot prove, including every invalid leaf, goes
# to the exact path, so the accepted set and every error code and message stay the same.
#
# The proof, step by step (E(x) is json.dumps(x, ensure_ascii=False, separators=(",", ":"),
# sort_keys=True), which is what _canonical uses for trees _scan_tree calls _TREE_OK):
#
# 1. fast_tree: the leaf is ASCII (so UTF-8 decoding gives the same text, no BOM), at most
#    MAX_ENTRY_SIZE bytes, and json parses it without floats or NaN/Infinity (the hooks
#    raise _Defer) into a dict `obj` with E(obj) == leaf. Because E emits every member of a
#    dict exactly once and two different names never encode alike, a leaf with duplicate
#    member names cannot equal E(obj); so parse_json's _unique_members would not have
#    fired, its float and constant hooks would not have been called, and it returns an
#    equal tree, in the same member order. Equality with E(obj) also rules out whitespace,
#    unsorted members, escapes E would not write (\u00e9, \/, \u0041), non-ASCII member
#    names (E writes them raw, the leaf is ASCII), lone surrogates (E writes them raw too),
#    -0 and leading zeros; exponents and fractions are floats, refused by the hook. Too
#    deep nesting (RecursionError) and integers of more than 4300 digits (ValueError) also
#    defer.
# 2. Nesting depth and integer range: the schemas leave only release/v1's `metadata`
#    free-form. Everything else is closed (additionalProperties: false) and at most 3
#    containers deep, and its numbers are bounded by minimum/maximum within [0, 2**53)
#    (registry kinds hold no numbers at all). So once the schema passes, _scan_tree on
#    metadata alone (depth limit MAX_DEPTH - 1: metadata sits at depth 2) shows the whole
#    tree is within MAX_DEPTH and _TREE_OK: no floats, ASCII names, safe integers. Then
#    _json_problem finds nothing and _canonical(obj) is E(obj), which is the leaf.
#    tests/test_entry_fast.py walks the schemas and fails if a change breaks this premise.
# 3. The schema: the same compiled validator as _check_schema.
# 4. _check_semantics: counter and sizes passed the schema's "integer" type (which refuses
#    bools) with minimum 0 and maximum 2**53 - 1, and are not floats (step 1), so
#    _check_integer holds; duplicate artifact names and the install window are checked here
#    as there.
# 5. Key and signature: the same _parse_key, b64decode_strict, length check and verify, on
#    the same message, cut out of the leaf (_fast_message).
#
# The differential tests in tests/test_entry_fast.py compare both paths on generated leaves.


class _Defer(Exception):
    """Raised from the fast path's JSON hooks: this leaf needs the exact path."""


def _defer(_text: str) -> Any:
    raise _Defer


# Built once: json.loads(text, **hooks) would build a new decoder for every call.
_FAST_DECODER = json.JSONDecoder(parse_float=_defer, parse_constant=_defer)
# E(x) of the comment above; check_circular=False as a parsed tree has no cycles.
_FAST_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                                 check_circular=False)
# JSONEncoder.encode builds the C encoder anew on every call (a third of its cost on an
# entry). Build it once, with exactly the arguments JSONEncoder.iterencode passes it for
# _FAST_ENCODER (no markers, no indent); without the C accelerator, use encode().
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE: Any = None if _C_MAKE_ENCODER is None else _C_MAKE_ENCODER(
    None, _FAST_ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False,
    True)


def _encode(value: Any) -> str:
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
        if type(obj) is not dict or _encode(obj) != text:
            return None
    except (_Defer, ValueError, RecursionError):  # ValueError includes JSONDecodeError
        return None
    return obj


def _fast_depth_ok(obj: dict[str, Any]) -> bool:
    """Step 2 above, for a tree that passed its schema: the one free-form member is fine."""
    metadata = obj.get("metadata")
    return metadata is None or _scan_tree(metadata, MAX_DEPTH - 1) == _TREE_OK


def _fast_message(obj: dict[str, Any], leaf: bytes, sig_text: str) -> bytes:
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
        kind = obj.get("kind")  # the prefix as signed_message chooses it
        prefix = signing_prefix(kind) if isinstance(kind, str) and kind != KIND else SIGNING_PREFIX
        return prefix + leaf[:start] + leaf[start + len(member):]
    return signed_message(obj, _TREE_OK)


def _fast_signature(obj: dict[str, Any], leaf: bytes) -> Verifier | None:
    """Step 5 above: the signer's key if the key parses and the signature verifies."""
    try:
        key = _parse_key(obj["key"])
        sig_text = obj["signature"]
        sig = b64decode_strict(sig_text)
    except (EntryError, ValueError):
        return None
    if len(sig) != SIGNATURE_SIZE:
        return None
    if not ed25519.verify(key.public_key, _fast_message(obj, leaf, sig_text), sig):
        return None
    return key


def _fast_schema_ok(obj: dict[str, Any], schema_name: str) -> bool:
    """Steps 2 and 3 above: the schema, then the depth of the one free-form member."""
    try:
        _fast_validator(schema_name)(obj)
    except fastjsonschema.JsonSchemaException:
        return False
    return _fast_depth_ok(obj)


def fast_release(obj: dict[str, Any], leaf: bytes) -> Release | None:
    """parse_leaf_exact(leaf) for `obj` = fast_tree(leaf), when provably valid; else None."""
    leaf = bytes(leaf)
    if not _fast_schema_ok(obj, SCHEMA_RESOURCE):
        return None
    artifacts = obj["artifacts"]
    if len({artifact["name"] for artifact in artifacts}) != len(artifacts):
        return None
    if "install_window" in obj:
        try:
            _check_install_window(obj["install_window"])
        except EntryError:
            return None
    key = _fast_signature(obj, leaf)
    return None if key is None else _release(obj, leaf, key)


def fast_check_signed(obj: dict[str, Any], leaf: bytes, schema_name: str) -> Signed | None:
    """check_signed(obj, schema_name) for `obj` = fast_tree(leaf) whose JCS leaf must be
    `leaf`, when provably valid; else None. Kind-specific rules stay the caller's."""
    leaf = bytes(leaf)
    if not _fast_schema_ok(obj, schema_name):
        return None
    key = _fast_signature(obj, leaf)
    return None if key is None else Signed(obj, leaf, merkle_leaf_hash(leaf), obj["kind"], key)


def sign_entry(fields: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """Return a copy of ``fields`` with "key" set to the signer's vkey and "signature" set.

    Does not validate: pass the result to :func:`validate_entry` to check it.
    """
    entry = copy.deepcopy({n: v for n, v in fields.items() if n not in ("key", "signature")})
    entry["key"] = signer.verifier().text()
    entry["signature"] = b64encode(signer.sign(signed_message(entry)))
    return entry
