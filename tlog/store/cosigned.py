"""PostgreSQL storage of witness cosignatures and of the checkpoints published per quorum.

Tables (schema/migrations/0003_witness.sql, 0004): `cosignatures` (valid cosignature lines of
integrated checkpoints), `witness_state` (the size each witness last cosigned) and
`published` (checkpoints whose cosignatures met the quorum, with those lines; per policy,
the first note of a size and its freshest; migration 0004). Several `tlog serve`
processes may write them at once: every write is an upsert (ON CONFLICT) that only keeps
the newer cosignature or the fresher note, so two processes cosigning or publishing the
same size, in any order, leave one row holding the freshest.

The methods are mixed into tlog.store.postgres.Storage (which owns the pool), so the
HTTP layer keeps reading through its one LogReader.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tlog.store.reader import StoredCheckpoint

# A newer cosignature of the same size by the same key replaces the stored one: an idle
# log asks its witnesses again (tlog.log.witness, --witness-refresh) so that the witnessed
# time of its latest checkpoint keeps up with the clock. An older one (a slower process)
# never takes it back.
SQL_ADD_COSIGNATURE = (
    "INSERT INTO cosignatures (tree_size, key_name, key_id, cosigned_at, line) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size, key_name, key_id) DO UPDATE SET "
    "cosigned_at = EXCLUDED.cosigned_at, line = EXCLUDED.line, received_at = now() "
    "WHERE EXCLUDED.cosigned_at > cosignatures.cosigned_at")
# Sorted by key name (then key ID) bytewise, whatever the database's collation: the order
# the cosignature lines follow the log's note, as documented.
SQL_COSIGNATURES = (
    "SELECT key_name, key_id, cosigned_at, line FROM cosignatures WHERE tree_size = $1 "
    'ORDER BY key_name COLLATE "C", key_id')
SQL_WITNESS_SIZES = "SELECT key_name, key_id, tree_size FROM witness_state"
# A cosignature only moves a witness forward: a slower process storing an older one must
# not take it back. What a witness says in a 409 is its truth, so that one replaces.
SQL_WITNESS_GREW = (
    "INSERT INTO witness_state (key_name, key_id, tree_size) VALUES ($1, $2, $3) "
    "ON CONFLICT (key_name, key_id) DO UPDATE SET "
    "tree_size = greatest(witness_state.tree_size, EXCLUDED.tree_size), updated_at = now()")
SQL_WITNESS_SAYS = (
    "INSERT INTO witness_state (key_name, key_id, tree_size) VALUES ($1, $2, $3) "
    "ON CONFLICT (key_name, key_id) DO UPDATE SET "
    "tree_size = EXCLUDED.tree_size, updated_at = now()")
# Rows are per policy: $1 is the quorum rule (tlog.config.quorum_rule), its SHA-256 the ID.
_POLICY_ID = "sha256(convert_to($1, 'UTF8'))"
# The first note of a size stays (covering serves it: cooldowns count from the earliest
# witnessed time); latest_note is replaced by a fresher one only, so two processes
# publishing in any order leave the freshest.
SQL_PUBLISH = (
    "INSERT INTO published (policy_id, tree_size, first_note, latest_note, fresh_time) "
    f"VALUES ({_POLICY_ID}, $2, $3, $3, $4) ON CONFLICT (policy_id, tree_size) DO UPDATE SET "
    "latest_note = EXCLUDED.latest_note, fresh_time = EXCLUDED.fresh_time, "
    "refreshed_at = now() WHERE EXCLUDED.fresh_time > published.fresh_time")
SQL_LATEST_PUBLISHED = (
    "SELECT p.tree_size, c.root, p.latest_note AS note, p.fresh_time FROM published p "
    f"JOIN checkpoints c ON c.tree_size = p.tree_size WHERE p.policy_id = {_POLICY_ID} "
    "ORDER BY p.tree_size DESC LIMIT 1")
SQL_PUBLISHED_COVERING = (
    "SELECT p.tree_size, c.root, p.first_note AS note FROM published p "
    f"JOIN checkpoints c ON c.tree_size = p.tree_size WHERE p.policy_id = {_POLICY_ID} "
    "AND p.tree_size > $2 ORDER BY p.tree_size LIMIT 1")


@dataclass(frozen=True)
class StoredCosignature:
    key_name: str
    key_id: bytes
    timestamp: int
    line: str  # "— <name> <base64>\n"


def _published(row: asyncpg.Record | None) -> StoredCheckpoint | None:
    if row is None:
        return None
    return StoredCheckpoint(int(row["tree_size"]), bytes(row["root"]), str(row["note"]))


class CosignedStore:
    """Cosignatures and published checkpoints; needs `pool` (Storage sets it)."""

    pool: asyncpg.Pool

    async def cosignatures(self, size: int) -> list[StoredCosignature]:
        """Every stored cosignature of the checkpoint of `size`, sorted by key name."""
        rows = await self.pool.fetch(SQL_COSIGNATURES, size)
        return [StoredCosignature(r["key_name"], bytes(r["key_id"]), int(r["cosigned_at"]),
                                  r["line"]) for r in rows]

    async def cosignature_lines(self, size: int) -> list[str]:
        return [c.line for c in await self.cosignatures(size)]

    async def add_cosignature(self, size: int, cosig: StoredCosignature) -> None:
        """Store a verified cosignature (one row per size and key; a later one, by the
        witness's timestamp, replaces it) and move the witness's known size up to `size`,
        in one transaction: recovery sees both or neither, and neither only costs asking
        the witness again."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL_ADD_COSIGNATURE, size, cosig.key_name, cosig.key_id,
                               cosig.timestamp, cosig.line)
            await conn.execute(SQL_WITNESS_GREW, cosig.key_name, cosig.key_id, size)

    async def witness_sizes(self) -> dict[tuple[str, bytes], int]:
        """(key name, key ID) -> the size that witness last cosigned, as last recorded."""
        rows = await self.pool.fetch(SQL_WITNESS_SIZES)
        return {(r["key_name"], bytes(r["key_id"])): int(r["tree_size"]) for r in rows}

    async def set_witness_size(self, key_name: str, key_id: bytes, size: int) -> None:
        """Record the size a witness said it has (a 409), whatever was recorded before."""
        await self.pool.execute(SQL_WITNESS_SAYS, key_name, key_id, size)

    async def publish(self, rule: str, size: int, note: str, fresh_time: int) -> None:
        """Publish the cosigned note of `size` under the policy of quorum rule `rule`: the
        first note of a size stays its first; the latest is replaced when `fresh_time`
        (the quorum's Policy.fresh_time) is later than the stored one's."""
        await self.pool.execute(SQL_PUBLISH, rule, size, note, fresh_time)

    async def latest_published(self, rule: str) -> StoredCheckpoint | None:
        return _published(await self.pool.fetchrow(SQL_LATEST_PUBLISHED, rule))

    async def latest_published_fresh(self, rule: str) -> tuple[int, int] | None:
        """(size, fresh time) of the latest note published under `rule`."""
        row = await self.pool.fetchrow(SQL_LATEST_PUBLISHED, rule)
        return None if row is None else (int(row["tree_size"]), int(row["fresh_time"]))

    async def published_covering(self, rule: str, index: int) -> StoredCheckpoint | None:
        return _published(await self.pool.fetchrow(SQL_PUBLISHED_COVERING, rule, index))
