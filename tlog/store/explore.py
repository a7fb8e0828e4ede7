"""PostgreSQL reads of the web explorer (tlog.http.explorer): recent releases, package names
by prefix, and the latest entries of one package. Mixed into tlog.store.postgres.Storage
(which owns the pool), so the HTTP layer keeps reading through its one LogReader.

Every query is bounded by a count and by bytes, and served by an index: the explorer is
public and a page view must cost about the same whatever the log holds.
"""

from __future__ import annotations

import asyncpg

# The latest releases: a backward scan of the primary key, stopping after `limit` releases
# (most entries are releases, so it reads few others); only those under the byte bound.
# It looks at the last RECENT_WINDOW entries only: a log whose latest million entries are
# lifecycle statements (anyone may log them about their own release) must not make each view
# of the home page read them all.
RECENT_WINDOW = 20_000
SQL_RECENT_RELEASES = (
    "SELECT idx, leaf FROM (SELECT idx, leaf, "
    "sum(octet_length(leaf)) OVER (ORDER BY idx DESC) - octet_length(leaf) AS before "
    "FROM entries WHERE kind = 'release/v1' "
    f"AND idx > (SELECT max(idx) FROM entries) - {RECENT_WINDOW} "
    "ORDER BY idx DESC LIMIT $1) AS page WHERE before < $2 ORDER BY idx DESC")
# Package names starting with $1, in order, without reading every entry of a package: a
# loose index scan on entries_package_idx (package, idx), one index probe per name. The
# prefix is a range [$1, $2) with $2 = $1 || U+10FFFF: under the C and C.UTF-8 collations
# (tlog's own clusters, tlog.cli.pgcluster) that range is exactly the names with the prefix;
# the left() test keeps the answer exact under any other collation (where the range could
# only miss names, never add wrong ones).
SQL_PACKAGE_PREFIX = (
    "WITH RECURSIVE names AS ("
    " (SELECT package FROM entries WHERE package >= $1 AND package < $2"
    "  ORDER BY package LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT e.package FROM entries e WHERE e.package > names.package"
    "  AND e.package < $2 ORDER BY e.package LIMIT 1) FROM names"
    " WHERE names.package IS NOT NULL)"
    " SELECT package FROM names WHERE package IS NOT NULL AND left(package, length($1)) = $1"
    " LIMIT $3")
# A package's latest entries (releases and lifecycle statements), newest first: a backward
# scan of entries_package_idx, at most $2 of them and under the byte bound $3. The package
# is a range of the index's rows, (package, idx) from ($1, 0) to ($1, max), not package = $1:
# with an equality the planner may walk the primary key backwards and filter, estimating
# the package's rows spread evenly, which for a large package whose entries are all old
# reads the whole log after them; the row comparison only the package index can serve.
SQL_PACKAGE_LATEST = (
    "SELECT idx, leaf FROM (SELECT idx, leaf, "
    "sum(octet_length(leaf)) OVER (ORDER BY package DESC, idx DESC) - octet_length(leaf) "
    "AS before FROM entries WHERE (package, idx) >= ($1, 0) "
    "AND (package, idx) <= ($1, 9223372036854775807) "
    "ORDER BY package DESC, idx DESC LIMIT $2) AS page "
    "WHERE before < $3 ORDER BY idx DESC")
PREFIX_END = "\U0010ffff"  # sorts after every character a package name may hold


def _rows(rows: list[asyncpg.Record]) -> list[tuple[int, bytes]]:
    return [(int(r["idx"]), bytes(r["leaf"])) for r in rows]


class ExploreStore:
    """The explorer's reads; needs `pool` (Storage sets it)."""

    pool: asyncpg.Pool

    async def recent_releases(self, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        return _rows(await self.pool.fetch(SQL_RECENT_RELEASES, limit, max_bytes))

    async def packages_with_prefix(self, prefix: str, limit: int) -> list[str]:
        rows = await self.pool.fetch(SQL_PACKAGE_PREFIX, prefix, prefix + PREFIX_END, limit)
        return [str(r["package"]) for r in rows]

    async def package_latest(self, package: str, limit: int,
                             max_bytes: int) -> list[tuple[int, bytes]]:
        return _rows(await self.pool.fetch(SQL_PACKAGE_LATEST, package, limit, max_bytes))
