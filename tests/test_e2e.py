"""End to end: real `tlog serve` processes on one real PostgreSQL database."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.alt_witness import AltWitness, LogKey, Running, WitnessKey
from tests.conftest import SHARED
from tests.support import free_port, make_release, start_server, submit_all, write_key
from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.merkle import root_of, verify_inclusion
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.policy import PolicyTrust, parse_policy

GO_VERIFIER = SHARED / "interop" / "go-verifier" / "run.sh"


async def stored_leaf_hashes(database_url: str) -> list[bytes]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT leaf_hash FROM entries ORDER BY idx")
        return [bytes(r["leaf_hash"]) for r in rows]
    finally:
        await conn.close()


async def map_root_indices(database_url: str) -> set[int]:
    """Indices of the log's own map-root/v1 entries (one ends each batch)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT idx FROM entries WHERE kind = 'map-root/v1'")
        return {int(r["idx"]) for r in rows}
    finally:
        await conn.close()


def submit_to_two_servers(database_url: str, key: Path, tmp_path: Path,
                          entries: list[dict[str, Any]]) -> list[Any]:
    """Every entry submitted concurrently, spread over two `tlog serve` on one database."""
    servers = [start_server(database_url, key, tmp_path) for _ in range(2)]
    try:
        return asyncio.run(submit_all([s.url for s in servers], entries))
    finally:
        for s in servers:
            s.stop()


def test_two_servers_on_one_database_build_one_tree(database_url: str, log_signer: Signer,
                                                     tmp_path: Path) -> None:
    """2,000 concurrent submissions over two processes: one dense tree, every receipt proves."""
    key = write_key(tmp_path / "log.key", log_signer)
    publisher = generate_key("concurrency-bot")
    entries = [make_release(publisher, f"pkg{i % 50}", f"1.{i}") for i in range(2000)]
    results = submit_to_two_servers(database_url, key, tmp_path, entries)
    assert [r.status for r in results] == [201] * 2000, results[0].body
    indices = {r.body["index"] for r in results}
    assert len(indices) == 2000
    for r in results:
        cp = open_checkpoint(r.body["checkpoint"], log_signer.verifier())
        assert cp.size == r.body["tree_size"]
        verify_inclusion(r.body["index"], cp.size, bytes.fromhex(r.body["leaf_hash"]),
                         [bytes.fromhex(h) for h in r.body["inclusion_proof"]], cp.root)
    hashes = asyncio.run(stored_leaf_hashes(database_url))
    final = max((open_checkpoint(r.body["checkpoint"], log_signer.verifier()) for r in results),
                key=lambda c: c.size)
    # Dense: the releases and a map-root entry ending each batch, the last leaf among them.
    map_roots = asyncio.run(map_root_indices(database_url))
    assert final.size == len(hashes) == 2000 + len(map_roots)
    assert indices | map_roots == set(range(final.size)) and final.size - 1 in map_roots
    assert root_of(hashes) == final.root


async def set_default_isolation(database_url: str, level: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" '
                           f"SET default_transaction_isolation = '{level}'")
    finally:
        await conn.close()


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_two_servers_append_under_a_stricter_default_isolation_without_503s(
        database_url: str, log_signer: Signer, tmp_path: Path, level: str) -> None:
    """Appends set READ COMMITTED themselves: under a snapshot taken at BEGIN, a batch
    waiting for the lock missed the other server's batch and failed (hundreds of 503s)."""
    asyncio.run(set_default_isolation(database_url, level))
    key = write_key(tmp_path / "log.key", log_signer)
    publisher = generate_key("isolation-bot")
    entries = [make_release(publisher, f"pkg{i % 20}", f"2.{i}") for i in range(600)]
    results = submit_to_two_servers(database_url, key, tmp_path, entries)
    refused = [r for r in results if r.status != 201]
    assert not refused, f"{len(refused)} refused, e.g. {refused[0].status} {refused[0].body}"
    indices = {r.body["index"] for r in results}
    map_roots = asyncio.run(map_root_indices(database_url))
    assert len(indices) == 600 and not indices & map_roots
    assert indices | map_roots == set(range(600 + len(map_roots)))
    assert root_of(asyncio.run(stored_leaf_hashes(database_url))) == open_checkpoint(
        max(results, key=lambda r: r.body["tree_size"]).body["checkpoint"],
        log_signer.verifier()).root


@pytest.mark.skipif(not GO_VERIFIER.exists(),
                    reason="the Go verifier (../shared/interop) is not beside this clone")
def test_go_verifier_accepts_the_log(database_url: str, log_signer: Signer,
                                     tmp_path: Path) -> None:
    """Go's sumdb/tlog checks our checkpoint, tiles (full and partial) and entry bundles."""
    key = write_key(tmp_path / "log.key", log_signer)
    vkey = tmp_path / "log.vkey"
    vkey.write_text(log_signer.verifier().text() + "\n")
    publisher = generate_key("interop-bot")
    server = start_server(database_url, key, tmp_path)
    try:
        first = asyncio.run(submit_all([server.url], [
            make_release(publisher, "interop", f"0.{i}") for i in range(100)]))
        old = tmp_path / "old-checkpoint"
        old.write_text(max((r.body for r in first), key=lambda b: b["tree_size"])["checkpoint"])
        asyncio.run(submit_all([server.url], [
            make_release(publisher, "interop", f"1.{i}") for i in range(500)]))
        for args in (["verify-all", server.url, str(vkey)],
                     ["verify", server.url, str(vkey), "333", str(old)],
                     ["verify", server.url, str(vkey), "599", str(old)]):
            proc = subprocess.run([str(GO_VERIFIER), *args], capture_output=True, text=True,
                                  timeout=600, check=False)
            assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
            assert "OK" in proc.stdout
    finally:
        server.stop()


@pytest.mark.skipif(not GO_VERIFIER.exists(),
                    reason="the Go verifier (../shared/interop) is not beside this clone")
def test_go_verifier_accepts_a_log_publishing_per_witness_quorum(
        database_url: str, log_signer: Signer, tmp_path: Path) -> None:
    """With a witness policy /checkpoint carries cosignature lines after the log's own:
    Go's note.Open must ignore them (unknown keys) and still verify the whole log."""
    key = write_key(tmp_path / "log.key", log_signer)
    vkey = tmp_path / "log.vkey"
    vkey.write_text(log_signer.verifier().text() + "\n")
    log_key = LogKey.parse(log_signer.verifier().text())
    witnesses = [Running(AltWitness(WitnessKey.generate(f"w{i}.example"),
                                    {log_key.name: [log_key]}), free_port()) for i in (1, 2)]
    policy = (f"log {log_signer.verifier().text()}\n"
              + "".join(f"witness w{i} {w.witness.key.vkey()} {w.url}\n"
                        for i, w in enumerate(witnesses, 1))
              + "group g all w1 w2\nquorum g\n")
    (tmp_path / "policy").write_text(policy)
    for w in witnesses:
        w.start_thread()
    server = start_server(database_url, key, tmp_path, extra=(
        "--policy", "open", "--witness-policy", str(tmp_path / "policy"),
        "--witness-interval", "0.2"))
    try:
        publisher = generate_key("interop-bot")
        results = asyncio.run(submit_all([server.url], [
            make_release(publisher, "interop", f"0.{i}") for i in range(300)]))
        # 300 releases and a map-root entry ending each batch the log made of them
        size = max(r.body["tree_size"] for r in results)
        assert size > 300
        note = wait_for_cosigned(server.url, size)
        assert PolicyTrust.for_log(parse_policy(policy)).open(note).size == size
        proc = subprocess.run([str(GO_VERIFIER), "verify-all", server.url, str(vkey)],
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, f"verify-all failed:\n{proc.stdout}\n{proc.stderr}"
        assert f"all {size} entries OK" in proc.stdout
    finally:
        server.stop()
        for w in witnesses:
            w.stop_thread()


def wait_for_cosigned(url: str, size: int, timeout: float = 30) -> str:
    """The /checkpoint note once the witness quorum cosigned `size`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/checkpoint", timeout=5) as resp:
                note = resp.read().decode()
            if int(note.split("\n")[1]) >= size:
                return note
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
        time.sleep(0.1)
    raise AssertionError(f"size {size} was not cosigned within {timeout} s")
