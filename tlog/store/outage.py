"""When PostgreSQL cannot serve: which errors say so, and whether writes can commit now.

A database that is down, restarting, out of connections or read-only is not the client's
fault and not a bug of ours: the HTTP layer answers 503 database_unavailable with
Retry-After (tlog.http.app) instead of a 500 with a traceback, and /readyz says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

RETRY_AFTER = 5  # seconds a client waits before asking again while the database is away

# PostgreSQL's answers that mean "not now" (SQLSTATE classes 08 connection, 53 resources,
# 57 operator intervention: shutdown, starting up, crash recovery, cancel), a write refused
# by a read-only database or a standby (25006), and a database that is gone (3D000).
_POSTGRES_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InvalidCatalogNameError,
)
# asyncpg's own words for a connection lost under it (an InterfaceError is otherwise a bug).
_LOST = ("connection is closed", "connection was closed", "pool is closing", "pool is closed")
_CHAIN = 4  # how far to follow __cause__ / __context__ for a wrapped error

SQL_HEALTH = ("SELECT current_setting('transaction_read_only') = 'on' AS read_only, "
              "pg_is_in_recovery() AS in_recovery")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the database cannot serve now.

    OSError covers connection refused or reset, a socket file gone while the server is
    stopped, and timeouts (TimeoutError is an OSError): a pool acquire or a query that
    outlived its deadline."""
    seen: BaseException | None = exc
    for _ in range(_CHAIN):
        if seen is None:
            return False
        if isinstance(seen, (OSError, *_POSTGRES_UNAVAILABLE)):
            return True
        if isinstance(seen, asyncpg.InterfaceError) and any(w in str(seen) for w in _LOST):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass(frozen=True)
class DatabaseHealth:
    """Whether a write could commit now: not on a read-only session or a standby."""

    read_only: bool
    in_recovery: bool

    @property
    def writable(self) -> bool:
        return not (self.read_only or self.in_recovery)

    def json(self) -> dict[str, Any]:
        return {"reachable": True, "read_only": self.read_only,
                "in_recovery": self.in_recovery}


async def database_health(pool: asyncpg.Pool, timeout: float = 2) -> DatabaseHealth:
    """Ask a pooled connection (as a write would get one): raises when unreachable."""
    async with pool.acquire(timeout=timeout) as conn:
        row = await conn.fetchrow(SQL_HEALTH, timeout=timeout)
    return DatabaseHealth(bool(row["read_only"]), bool(row["in_recovery"]))
