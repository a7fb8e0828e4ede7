"""What the HTTP layer needs from storage: the LogReader seam, and the token ledger.

The handlers read the log through a LogReader and nothing else; writes to the log go through
the sequencer (tlog.log.sequencer), never through a reader. The PostgreSQL store
(tlog.store.postgres.Storage) is one; a read replica or a static mirror of the tiles only
needs another. Every answer is of published data: a reader never shows an entry, a tile or
a checkpoint that a later read could take back.

The admin API's other dependency, the record of issued and revoked submission tokens (the
audit trail the append transaction checks tokens against), is the TokenLedger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from tlog.store.outage import DatabaseHealth
from verifier.protocol.tiles import TILE_WIDTH, TileKey

# What revoking a token did: revoking one that is already revoked changes nothing and is no
# error (a retried `tlog token revoke` must not fail); only a token never issued is.
RevokeOutcome = Literal["revoked", "already_revoked", "unknown"]


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint the log published: its size, root hash and signed note text."""

    size: int
    root: bytes
    note: str


class LogReader(Protocol):
    """The reads of the HTTP API. Indices and sizes are never negative."""

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The largest published checkpoint; None before the first one."""
        ...

    async def published_at_least(self, size: int) -> bool:
        """Whether a tree of at least `size` leaves is published (cheap when it was seen)."""
        ...

    async def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        """The checkpoint the log published for a tree of exactly `size` leaves, if any."""
        ...

    async def tile(self, level: int, n: int) -> bytes | None:
        """Hash tile (level, n) as stored, full or the widest partial; None if there is none."""
        ...

    async def tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        """The hash tiles of `keys` that are stored, in one read (for proofs)."""
        ...

    async def entry(self, index: int) -> bytes | None:
        """The leaf bytes of entry `index`; None if it is not stored."""
        ...

    async def entry_bundle(self, n: int, width: int = TILE_WIDTH) -> bytes | None:
        """Entry bundle n of `width` entries (C2SP format); None if one of them is not
        stored. The caller checks they are published first."""
        ...

    async def by_package(self, package: str, version: str | None, after: int,
                         limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """(index, leaf) of releases of `package` (and `version`) after index `after`, in
        log order: at most `limit`, and none after the first whose leaf, with those before
        it, reaches `max_bytes` (a page's bound; the caller cuts the answer there)."""
        ...

    async def registry_page(self, after: int, limit: int,
                            max_bytes: int) -> list[tuple[int, bytes]]:
        """(index, leaf) of registry entries after index `after`, in log order, bounded by
        `limit` and `max_bytes` as by_package is."""
        ...

    async def index_of(self, leaf_hash: bytes) -> int | None:
        """The index of the entry with this leaf hash; None if there is none."""
        ...

    async def latest_published(self, rule: str) -> StoredCheckpoint | None:
        """The largest checkpoint whose cosignatures met the quorum of the policy whose
        quorum rule is `rule` (tlog.config.quorum_rule), with the freshest note published
        for it: the log's note followed by those cosignature lines; None before the first
        under that policy."""
        ...

    async def published_covering(self, rule: str, index: int) -> StoredCheckpoint | None:
        """The smallest checkpoint cosigned by the quorum of `rule` whose tree holds entry
        `index` (its size > index), with the FIRST note published for it (the earliest
        witnessed time, from which cooldowns count); None when there is none yet."""
        ...

    async def cosignature_lines(self, size: int) -> list[str]:
        """Every stored valid cosignature line of the checkpoint of `size`, sorted by key
        name: appended to that checkpoint's note they make a note with all of them."""
        ...

    async def package_state(self, package: str, size: int
                            ) -> tuple[dict[str, Any] | None, bytes, bytes] | None:
        """The state of `package` the published tree of `size` commits to (None if the
        package has none), its map proof and the map root; None when that tree does not end
        with a map-root/v1 entry (tlog.store.statemap)."""
        ...

    async def recent_releases(self, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """(index, leaf) of the latest release/v1 entries, newest first: at most `limit`, and
        none after the first whose leaf, with those before it, reaches `max_bytes`. Only
        the latest entries are looked at (tlog.store.explore.RECENT_WINDOW): a log ending
        in many other entries may answer fewer."""
        ...

    async def packages_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """At most `limit` package names (of releases and lifecycle statements) starting
        with `prefix`, in order."""
        ...

    async def package_latest(self, package: str, limit: int,
                             max_bytes: int) -> list[tuple[int, bytes]]:
        """(index, leaf) of the latest entries of `package` (releases and lifecycle
        statements), newest first, bounded by `limit` and `max_bytes` as recent_releases."""
        ...

    async def ping(self) -> None:
        """Return if storage answers now; raise otherwise (for /readyz)."""
        ...

    async def health(self) -> DatabaseHealth:
        """Whether a write could commit now (read-only, recovering); raises when storage
        cannot be reached (for /readyz)."""
        ...

    def identity(self) -> str | None:
        """Which database answers (tlog.store.identity); None before the first connection."""
        ...

    def on_swap(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` when storage turns out to be another database than the
        one read so far: whatever was kept from it (a checkpoint, tiles) must go."""
        ...

    async def check_database(self) -> None:
        """Check now that storage is still the database read so far (on_swap's callbacks
        run if not): cache hits need no query, so nothing else would tell. Raises when
        storage cannot be reached."""
        ...


@dataclass(frozen=True)
class TokenRecord:
    """A submission token as the log recorded it when issuing it, and whether it was revoked."""

    jti: str
    publisher: str
    scopes: list[str]
    revoked: bool
    expires: datetime


class TokenLedger(Protocol):
    """The record of submission tokens: every issued one, and who revoked which."""

    async def insert_token(self, jti: str, publisher: str, scopes: Sequence[str],
                           expires_at: datetime, issued_by: str) -> None:
        """Record an issued token before it is handed out."""
        ...

    async def revoke_token(self, jti: str, revoked_by: str) -> RevokeOutcome:
        """Revoke a token; an already revoked one keeps its first revocation."""
        ...

    async def token(self, jti: str) -> TokenRecord | None:
        """The record of a token as issued (and whether it was revoked); None if unknown."""
        ...
