"""Full-audit progress that survives a stop: DIR/audit-full.json.

The file records that entries [0, next) of a signed checkpoint are audited, and the right
edge of the tree over them, so that an interrupted run resumes and a finished one makes the
next run check only entries added since. It is this verifier's own state, written only
after what it records was checked; a later run continues from it only once the log proves
its new checkpoint extends the recorded one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from verifier.client.audit.tree import Tree
from verifier.client.log import LogClient
from verifier.client.statedir import StateDir
from verifier.client.tracking import prove_extends
from verifier.errors import UsageError
from verifier.protocol.checkpoint import parse_checkpoint
from verifier.protocol.map_replay import MapReplay, record_from_json, record_json
from verifier.protocol.note import parse_note
from verifier.protocol.state import Trusted
from verifier.protocol.tiles import TreeBuilder

__all__ = ["PROGRESS_FILE", "Saved", "progress_json", "resume_point"]

PROGRESS_FILE = "audit-full.json"
# It holds every release of every package (about 100 bytes each): far above the limit of
# the other state files.
MAX_PROGRESS_FILE = 4 << 30
PROGRESS_FORMAT = "tlog-verify audit-full v1"


@dataclass(frozen=True)
class Saved:
    """DIR/audit-full.json: entries [0, next) of `target` are audited; `edge` continues it."""

    target: Trusted
    next: int
    edge: dict[int, bytes]
    replay: MapReplay = field(default_factory=MapReplay)  # the package states of [0, next)


def progress_json(target: Trusted, tree: Tree, replay: MapReplay) -> str:
    """The progress file's content: `tree` is the audited part of `target`'s tree, `replay`
    the package states its entries make (kept whole: the next map root covers them all).

    The states are most of it (every release of every package): each is spliced in as the
    JCS text the replay keeps from hashing it, rather than encoded again on every save.
    """
    top = json.dumps({
        "format": PROGRESS_FORMAT,
        "checkpoint": target.note,
        "size": target.size,
        "root": target.root.hex(),
        "next": tree.size,
        "edge": {str(level): data.hex() for level, data in sorted(tree.edge().items())},
    }, sort_keys=True)
    saved_map = json.dumps({"last_root": replay.last_root,
                            "pending": [record_json(r) for r in replay.pending]})
    states = ",".join(f"{json.dumps(p)}:{replay.state_json(p)}" for p in sorted(replay.states))
    # Both objects are reopened before their closing braces to add members.
    return f'{top[:-1]}, "map": {saved_map[:-1]}, "states": {{{states}}}}}}}'


def _parse_progress(raw: Any) -> Saved:
    """Strictly parse the progress file (ValueError, KeyError, TypeError on any problem).

    The checkpoint's signature is not re-verified: like the edge, the file is this
    verifier's own state, written only after what it records was checked.
    """
    if not isinstance(raw, dict) or raw.get("format") != PROGRESS_FORMAT:
        raise ValueError(f"format is not {PROGRESS_FORMAT!r}")
    note = raw["checkpoint"]
    cp = parse_checkpoint(parse_note(note).text)
    if raw["size"] != cp.size or raw["root"] != cp.root.hex():
        raise ValueError("size and root disagree with the checkpoint")
    nxt = raw["next"]
    if not isinstance(nxt, int) or not 0 <= nxt <= cp.size:
        raise ValueError(f"next index {nxt!r} is outside the checkpoint")
    edge = {int(level): bytes.fromhex(data) for level, data in raw["edge"].items()}
    TreeBuilder(nxt, edge)  # the edge must fit a tree of `next` leaves
    if "map" not in raw:
        # Written before the package state map: the states of [0, next) are unknown, and
        # every map root covers all entries, so the audit starts over.
        return Saved(Trusted(cp, note), 0, {})
    saved = raw["map"]
    last_root = saved["last_root"]
    if last_root is not None and (not isinstance(last_root, int) or last_root >= nxt):
        raise ValueError(f"map root index {last_root!r} is not audited yet")
    states = saved["states"]
    if not isinstance(states, dict):
        raise TypeError("map states must be an object")
    replay = MapReplay.restore(states, [record_from_json(r) for r in saved["pending"]],
                               last_root)
    return Saved(Trusted(cp, note), nxt, edge, replay)


def _load_progress(state: StateDir | None) -> Saved | None:
    if state is None:
        return None
    raw = state.read_json(PROGRESS_FILE, None, MAX_PROGRESS_FILE)
    if raw is None:
        return None
    try:
        return _parse_progress(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{state.path / PROGRESS_FILE} is not full-audit progress ({exc}); "
                         "remove it to audit from the start") from exc


def resume_point(client: LogClient, trusted: Trusted, state: StateDir | None) -> Saved:
    """Where to start: after the saved progress if `trusted` extends its checkpoint.

    A consistency proof from the saved checkpoint to `trusted` shows the audited prefix is
    part of `trusted`'s tree, so its edge continues that tree (misbehaviour otherwise, with
    evidence).
    """
    saved = _load_progress(state)
    if saved is None:
        return Saved(trusted, 0, {})
    if saved.target.size > trusted.size:
        raise UsageError(f"the saved full audit reached size {saved.target.size}, beyond the "
                         f"checkpoint of size {trusted.size} given to audit")
    prove_extends(client, saved.target, trusted, state)
    return saved
