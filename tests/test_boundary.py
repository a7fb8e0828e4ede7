"""The layout is the contract: the rules of README "Layout", checked on the source tree.

- verifier/ never imports the service (tlog) or server code, with one exception: the
  witness (verifier/witness/) is a server run by parties who do not run the log, so it alone
  may import aiohttp (never tlog, asyncpg or psycopg); only verifier/cli may import it;
- verifier/protocol/ is pure: no network, disk, process, thread or clock I/O, and nothing from
  verifier/client or verifier/cli;
- tlog/ takes hashing, signing and proof math from verifier/ and never re-implements them;
- tlog/ is layered store <- log <- http <- cli: a layer never imports one to its right
  (tlog/config.py, at the top level, is shared); all SQL is in tlog/store, and the HTTP
  layer reads storage only through tlog.store.reader.LogReader;
- files are replaced atomically in one place (verifier/client/files.py) and key files are
  read in one place (verifier/client/keys.py);
- no import cycles between modules (lazy imports inside functions count too);
- no module over 500 lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("verifier", "tlog")
MAX_LINES = 500
# What the client package must not reach for: the service, databases, servers.
VERIFIER_FORBIDDEN = ("tlog", "asyncpg", "aiohttp", "psycopg")
# The witness serves HTTP: aiohttp is its server, and it stays the only server in verifier/.
WITNESS_ALLOWED = ("aiohttp",)
# What pure protocol code must not reach for: any I/O, and the layers above it.
PROTOCOL_FORBIDDEN = ("pycurl", "sqlite3", "socket", "urllib", "http", "subprocess", "asyncio",
                      "aiohttp", "asyncpg", "multiprocessing", "threading", "shutil", "tempfile",
                      "signal", "os", "io", "pathlib", "time", "fcntl", "select", "concurrent",
                      "prometheus_client", "verifier.client", "verifier.cli", "tlog")
# The primitives of hashing, signing and encoding belong to verifier/ alone.
TLOG_FORBIDDEN = ("nacl", "rfc8785", "hmac", "base64", "struct", "hashlib")
# Not protocol hashing: digests of the admin secret, compared in constant time (access.py);
# the integrity check of tile-cache files on local disk (tilecache.py).
TLOG_HASHLIB_ALLOWED = {"tlog/http/access.py", "tlog/store/tilecache.py"}
PROTOCOL_NAMES = {"leaf_hash", "node_hash", "hash_up", "root_of", "fold", "verify_inclusion",
                  "verify_consistency", "inclusion_nodes", "consistency_nodes", "subtree_nodes",
                  "sign_note", "open_note", "parse_note", "sign_checkpoint", "parse_checkpoint",
                  "open_checkpoint", "encode_bundle", "decode_bundle", "tile_path",
                  "parse_tile_path", "signed_message", "validate_entry", "inclusion_from_tiles",
                  "consistency_from_tiles", "range_hashes", "sign_entry", "parse_time"}


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_nodes(path: Path) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imports(path: Path) -> set[str]:
    """Absolute names a module imports, at any depth (lazy imports included)."""
    names: set[str] = set()
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    for node in import_nodes(path):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
            continue
        base = here[: len(here) - node.level + 1] if node.level else []
        module = ".".join([*base, *([node.module] if node.module else [])])
        names.add(module)
        names.update(f"{module}.{a.name}" for a in node.names)
    return names


def hits(names: set[str], forbidden: tuple[str, ...]) -> set[str]:
    return {n for n in names for f in forbidden if n == f or n.startswith(f + ".")}


def defined_functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for pkg in PACKAGES for p in sources(pkg)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = stack[stack.index(node):]
                    del stack[stack.index(node):]
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_walk_finds_the_subpackages() -> None:
    names = {rel(p) for pkg in PACKAGES for p in sources(pkg)}
    for expected in ("verifier/protocol/merkle.py", "verifier/client/log.py",
                     "verifier/cli/main.py", "tlog/log/sequencer.py", "tlog/store/postgres.py",
                     "tlog/http/app.py", "tlog/cli/main.py"):
        assert expected in names


def verifier_forbidden(path: Path) -> tuple[str, ...]:
    if rel(path).startswith("verifier/witness/"):
        return tuple(m for m in VERIFIER_FORBIDDEN if m not in WITNESS_ALLOWED)
    return VERIFIER_FORBIDDEN


def test_verifier_never_imports_the_service_or_server_code() -> None:
    bad = {rel(f): hits(imports(f), verifier_forbidden(f)) for f in sources("verifier")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_the_witness_runs_a_server_and_only_the_cli_runs_the_witness() -> None:
    assert "aiohttp" in verifier_forbidden(REPO / "verifier" / "client" / "http.py")
    assert "tlog" in verifier_forbidden(REPO / "verifier" / "witness" / "server.py")
    assert "aiohttp" not in verifier_forbidden(REPO / "verifier" / "witness" / "server.py")
    users = {rel(f) for f in sources("verifier") if hits(imports(f), ("verifier.witness",))
             and not rel(f).startswith("verifier/witness/")}
    assert users == {"verifier/cli/witness.py"}


def test_protocol_is_pure() -> None:
    files = sorted((REPO / "verifier" / "protocol").rglob("*.py"))
    assert len(files) > 5
    bad = {rel(f): hits(imports(f), PROTOCOL_FORBIDDEN) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_tlog_does_not_reimplement_protocol_primitives() -> None:
    for f in sources("tlog"):
        forbidden = tuple(m for m in TLOG_FORBIDDEN
                          if not (m == "hashlib" and rel(f) in TLOG_HASHLIB_ALLOWED))
        assert hits(imports(f), forbidden) == set(), f"{rel(f)} imports protocol primitives"
        assert defined_functions(f) & PROTOCOL_NAMES == set(), f"{rel(f)} redefines protocol code"


def test_tlog_takes_its_protocol_from_verifier() -> None:
    used = set().union(*(imports(f) for f in sources("tlog")))
    for module in ("merkle", "tiles", "note", "checkpoint", "receipt", "registry"):
        assert f"verifier.protocol.{module}" in used, f"tlog does not use {module}"


# Each tlog layer and the layers it must never import (store <- log <- http <- cli).
TLOG_LAYERS = {
    "tlog.store": ("tlog.log", "tlog.http", "tlog.cli"),
    "tlog.log": ("tlog.http", "tlog.cli"),
    "tlog.http": ("tlog.cli",),
    # A client of the log (what `tlog publish` is built on) talks HTTP: it never reaches
    # into the server's layers, nor into the command line built on it.
    "tlog.client": ("tlog.store", "tlog.log", "tlog.http", "tlog.cli", "tlog.config"),
}


@pytest.mark.parametrize("layer", sorted(TLOG_LAYERS))
def test_tlog_layers_never_import_the_layers_above(layer: str) -> None:
    files = sources(layer.replace(".", "/"))
    assert files, f"no sources under {layer}"
    bad = {rel(f): hits(imports(f), TLOG_LAYERS[layer]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_layer_rule_sees_a_violation() -> None:
    assert hits({"tlog.http.metrics.Metrics", "tlog.config"}, TLOG_LAYERS["tlog.log"]) == {
        "tlog.http.metrics.Metrics"}


# SQL statements in string literals; only tlog/store may hold them.
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE (DATABASE|ROLE|TABLE|INDEX)"
                 r"|ALTER (TABLE|ROLE|DATABASE)|DROP (TABLE|ROLE|DATABASE)|TRUNCATE|COPY)\s")


def sql_in(path: Path) -> set[str]:
    """The SQL keywords in the string literals of a module (f-string parts included)."""
    return {m.group(0).strip() for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            for m in SQL.finditer(node.value)}


def test_all_sql_stays_in_tlog_store() -> None:
    outside = [f for f in sources("tlog") if not rel(f).startswith("tlog/store/")]
    assert len(outside) > 10
    bad = {rel(f): sql_in(f) for f in outside}
    assert {k: v for k, v in bad.items() if v} == {}
    assert sql_in(REPO / "tlog" / "store" / "postgres.py") >= {"SELECT", "INSERT INTO", "UPDATE"}


def test_the_http_layer_reads_storage_through_the_log_reader() -> None:
    bad = {rel(f): hits(imports(f), ("tlog.store.postgres", "asyncpg"))
           for f in sources("tlog/http")}
    assert {k: v for k, v in bad.items() if v} == {}


def calls(path: Path) -> Iterator[ast.Call]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node


def call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return f"{func.value.id}.{func.attr}" if isinstance(func.value, ast.Name) else func.attr
    return func.id if isinstance(func, ast.Name) else ""


def test_files_are_replaced_in_one_place() -> None:
    writers = {rel(f) for pkg in PACKAGES for f in sources(pkg)
               for c in calls(f) if call_name(c) in ("os.replace", "os.rename", "mkstemp",
                                                     "tempfile.mkstemp")}
    assert writers == {"verifier/client/files.py"}


def test_key_files_are_read_in_one_place() -> None:
    def reads_a_key_file(call: ast.Call) -> bool:
        return call_name(call) in ("parse_vkey", "parse_private_key", "parse_witness_vkey",
                                   "parse_witness_private_key") and any(
            isinstance(n, ast.Call) and call_name(n) in ("read_text", "read")
            for arg in call.args for n in ast.walk(arg))

    readers = {rel(f) for pkg in PACKAGES for f in sources(pkg)
               if any(reads_a_key_file(c) for c in calls(f))}
    assert readers == {"verifier/client/keys.py"}


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_500_lines(package: str) -> None:
    long = {rel(f): n for f in sources(package)
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}
