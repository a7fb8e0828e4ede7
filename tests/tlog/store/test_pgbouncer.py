"""Appends and reads through PgBouncer in transaction mode (`--database-pooler pgbouncer`).

Transaction pooling hands each transaction whichever server connection is free. The log
holds no session state and its append lock is transaction-scoped (pg_advisory_xact_lock),
so two `tlog serve` processes appending through one PgBouncer must still build one dense
tree; asyncpg's prepared-statement cache is off with the option (a named statement would
be looked for on another server connection).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.audit_support import sql
from tests.standby_support import find_pgbouncer, pgbouncer
from tests.support import free_port, make_release, start_server, submit_all, write_key
from tlog.cli.pgcluster import Cluster
from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.merkle import root_of, verify_inclusion
from verifier.protocol.note import Signer, generate_key

pytestmark = pytest.mark.skipif(find_pgbouncer() is None, reason=(
    "PgBouncer is not installed (make unit installs it as root: apt-get install pgbouncer)"))


def test_two_servers_append_through_pgbouncer_in_transaction_mode(
        pg_cluster: Cluster, database_url: str, log_signer: Signer, tmp_path: Path) -> None:
    """Pooled connections: one dense tree, no duplicate, every stored checkpoint is the root
    of the entries before it, and reads through the pooler are right."""
    name = urllib.parse.urlsplit(database_url).path.lstrip("/")
    key = write_key(tmp_path / "log.key", log_signer)
    publisher = generate_key("pooled-bot")
    entries = [make_release(publisher, f"pkg{i % 20}", f"3.{i}") for i in range(400)]
    with pgbouncer(pg_cluster, free_port()) as bouncer:
        pooled = bouncer.url(pg_cluster, name)
        servers = [start_server(pooled, key, tmp_path,
                                extra=("--policy", "open", "--database-pooler", "pgbouncer"))
                   for _ in range(2)]
        try:
            results = asyncio.run(submit_all([s.url for s in servers], entries))
            refused = [r for r in results if r.status != 201]
            assert not refused, f"{len(refused)} refused, e.g. {refused[0].body}"
            for r in results[::40]:  # reads through the pooler, from either server
                url = servers[r.body["index"] % 2].url
                with urllib.request.urlopen(f"{url}/v1/proof/inclusion?leaf_hash="
                                            f"{r.body['leaf_hash']}") as resp:
                    proof = json.load(resp)
                verify_inclusion(r.body["index"], proof["tree_size"],
                                 bytes.fromhex(r.body["leaf_hash"]),
                                 [bytes.fromhex(h) for h in proof["hashes"]],
                                 _root_at(servers[0].url, proof["tree_size"], log_signer))
        finally:
            for s in servers:
                s.stop()
    indices = [r.body["index"] for r in results]
    assert len(set(indices)) == len(indices)  # no entry got two indices, no index two entries
    stored = sql(database_url, "SELECT idx, leaf_hash FROM entries ORDER BY idx")
    assert [row["idx"] for row in stored] == list(range(len(stored)))  # dense
    hashes = [bytes(row["leaf_hash"]) for row in stored]
    for row in sql(database_url, "SELECT tree_size, root FROM checkpoints ORDER BY tree_size"):
        assert root_of(hashes[:row["tree_size"]]) == bytes(row["root"])
    final = max(results, key=lambda r: r.body["tree_size"]).body
    assert open_checkpoint(final["checkpoint"], log_signer.verifier()).size == len(hashes)


def _root_at(url: str, size: int, signer: Signer) -> bytes:
    with urllib.request.urlopen(f"{url}/v1/checkpoints/{size}") as resp:
        return open_checkpoint(resp.read(), signer.verifier()).root

