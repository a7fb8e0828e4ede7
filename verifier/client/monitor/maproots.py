"""The monitor's check of the log's map-root/v1 entries (map_root_mismatch, map_root_missing).

Every batch of the log ends with a map-root entry committing to each package's state over the
entries before it, and clients take package states (halts, yanks) from it. The monitor
recomputes the states from the entries it scans (verifier.protocol.map_replay) and alerts
when the log commits to another root, for instance one that leaves out a halt so that
devices keep installing a halted release, and when a checkpoint does not end with a map root.

The states are kept in monitor.db with the rest of the monitor's knowledge (db.MonitorDB), so
a restarted monitor resumes from its stored position without replaying the log. A state
directory that scanned entries before the monitor knew of the map has no states for them;
it cannot check map roots (said once per run on stderr) and a new --state directory can.
"""

from __future__ import annotations

import sys
from pathlib import Path

from verifier.client.monitor.summary import Event, Seen
from verifier.client.monitor.watch import MAP_ROOT_MISMATCH, MAP_ROOT_MISSING, Watcher
from verifier.client.statedir import StateDir
from verifier.protocol.entries.kinds import LIFECYCLE_KINDS
from verifier.protocol.entries.release import KIND as RELEASE_KIND
from verifier.protocol.map_replay import MapMismatch, MapReplay, MapRootLeaf
from verifier.protocol.package_state import MAP_ROOT_KIND, Record, map_root_entry
from verifier.protocol.state import Trusted, evidence

__all__ = ["MapWatch"]


class MapWatch:
    """The package state map recomputed from the scanned entries; `replay` is None when the
    state directory scanned entries before it kept the map (nothing can be checked)."""

    def __init__(self, replay: MapReplay | None, next_index: int) -> None:
        self.replay = replay
        if replay is None:
            print(f"tlog-verify monitor: warning: this state directory scanned entries "
                  f"0..{next_index - 1} before the monitor kept the package state map, so "
                  "map-root entries are not checked (a new --state directory checks them)",
                  file=sys.stderr, flush=True)

    def check(self, seen: Seen, watcher: Watcher, state: StateDir,
              trusted: Trusted) -> list[Event]:
        """Feed the next scanned entry; a map_root_mismatch alert (evidence saved) if it is a
        map-root entry that is not what the entries before it make."""
        replay = self.replay
        if replay is None or seen.error is not None:
            return []  # an invalid entry is alerted apart; it makes no state
        if seen.kind == MAP_ROOT_KIND:
            assert seen.counter is not None
            leaf = MapRootLeaf(seen.entry_index, seen.leaf_hash, seen.counter,
                               bytes.fromhex(seen.digest))
            mismatch = replay.map_root(leaf)
            if mismatch is None:
                return []
            where = _save_mismatch(state, mismatch, trusted)
            return [watcher.alert(MAP_ROOT_MISMATCH, f"{mismatch.message()}; evidence saved in "
                                  f"{where}", mismatch.index, **mismatch.evidence(),
                                  evidence=str(where))]
        if seen.kind == RELEASE_KIND or seen.kind in LIFECYCLE_KINDS:
            counter = seen.counter if seen.kind == RELEASE_KIND else None
            replay.pending.append(Record(seen.entry_index, seen.leaf_hash, seen.kind,
                                         seen.package, seen.version, counter))
        return []

    def missing(self, trusted: Trusted, last: Seen | None, watcher: Watcher,
                state: StateDir) -> Event | None:
        """A map_root_missing alert (evidence saved) when the checkpoint, all of whose entries
        are scanned, does not end with a map-root entry. `last`: its last entry if scanned in
        this round."""
        size = trusted.size
        if self.replay is None or self.replay.ends_with_map_root(size):
            return None
        reason = (f"the log's checkpoint of size {size} does not end with a map-root entry "
                  f"(entry {size - 1} is not one), so it commits to no package states")
        files = evidence(reason, checkpoint=trusted.note,
                         entries={size - 1: last.leaf} if last and last.leaf else None)
        where = state.save_evidence(f"map root missing at {size}", files)
        extra = {"leaf_hash": last.leaf_hash.hex()} if last is not None else {}
        return watcher.alert(MAP_ROOT_MISSING, f"{reason}; evidence saved in {where}", size - 1,
                             size=size, **extra, evidence=str(where))


def _save_mismatch(state: StateDir, mismatch: MapMismatch, trusted: Trusted) -> Path:
    """The signed checkpoint, the map-root entry (rebuilt: its encoding is canonical) and
    the committed and recomputed roots."""
    facts = [f"{k} {v}" for k, v in mismatch.evidence().items()]
    files = evidence(mismatch.message(), *facts, checkpoint=trusted.note,
                     entries={mismatch.index: map_root_entry(mismatch.size,
                                                             mismatch.committed_root)})
    return state.save_evidence(f"map root mismatch at {mismatch.index}", files)
