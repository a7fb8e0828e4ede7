"""The registry of the stored log: who may publish what, replayed from its registry entries.

Publishers, their keys and packages change only through registry entries (publisher/v1,
keys/v1, revoke/v1) in the log itself; verifier.protocol.registry.Registry applies them.
`tlog serve` replays them all at startup, and the sequencer replays those other processes
appended since, at the start of each batch. A stored entry that does not replay means the
stored log or the configured admin keys are wrong: ReplayError, and nothing is appended.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import LogEntry, parse_log_leaf
from verifier.protocol.entries.lifecycle import YANK_KIND, Lifecycle
from verifier.protocol.note import Verifier
from verifier.protocol.registry import Refusal, Registry, ReleaseFacts


class ReplayError(Exception):
    """A stored registry entry does not replay."""


class RegistryEntries(Protocol):
    async def registry_entries(self, start: int = 0) -> list[tuple[int, bytes]]:
        """Registry entries (index, leaf) from index `start`, in log order."""
        ...


def replay(registry: Registry, stored: Iterable[tuple[int, bytes]]) -> None:
    """Apply stored registry entries (index, leaf), in log order, to `registry`."""
    for index, leaf in stored:
        try:
            registry.apply(index, parse_log_leaf(leaf))
        except (EntryError, Refusal) as exc:
            raise ReplayError(f"registry entry {index} does not replay with the configured "
                              f"admin keys: {exc}") from exc


async def replay_registry(storage: RegistryEntries, admin_keys: Iterable[Verifier],
                          enforce: bool, size: int) -> Registry:
    """The registry at the end of the stored tree of `size` leaves."""
    registry = Registry(admin_keys, enforce=enforce)
    replay(registry, [(i, leaf) for i, leaf in await storage.registry_entries(0) if i < size])
    return registry


class ReleaseFactsReader(Protocol):
    async def release_facts(self, names: Sequence[tuple[str, str]]
                            ) -> list[tuple[int, str, str, str, bytes]]:
        """(index, kind, package, version, leaf) of the releases and yanks of `names`."""
        ...


async def release_facts(tx: ReleaseFactsReader, entries: Sequence[LogEntry]
                        ) -> dict[tuple[str, str], ReleaseFacts]:
    """The logged releases (and their yanks) that the batch's lifecycle statements name,
    read inside the append transaction: the registry checks each statement against them,
    and adds the batch's own releases and yanks as it goes."""
    names: set[tuple[str, str]] = set()
    for e in entries:
        if isinstance(e, Lifecycle):
            names.add((e.package, e.version))
            if e.rollback_version is not None:
                names.add((e.package, e.rollback_version))
    facts: dict[tuple[str, str], ReleaseFacts] = {}
    if not names:
        return facts
    for index, kind, package, version, leaf in await tx.release_facts(sorted(names)):
        if kind == YANK_KIND:
            if (package, version) in facts:
                facts[(package, version)].yanked = True
            continue
        # The stored leaf was checked when it was appended; its publisher is its key's name.
        facts[(package, version)] = ReleaseFacts(parse_log_leaf(leaf).publisher, index)
    return facts
