"""`tlog serve --read-database-url`: reads from a streaming-replication hot standby.

A real primary and a real standby (`pg_basebackup -R`) on this machine. The rule under
test (tlog.store.routing): the standby answers only about sizes it has replayed; reads
about newer sizes, and every read while it is down, go to the primary, so a client sees
neither a stale "latest" after a fresher answer nor a 503.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audit_support import releases, write_log
from tests.conftest import _create_database as create_database
from tests.standby_support import (
    Replicated,
    replicated_clusters,
    run_sql,
    wait_replayed,
)
from tests.support import Server, make_release, start_server, submit_all, write_key
from tlog.cli.pgcluster import Cluster
from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.merkle import verify_inclusion
from verifier.protocol.note import Signer, generate_key

_names = itertools.count()


@pytest.fixture(scope="module")
def pair() -> Iterator[Replicated]:
    with replicated_clusters() as replicated:
        yield replicated


@pytest.fixture
def urls(pair: Replicated) -> tuple[str, str]:
    """A new migrated database: its URL on the primary and on the standby (replayed)."""
    name = f"standby{next(_names)}"
    asyncio.run(create_database(pair.primary, name))
    asyncio.run(wait_replayed(pair))
    return pair.primary.url(name), pair.standby.url(name)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def routed(server: Server) -> dict[str, float]:
    """The standby metrics: "standby" (reads it answered), fallback reasons, "lag"."""
    text = get(server.url + "/metrics")[1].decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if m := re.fullmatch(r"tlog_standby_reads_total (\S+)", line):
            out["standby"] = float(m[1])
        elif m := re.fullmatch(r'tlog_standby_fallbacks_total\{reason="(\w+)"\} (\S+)', line):
            out[m[1]] = float(m[2])
        elif m := re.fullmatch(r"tlog_standby_lag_entries (\S+)", line):
            out["lag"] = float(m[1])
    return out


def append(server: Server, publisher: Signer, tag: str, count: int) -> list[dict[str, Any]]:
    entries = [make_release(publisher, f"pkg-{tag}", f"1.{i}") for i in range(count)]
    results = asyncio.run(submit_all([server.url], entries))
    assert [r.status for r in results] == [201] * count, results[0].body
    return [r.body for r in results]


def check_receipt_reads(server: Server, signer: Signer, receipt: dict[str, Any]) -> int:
    """The latest checkpoint, the entry and its inclusion proof, as a client reads them,
    are right; returns the checkpoint's size."""
    status, body = get(server.url + "/checkpoint")
    assert status == 200
    cp = open_checkpoint(body, signer.verifier())
    assert cp.size >= receipt["tree_size"]  # never older than a receipt already given
    status, body = get(f"{server.url}/v1/entries/{receipt['index']}")
    assert status == 200, body
    assert json.loads(body)["leaf_hash"] == receipt["leaf_hash"]
    status, body = get(f"{server.url}/v1/proof/inclusion?leaf_hash={receipt['leaf_hash']}"
                       f"&tree_size={cp.size}")
    assert status == 200, body
    proof = json.loads(body)
    verify_inclusion(receipt["index"], cp.size, bytes.fromhex(receipt["leaf_hash"]),
                     [bytes.fromhex(h) for h in proof["hashes"]], cp.root)
    return cp.size


def served_by_standby(server: Server, index: int) -> bool:
    """Whether reading entry `index` now is answered by the standby."""
    before = routed(server).get("standby", 0)
    assert get(f"{server.url}/v1/entries/{index}")[0] == 200
    return routed(server).get("standby", 0) > before


def wait_for(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def serve(urls: tuple[str, str], signer: Signer, tmp_path: Path) -> Server:
    key = write_key(tmp_path / "log.key", signer)
    return start_server(urls[0], key, tmp_path,
                        extra=("--policy", "open", "--read-database-url", urls[1]))


def test_reads_of_replayed_sizes_come_from_the_standby_and_newer_ones_from_the_primary(
        pair: Replicated, urls: tuple[str, str], log_signer: Signer, tmp_path: Path) -> None:
    """Stale standby: with replay paused, reads about the sizes appended since are answered
    by the primary (and are right); once replay resumes the standby answers them."""
    publisher = generate_key("standby-bot")
    server = serve(urls, log_signer, tmp_path)
    try:
        first = append(server, publisher, "a", 5)
        asyncio.run(wait_replayed(pair))
        wait_for(lambda: routed(server).get("lag") == 0)
        before = routed(server)
        for receipt in first:
            check_receipt_reads(server, log_signer, receipt)
        after = routed(server)
        assert after["standby"] >= before.get("standby", 0) + 15  # 3 reads or more each
        assert after.get("behind", 0) == before.get("behind", 0)

        asyncio.run(run_sql(urls[1], "SELECT pg_wal_replay_pause()"))
        try:
            newer = append(server, publisher, "b", 3)
            # The standby still says the old size; the primary answers the new ones.
            before = routed(server)
            sizes = {check_receipt_reads(server, log_signer, r) for r in newer}
            assert sizes == {max(r["tree_size"] for r in newer)}
            after = routed(server)
            assert after.get("behind", 0) > before.get("behind", 0)
            wait_for(lambda: routed(server).get("lag", 0) > 0)
            # Reads of sizes the standby holds still go to it.
            before = routed(server)
            status, _ = get(f"{server.url}/v1/entries/{first[0]['index']}")
            assert status == 200
            assert routed(server)["standby"] > before["standby"]
        finally:
            asyncio.run(run_sql(urls[1], "SELECT pg_wal_replay_resume()"))
        asyncio.run(wait_replayed(pair))
        wait_for(lambda: routed(server).get("lag") == 0)
        before = routed(server)
        for receipt in newer:
            check_receipt_reads(server, log_signer, receipt)
        after = routed(server)
        assert after.get("behind", 0) == before.get("behind", 0)
        assert after["standby"] > before["standby"]
    finally:
        server.stop()


def test_a_killed_standby_sends_reads_to_the_primary_and_writes_continue(
        pair: Replicated, urls: tuple[str, str], log_signer: Signer, tmp_path: Path) -> None:
    """Standby outage: no read answers 503 or 500 (the primary answers them), appends carry
    on; when the standby is back it answers again."""
    publisher = generate_key("standby-kill-bot")
    server = serve(urls, log_signer, tmp_path)
    try:
        first = append(server, publisher, "c", 3)
        pair.standby.stop(mode="immediate")
        try:
            more = append(server, publisher, "d", 3)
            for receipt in [*first, *more]:
                check_receipt_reads(server, log_signer, receipt)
            status, _ = get(f"{server.url}/v1/entries?package=pkg-d")
            assert status == 200
            counts = routed(server)
            assert counts.get("error", 0) + counts.get("unavailable", 0) > 0
        finally:
            pair.standby.start(fsync=False)
        asyncio.run(wait_replayed(pair))
        wait_for(lambda: served_by_standby(server, more[0]["index"]), timeout=15)
        before = routed(server)
        for receipt in more:
            check_receipt_reads(server, log_signer, receipt)
        assert routed(server)["standby"] > before["standby"]
    finally:
        server.stop()


def test_a_read_database_holding_another_log_is_never_read(
        pg_cluster: Cluster, database_url: str, log_signer: Signer, tmp_path: Path) -> None:
    """Wrong or forked standby: a --read-database-url whose checkpoint is not the primary's
    of the same size (here a longer history signed with the same key) answers nothing; the
    primary answers every read, and the operator finds it in the log and the metrics."""
    other = f"forked{next(_names)}"
    asyncio.run(create_database(pg_cluster, other))
    write_log(pg_cluster.url(other), log_signer, releases(generate_key("fork-bot"), 20))
    server = serve((database_url, pg_cluster.url(other)), log_signer, tmp_path)
    try:
        receipts = append(server, generate_key("honest-bot"), "e", 3)
        for receipt in receipts:
            check_receipt_reads(server, log_signer, receipt)
        counts = routed(server)
        assert counts.get("standby", 0) == 0
        assert counts.get("unavailable", 0) > 0
        assert "is not the primary's" in server.output()
    finally:
        server.stop()
