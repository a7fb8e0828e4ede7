"""What the sequencer keeps between batches so the package-state map costs no more than the
batch's own entries: map nodes by hash, and the states of recently changed packages.

Both are only ever filled with what is durable: nodes read from the database, or written by a
batch whose COMMIT succeeded (`MapCache.commit`), never a batch's work before COMMIT. So a
rolled-back batch leaves no trace here, and a process that dies loses only a cache.

- Nodes are addressed by their hash, so a cached node is right for any root, whoever wrote it
  (another process appending to the same database included). A node missing here is read from
  the database. Reading one from here never needs it to be stored: a batch walks from the
  root of the log's last leaf, whose nodes that database holds, and writes every node it
  makes.
- States are valid for one log size: they are the packages' states after every entry below
  `size`. When the log has grown since (another process appended), they are dropped, and the
  sequencer rebuilds what it needs from the entries as before.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from verifier.protocol.package_state import PackageState
from verifier.protocol.statemap import EMPTY, path_by_hash

MAX_NODES = 20_000  # about 5 MB: the upper levels, which every batch walks, stay in
MAX_RELEASES = 10_000  # releases in the states kept (about 6 MB): bounds memory whatever
# the packages' sizes, and still keeps a long-lived package, the one worth keeping


@dataclass
class MapBatch:
    """A batch's map work, kept for the cache until its COMMIT is known."""

    start: int  # the log size before the batch
    size: int  # and after it
    nodes: dict[bytes, bytes]  # hash -> node, read or written
    states: dict[str, PackageState]  # the batch's packages after it
    root: bytes = EMPTY  # the map root after it


@dataclass
class MapCache:
    max_nodes: int = MAX_NODES
    max_releases: int = MAX_RELEASES
    nodes: dict[bytes, bytes] = field(default_factory=dict)  # insertion order = age
    states: dict[str, PackageState] = field(default_factory=dict)
    releases: int = 0  # in `states`
    size: int = -1  # the log size `states` and `root` are valid for
    root: bytes | None = None  # the map root in the log's leaf size - 1

    def forget_states(self) -> None:
        """The log changed elsewhere: states and root are rebuilt from the database."""
        self.states.clear()
        self.releases = 0
        self.root = None
        self.size = -1

    def root_at(self, size: int) -> bytes | None:
        """The map root of leaf size - 1, when this process wrote that leaf."""
        return self.root if size == self.size else None

    def states_at(self, size: int, packages: Iterable[str]) -> dict[str, PackageState]:
        """The cached states of `packages` after every entry below `size` (those it has)."""
        if size != self.size:
            self.states.clear()
            self.releases = 0
            return {}
        return {p: self.states[p] for p in packages if p in self.states}

    def walk(self, root: bytes, keys: Iterable[bytes]) -> tuple[dict[int, bytes], list[bytes]]:
        """The cached nodes on the paths of `keys` from `root`, by node id (as
        tlog.store.statemap.map_paths gives them), and the keys whose path left the cache."""
        found: dict[int, bytes] = {}
        missing: list[bytes] = []
        for key in keys:
            if not path_by_hash(self.nodes, root, key, found):
                missing.append(key)
        return found, missing

    def commit(self, batch: MapBatch) -> None:
        """The batch is durable: keep its nodes and states."""
        self._add_nodes(batch.nodes)
        if batch.start != self.size:  # another process appended in between
            self.states.clear()
            self.releases = 0
        for package, state in batch.states.items():
            self._drop(package)
            self.states[package] = state  # the newest last
            self.releases += len(state["releases"])
        self.size, self.root = batch.size, batch.root
        while self.releases > self.max_releases and self.states:
            self._drop(next(iter(self.states)))

    def _drop(self, package: str) -> None:
        gone = self.states.pop(package, None)
        if gone is not None:
            self.releases -= len(gone["releases"])

    def _add_nodes(self, nodes: Mapping[bytes, bytes]) -> None:
        self.nodes.update(nodes)
        excess = len(self.nodes) - self.max_nodes
        if excess > 0:
            for old in list(itertools.islice(self.nodes, excess)):
                del self.nodes[old]
