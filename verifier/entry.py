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

from verifier.merkle import leaf_hash as merkle_leaf_hash
from verifier.note import NoteError, Signer, Verifier, b64decode_strict, b64encode, parse_vkey

__all__ = [
    "KIND",
    "MAX_DEPTH",
    "MAX_ENTRY_SIZE",
    "SIGNING_PREFIX",
    "EntryError",
    "Release",
    "Signed",
    "check_signed",
    "parse_json",
    "parse_key",
    "parse_leaf",
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
    resource = importlib.resources.files("verifier").joinpath(name)
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
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise EntryError(INVALID_ENTRY, f"{where}: {text!r} is not a valid time") from e


def _check_install_window(window: dict[str, Any]) -> None:
    """RFC 3339 UTC times, with not_before <= not_after."""
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
    if not key.verify(signed_message(entry, tree), sig):
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
    return Release(
        entry=obj,
        leaf=leaf,
        leaf_hash=merkle_leaf_hash(leaf),
        package=obj["package"],
        version=obj["version"],
        counter=obj.get("counter"),
        key=key,
        publisher=key.name,
    )


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
    """Parse and validate leaf bytes, which must be the entry's own JCS encoding."""
    if len(leaf) > MAX_ENTRY_SIZE:
        raise EntryError(ENTRY_TOO_LARGE, f"leaf is {len(leaf)} bytes, at most {MAX_ENTRY_SIZE}")
    release = _validate_tree(parse_json(leaf))  # parse_json returns a fresh, checked tree
    if release.leaf != bytes(leaf):
        raise EntryError(INVALID_ENTRY, "leaf is not the RFC 8785 (JCS) encoding of its entry")
    return release


def sign_entry(fields: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """Return a copy of ``fields`` with "key" set to the signer's vkey and "signature" set.

    Does not validate: pass the result to :func:`validate_entry` to check it.
    """
    entry = copy.deepcopy({n: v for n, v in fields.items() if n not in ("key", "signature")})
    entry["key"] = signer.verifier().text()
    entry["signature"] = b64encode(signer.sign(signed_message(entry)))
    return entry
