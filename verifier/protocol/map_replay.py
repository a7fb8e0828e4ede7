"""Recomputing the package state map from a log's entries, as an auditor or monitor reads them.

The log ends every batch with a map-root/v1 leaf committing to the state of each package over
all entries before it (verifier.protocol.package_state). A reader that sees every entry in
log order computes the same states, so `MapReplay` keeps them and, at each map-root leaf,
applies the records since the previous one, recomputes the root and compares: a log that
commits another root (one that omits a halt, say), or a map-root leaf whose `size` is not its
own index, is caught here. `ends_with_map_root` tells whether a checkpoint's last leaf is a
map root, which every checkpoint's must be: a client takes its package states from it.

Records are collected between map roots rather than applied at once because a map root covers
whole batches; applying them at the map root keeps the one `SparseMap.update` per batch the log
makes. Everything here is pure; the caller persists `states`, `pending` and `last_root` if it
must resume (`MapReplay.restore`), the states best as `state_json` gives them.

Cost: a map root rehashes the state of every package its batch touched, and a state lists all
the package's releases, so a package with thousands of releases is hashed again at every
batch. `StateHasher` keeps each package's releases encoded (JCS) from one map root to the
next, so only the new ones are encoded and the rest is SHA-256 over bytes already there.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from verifier.protocol.leaves import Checked
from verifier.protocol.package_state import (
    LIFECYCLE_KINDS,
    MAP_ROOT_KIND,
    RELEASE_KIND,
    PackageState,
    Record,
    StateBuilder,
    StateError,
    StateHasher,
)
from verifier.protocol.statemap import SparseMap


@dataclass(frozen=True)
class MapRootLeaf:
    """A map-root/v1 leaf as logged: its index and leaf hash, and what it commits to."""

    index: int
    leaf_hash: bytes
    size: int
    root: bytes


MapItem = Record | MapRootLeaf


@dataclass(frozen=True)
class MapMismatch:
    """A map-root leaf that is not what the entries before it make."""

    index: int
    leaf_hash: bytes
    size: int  # the size it claims to cover (must be `index`)
    committed_root: bytes
    recomputed_root: bytes
    problems: tuple[str, ...]  # records that made no state (StateError), if any

    def message(self) -> str:
        if self.size != self.index:
            what = f"claims to cover {self.size} entries, not the {self.index} before it"
        else:
            what = (f"commits to map root {self.committed_root.hex()}, but the entries before "
                    f"it make {self.recomputed_root.hex()}")
        extra = f" ({'; '.join(self.problems)})" if self.problems else ""
        return f"the map-root entry {self.index} {what}{extra}"

    def evidence(self) -> dict[str, Any]:
        """The members an alert or an evidence file carries."""
        return {"leaf_hash": self.leaf_hash.hex(), "committed_size": self.size,
                "committed_root": self.committed_root.hex(),
                "recomputed_root": self.recomputed_root.hex()}


def map_item(checked: Checked) -> MapItem | None:
    """What the map needs of one validated entry: None for entries without package state
    (registry kinds) and for invalid ones (they are reported apart)."""
    entry = checked.entry
    if entry is None:
        return None
    kind = entry.get("kind")
    if kind == MAP_ROOT_KIND:
        return MapRootLeaf(checked.index, checked.leaf_hash, entry["size"],
                           bytes.fromhex(entry["root"]))
    if kind == RELEASE_KIND or kind in LIFECYCLE_KINDS:
        counter = entry.get("counter") if kind == RELEASE_KIND else None
        return Record(checked.index, checked.leaf_hash, str(kind), entry["package"],
                      entry["version"], counter)
    return None


class MapReplay:
    """Package states and their map, rebuilt entry by entry; see the module doc."""

    def __init__(self) -> None:
        self.builder = StateBuilder()
        self.hasher = StateHasher()
        self.map = SparseMap({})
        self.pending: list[Record] = []
        self.last_root: int | None = None  # index of the last map-root leaf seen
        self.changed: set[str] = set()  # packages whose state changed since take_changed()
        # The records applied since take_changed(): with the states it returned, they make
        # the current states, so a caller may store these instead of every changed state.
        self.journal: list[Record] = []
        self._journaled = 0  # how many of them take_journal() returned

    @classmethod
    def restore(cls, states: Mapping[str, PackageState], pending: Iterable[Record],
                last_root: int | None) -> MapReplay:
        """A replay resumed from saved states (their map is rebuilt from their hashes)."""
        replay = cls()
        replay.builder.states = {p: dict(s) for p, s in states.items()}
        replay.builder.last_index = max((_last_index(s) for s in states.values()), default=-1)
        replay.pending = list(pending)
        replay.last_root = last_root
        if states:
            replay.map.apply(replay.map.update(replay.updates(states)))
        return replay

    @property
    def states(self) -> dict[str, PackageState]:
        return self.builder.states

    def updates(self, packages: Iterable[str]) -> list[tuple[bytes, bytes]]:
        """(map key, value hash) of each named package, by the kept hasher."""
        return self.builder.updates(packages, self.hasher)

    def state_json(self, package: str) -> str:
        """The package's state as JSON text (its JCS encoding, mostly kept from hashing)."""
        return self.hasher.text(self.builder.states[package])

    def feed(self, items: Iterable[MapItem]) -> list[MapMismatch]:
        """Take consecutive items in log order; the map roots that do not match."""
        found = []
        for item in items:
            if isinstance(item, Record):
                self.pending.append(item)
            else:
                mismatch = self.map_root(item)
                if mismatch is not None:
                    found.append(mismatch)
        return found

    def map_root(self, leaf: MapRootLeaf) -> MapMismatch | None:
        """Apply the records since the last map root; compare the leaf with the result."""
        problems = []
        touched = set()
        for record in self.pending:
            try:
                touched |= self.builder.apply([record])
                self.journal.append(record)
            except StateError as exc:
                # A record the log could not have mapped either: not applied, and named in
                # the mismatch this (almost surely) causes.
                problems.append(str(exc))
        self.pending = []
        self.map.apply(self.map.update(self.updates(touched)))
        self.changed |= touched
        self.last_root = leaf.index
        root = self.map.root()
        if leaf.size == leaf.index and hmac.compare_digest(root, leaf.root) and not problems:
            return None
        return MapMismatch(leaf.index, leaf.leaf_hash, leaf.size, leaf.root, root,
                           tuple(problems))

    def ends_with_map_root(self, size: int) -> bool:
        """Whether leaf size - 1 (read already) is a map-root leaf; an empty tree needs none."""
        return size == 0 or self.last_root == size - 1

    def take_changed(self) -> dict[str, PackageState]:
        """The states changed since the last call, for a caller that stores them."""
        changed = {p: self.builder.states[p] for p in sorted(self.changed)}
        self.changed = set()
        self.journal, self._journaled = [], 0
        return changed

    def take_journal(self) -> list[Record]:
        """The records applied since the last take_journal() or take_changed(): a caller
        that stored the states take_changed() returned, and every record this returned
        since, restores the current states (restore, with these records before `pending`)."""
        new = self.journal[self._journaled:]
        self._journaled = len(self.journal)
        return new


def _last_index(state: PackageState) -> int:
    indices = [r["index"] for r in state["releases"]]
    indices += [s["index"] for s in state["lifecycle"].values()]
    return max(indices, default=-1)


def record_json(record: Record) -> list[Any]:
    """A pending record as JSON (for a saved replay)."""
    return [record.index, record.leaf_hash.hex(), record.kind, record.package, record.version,
            record.counter]


def record_from_json(value: Any) -> Record:
    """record_json's inverse (ValueError, TypeError on a malformed value)."""
    index, leaf_hash, kind, package, version, counter = value
    if not isinstance(index, int) or not all(isinstance(v, str) for v in (kind, package, version)):
        raise ValueError("malformed pending record")
    if counter is not None and not isinstance(counter, int):
        raise ValueError("malformed pending record counter")
    return Record(index, bytes.fromhex(leaf_hash), kind, package, version, counter)

