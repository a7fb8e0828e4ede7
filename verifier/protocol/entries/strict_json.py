"""Strict JSON (RFC 8259) in, canonical JSON (RFC 8785, JCS) out, for entries of every kind.

- :func:`parse_json` accepts only what RFC 8259 calls JSON and what I-JSON (RFC 7493)
  recommends: UTF-8 without a byte order mark, unique member names, no NaN or Infinity, no
  number beyond a float, and at most ``max_depth`` nested containers.
- :func:`canonical` is the JCS encoding an entry is signed and logged in; integers beyond
  +-(2**53 - 1) and lone surrogates cannot be encoded.

Failures raise EntryError with code ``invalid_json`` (parsing) or ``invalid_entry`` (a
value that is not a JSON tree, or cannot be canonicalized). Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import rfc8785

from verifier.protocol.entries.errors import INVALID_ENTRY, INVALID_JSON, EntryError

__all__ = ["MAX_DEPTH", "MAX_SAFE_INTEGER", "TREE_BAD", "TREE_NEEDS_RFC8785", "TREE_OK",
           "canonical", "child_path", "json_problem", "parse_json", "require_tree",
           "scan_tree"]

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def child_path(path: str, key: str | int) -> str:
    """The path of member or item `key` below `path`, as messages write it (a.b[2]["x y"])."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _IDENTIFIER.fullmatch(key):
        return f"{path}[{json.dumps(key)[:100]}]"
    return f"{path}.{key}" if path else key


_SCALARS = (str, int, float, bool, type(None))
TREE_OK, TREE_NEEDS_RFC8785, TREE_BAD = 0, 1, 2


def scan_tree(value: Any, max_depth: int) -> int:
    """Classify a parsed value quickly, without building paths (the hot path).

    TREE_OK: a JSON tree within max_depth whose JCS encoding json.dumps reproduces (no
    floats, ASCII member names, integers within +-(2**53 - 1)); TREE_NEEDS_RFC8785: a JSON
    tree that needs the full RFC 8785 encoder; TREE_BAD: anything else (the caller then
    asks json_problem for a message).
    """
    result = TREE_OK
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return TREE_BAD
        if type(node) is dict:
            for key in node:
                if type(key) is not str:
                    return TREE_BAD
                if not key.isascii():
                    result = TREE_NEEDS_RFC8785
            children: Any = node.values()
        elif type(node) is list:
            children = node
        else:
            return TREE_BAD
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int:
                if not -MAX_SAFE_INTEGER <= child <= MAX_SAFE_INTEGER:
                    result = TREE_NEEDS_RFC8785
            elif kind is float:
                result = TREE_NEEDS_RFC8785
            elif kind not in _SCALARS:
                return TREE_BAD
    return result


def json_problem(value: Any, max_depth: int) -> str | None:
    """Why ``value`` is not a JSON tree at most ``max_depth`` containers deep, or None.

    Walks iteratively, so arbitrarily deep input cannot exhaust the Python stack.
    """
    if type(value) in (dict, list) and scan_tree(value, max_depth) != TREE_BAD:
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
        stack.extend((child, depth + 1, child_path(path, key)) for key, child in items)
    return None


def require_tree(value: Any) -> None:
    """EntryError("invalid_entry") unless `value` is a JSON tree at most MAX_DEPTH deep."""
    problem = json_problem(value, MAX_DEPTH)
    if problem is not None:
        raise EntryError(INVALID_ENTRY, problem)


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
    problem = json_problem(value, max_depth)
    if problem is not None:
        raise EntryError(INVALID_JSON, problem)
    return value


def canonical(value: Mapping[str, Any], tree: int | None = None) -> bytes:
    """RFC 8785 (JCS) encoding; integers beyond 2**53 or lone surrogates are invalid.

    For trees without floats or non-ASCII member names, json.dumps with sorted keys and no
    whitespace produces exactly the JCS bytes (same escapes, same integer form, and code
    point order equals UTF-16 order for ASCII names) about ten times faster; the test suite
    checks the two agree. Anything else goes through the rfc8785 library. `tree` is the
    scan_tree result when the caller already has it.
    """
    if tree is None:
        tree = scan_tree(value, MAX_DEPTH + 1)
    if tree == TREE_OK:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                              sort_keys=True, allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 refuse it with its own message
    try:
        return bytes(rfc8785.dumps(dict(value)))
    except (ValueError, TypeError) as e:
        raise EntryError(INVALID_ENTRY, f"entry cannot be canonicalized (RFC 8785): {e}") from e
