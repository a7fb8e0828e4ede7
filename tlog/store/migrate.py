"""Numbered SQL migrations from schema/migrations and the schema-version check.

Each file `NNNN_name.sql` moves the database from version NNNN-1 to NNNN. They run
in one transaction each, under an advisory lock, so two `tlog migrate` at once are safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

MIGRATION_LOCK = 0x746C6F67_0001  # advisory lock id for migrations ("tlog", 1)
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def set_password_sql(role: str, password: str) -> str:
    """The statement that gives `role` a password, for a server in single-user mode (no
    parameters there); the embedded cluster's random passwords need no quoting."""
    if not (role + password).replace("-", "").replace("_", "").isalnum():
        raise ValueError("role and password must be letters, digits, '-' or '_'")
    return f"ALTER ROLE {role} PASSWORD '{password}';\n"


class SchemaError(RuntimeError):
    """The database schema is missing, too old or too new for this tlog."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """All migrations shipped with this tlog, in order, numbered 1..n without gaps."""
    found = []
    for item in resources.files("tlog.store").joinpath("migrations").iterdir():
        m = _NAME.match(item.name)
        if m:
            found.append(Migration(int(m.group(1)), item.name, item.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations are not numbered 1..n: {[m.name for m in found]}")
    return found


def latest_version() -> int:
    return len(migrations())


async def current_version(conn: asyncpg.Connection) -> int:
    """The database's schema version; 0 for an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    version = await conn.fetchval("SELECT version FROM schema_version")
    return int(version or 0)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration newer than the database; return the names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        have = await current_version(conn)
        if have > latest_version():
            raise SchemaError(f"database schema version {have} is newer than this tlog "
                              f"({latest_version()}); upgrade tlog")
        for m in migrations()[have:]:
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_version (version) VALUES ($1) "
                "ON CONFLICT (onerow) DO UPDATE SET version = EXCLUDED.version", m.version)
            applied.append(m.name)
    return applied


async def migrate_database(url: str) -> list[str]:
    """Connect to the database at `url`, apply what it lacks (`migrate`); the names applied."""
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def create_database(admin_url: str, name: str) -> None:
    """Create the database `name` through `admin_url` (a maintenance database such as
    `postgres`) unless it exists. For local clusters tlog runs itself (tlog dev, benches)."""
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            quoted = name.replace('"', '""')
            await conn.execute(f'CREATE DATABASE "{quoted}"')
    finally:
        await conn.close()


async def check_version(conn: asyncpg.Connection) -> None:
    """Refuse to serve a database whose schema is not exactly this tlog's."""
    have, want = await current_version(conn), latest_version()
    if have < want:
        raise SchemaError(f"database schema version {have}, this tlog needs {want}: "
                          "run `tlog migrate --database-url URL` first")
    if have > want:
        raise SchemaError(f"database schema version {have} is newer than this tlog ({want}); "
                          "upgrade tlog")
