"""The package boundary: verifier/ is the protocol, tlog/ the service that uses it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What a pure protocol package must not reach for: the service, databases, servers.
VERIFIER_FORBIDDEN = ("tlog", "asyncpg", "aiohttp.web", "psycopg")
# The primitives of hashing, signing and encoding belong to verifier/ alone.
TLOG_FORBIDDEN = ("nacl", "rfc8785", "hmac", "base64", "struct", "hashlib")
# Not protocol hashing: digests of the admin secret, compared in constant time (access.py);
# the integrity check of tile-cache files on local disk (tilecache.py).
TLOG_HASHLIB_ALLOWED = {"access.py", "tilecache.py"}
PROTOCOL_NAMES = {"leaf_hash", "node_hash", "hash_up", "root_of", "fold", "verify_inclusion",
                  "verify_consistency", "inclusion_nodes", "consistency_nodes", "subtree_nodes",
                  "sign_note", "open_note", "parse_note", "sign_checkpoint", "parse_checkpoint",
                  "open_checkpoint", "encode_bundle", "decode_bundle", "tile_path",
                  "parse_tile_path", "signed_message", "validate_entry"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def defined_functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def hits(names: set[str], forbidden: tuple[str, ...]) -> set[str]:
    return {n for n in names for f in forbidden if n == f or n.startswith(f + ".")}


def test_verifier_never_imports_the_service_or_server_code() -> None:
    files = sorted((REPO / "verifier").glob("*.py"))
    assert files
    bad = {f.name: hits(imports(f), VERIFIER_FORBIDDEN) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_tlog_does_not_reimplement_protocol_primitives() -> None:
    files = sorted((REPO / "tlog").glob("*.py"))
    assert files
    for f in files:
        forbidden = tuple(m for m in TLOG_FORBIDDEN
                          if not (m == "hashlib" and f.name in TLOG_HASHLIB_ALLOWED))
        assert hits(imports(f), forbidden) == set(), f"{f.name} imports protocol primitives"
        assert defined_functions(f) & PROTOCOL_NAMES == set(), f"{f.name} redefines protocol code"


def test_tlog_takes_its_protocol_from_verifier() -> None:
    used = set().union(*(imports(f) for f in (REPO / "tlog").glob("*.py")))
    for module in ("verifier.merkle", "verifier.tiles", "verifier.note", "verifier.checkpoint",
                   "verifier.entry", "verifier.proof"):
        assert module in used, f"tlog does not use {module}"
