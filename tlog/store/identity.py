"""Which database the caches came from, so that they never outlive it.

Full tiles and bundles never change within one log, but the database under a running
server can be replaced: a restore from a backup (an older tree, which may then grow
differently), a failover to another cluster, a database dropped and created again under the
same name. Serving a cached tile of the old one next to fresh data of the new one would show
two different trees. So every cache is tied to:
- the database's identity: the cluster's system identifier (pg_control_system(), which
  changes with every initdb; empty where the role may not read it) and the database's OID
  (which changes when it is dropped and created again), and
- an anchor: the largest checkpoint (size, root) the caches were filled under. A physical
  restore keeps both identifiers, but not that checkpoint, or not with that root.
Storage checks both on every new pooled connection (a reconnect after an outage is one) and
drops its caches on a mismatch; tile files on disk keep the same facts beside them
(tlog.store.tilecache).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tlog.store")

# Two statements: PostgreSQL checks the right to call a function of a plan before running
# any of it, so a CASE around pg_control_system() would not spare a role without the right.
SQL_IDENTITY = (
    "SELECT has_function_privilege('pg_control_system()', 'EXECUTE') AS may_read_system, "
    "(SELECT oid::text FROM pg_database WHERE datname = current_database()) AS database")
SQL_SYSTEM = "SELECT system_identifier::text FROM pg_control_system()"
SQL_ROOT_AT = "SELECT root FROM checkpoints WHERE tree_size = $1"


async def read_identity(conn: Any) -> str:
    """The database's identity as "<system identifier>/<database OID>"."""
    row = await conn.fetchrow(SQL_IDENTITY)
    system = await conn.fetchval(SQL_SYSTEM) if row["may_read_system"] else ""
    return f"{system}/{row['database']}"


async def holds_anchor(conn: Any, size: int, root: bytes) -> bool:
    """Whether the database published the checkpoint of `size` with this `root`."""
    found = await conn.fetchval(SQL_ROOT_AT, size)
    return found is not None and bytes(found) == root


class CacheGuard:
    """Says when the database turns out to be another one than the caches came from."""

    def __init__(self) -> None:
        self.identity: str | None = None
        self.anchor: tuple[int, bytes] | None = None  # the largest checkpoint read
        self._listeners: list[Callable[[str], None]] = []

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` whenever the caches must go."""
        self._listeners.append(callback)

    def seen(self, size: int, root: bytes) -> None:
        """A checkpoint read from the database: the caches hold nothing beyond it."""
        if self.anchor is None or size > self.anchor[0]:
            self.anchor = (size, root)

    async def check(self, conn: Any) -> None:
        """The pool's init hook: runs on each new connection, before any query of ours."""
        identity = await read_identity(conn)
        reason = None
        if self.identity is not None and identity != self.identity:
            reason = f"the database is another one ({self.identity} before, {identity} now)"
        elif self.anchor is not None and not await holds_anchor(conn, *self.anchor):
            reason = (f"the database no longer holds the checkpoint of size {self.anchor[0]} "
                      "the caches were filled under (restored from a backup?)")
        self.identity = identity
        if reason is not None:
            self.changed(reason)

    def changed(self, reason: str) -> None:
        log.warning("dropping every cache of the log's data: %s", reason)
        self.anchor = None
        for callback in self._listeners:
            callback(reason)
