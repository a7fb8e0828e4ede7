"""What the monitor keeps of each entry it scans: computed in the worker processes.

scan.map_bundles' workers validate each chunk of consecutive entries (leaves.check_leaves) and
reduce it to a `Summary`: one `Seen` per entry, small to send between processes, and the hashes
that grow the tree's right edge (merkle.RightEdge) by the whole chunk at once. A release's event
text is encoded in the worker as well, so the main process, which writes an event per entry,
only adds the seq and the index (`release_line`).

Release events (one JSON object per line; members in this order, more may be added later):

    {"type": "release", "seq": 7, "index": 6, "package": "com.acme.app", "version": "1.2",
     "counter": 12 | null, "publisher": "acme-bot", "key": "<vkey text>",
     "artifacts": [{"name": ..., "sha256": ..., "size": ...}], "leaf_hash": "<hex>"}

Version rule (`version_key`): a version is comparable when it reads `[v]N(.N)*` optionally
followed by one pre-release label (dev < a|alpha < b|beta < c|rc, then an optional number), as
in "1.2.0", "v2.0-rc.1", "1.0a2". Numbers compare as integers and trailing zero parts are
ignored (1.0 == 1.0.0). Anything else ("1.0.post1", "2024-05-01+build") is only checked for
exact repeats. Backports to an older line (2.0 then 1.9.1) are alerted: the version did not
grow; the counter is the field that orders releases.

Pure: no I/O, no clock; the functions run in whichever process calls them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from verifier.protocol.entries.kinds import LIFECYCLE_KINDS, REGISTRY_KINDS
from verifier.protocol.entries.release import KIND
from verifier.protocol.leaves import Checked, Fetched, check_leaves
from verifier.protocol.package_state import MAP_ROOT_KIND
from verifier.protocol.tiles import range_hashes

RELEASE = "release"  # the "type" of a release event

Event = dict[str, Any]

# -- versions ------------------------------------------------------------------------------

VersionKey = tuple[tuple[int, ...], int, int]
_VERSION = re.compile(r"[vV]?(\d+(?:\.\d+)*)"
                      r"(?:[-._]?(dev|alpha|a|beta|b|rc|c)(?:[-._]?(\d+))?)?", re.IGNORECASE)
_PRE_RANK = {"dev": 0, "alpha": 1, "a": 1, "beta": 2, "b": 2, "rc": 3, "c": 3}
_FINAL_RANK = 4


# Cached: versions repeat across packages, and a worker's equal keys, being one object, are
# pickled once per chunk.
@functools.lru_cache(maxsize=4096)
def version_key(version: str) -> VersionKey | None:
    """A sort key for a comparable version (the module doc's rule), None if not comparable.

    "1.2" -> ((1, 2), 4, 0); "1.2.0-rc.1" -> ((1, 2), 3, 1); "1.2b" -> ((1, 2), 2, -1).
    """
    m = _VERSION.fullmatch(version)
    if m is None:
        return None
    nums = [int(part) for part in m.group(1).split(".")]
    while len(nums) > 1 and nums[-1] == 0:
        nums.pop()
    label, number = m.group(2), m.group(3)
    if label is None:
        return (tuple(nums), _FINAL_RANK, 0)
    return (tuple(nums), _PRE_RANK[label.lower()], int(number) if number is not None else -1)


# -- what validation leaves of an entry (computed in the worker processes) ------------------


class Seen(NamedTuple):
    """The parts of one validated entry the monitor needs; small to send between processes.

    For an invalid entry, `error` is the reason, `leaf` its bytes (for the evidence), and the
    other members are empty; for a valid entry of another kind than release/v1, only `kind`,
    `key` and `registry` are set besides the index and leaf hash; for the log's map-root/v1
    entries, `counter` is the size it covers and `digest` the map root in hex. A release's
    `body` is its event's JSON text after the "index" member (release_body): the worker
    encodes it, so the main process, which writes an event per entry, only adds the seq and
    the index.
    """

    entry_index: int
    leaf_hash: bytes
    error: str | None
    leaf: bytes | None
    kind: str
    package: str
    version: str
    version_key: VersionKey | None
    counter: int | None
    key: str
    digest: str
    not_after: str | None
    body: str = ""
    registry: dict[str, Any] | None = None  # the entry, for the registry kinds


class Summary(NamedTuple):
    """A worker's result for one chunk of consecutive entries, from entry `first` on.

    `nodes` are the hashes of the perfect subtrees that cover the chunk (merkle.range_nodes), so
    the main process grows its tree by a few hashes per chunk rather than one per entry.
    """

    first: int
    nodes: list[bytes]
    entries: list[Seen]

    def __reduce__(self) -> tuple[Callable[..., Summary], tuple[Any, ...]]:
        # Pickled with the entries as plain tuples: unpickling a NamedTuple runs its Python
        # __new__ once per entry, which took half of the main process's unpickling time.
        return (_summary, (self.first, self.nodes, [tuple(s) for s in self.entries]))


_new_seen = functools.partial(tuple.__new__, Seen)


def _summary(first: int, nodes: list[bytes], rows: list[tuple[Any, ...]]) -> Summary:
    """Summary.__reduce__'s inverse; rebuilds the Seen without calling Python code."""
    return Summary(first, nodes, list(map(_new_seen, rows)))


# -- event lines -----------------------------------------------------------------------------

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DIGEST_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode(event: Event) -> str:
    """The event's JSON Lines text (ASCII, no spaces, members in insertion order)."""
    return _ENCODER.encode(event)


def lines_text(lines: Sequence[str]) -> str:
    """JSON Lines text: each line followed by a newline (join copies each line only once)."""
    return "\n".join(lines) + "\n"


def artifacts_digest(artifacts: Sequence[dict[str, Any]]) -> str:
    """A short hash (128 bits, hex) of the artifact set: JCS of the artifacts sorted by name.

    Two entries list the same set exactly when the digests are equal (up to order).
    """
    ordered = sorted(artifacts, key=lambda a: str(a["name"])) if len(artifacts) > 1 else artifacts
    text = _DIGEST_ENCODER.encode(ordered)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def release_body(entry: dict[str, Any], leaf_hash: bytes) -> str:
    """The release event of a release/v1 entry from "package" on, closing brace included."""
    key = entry["key"]
    text = encode({"package": entry["package"], "version": entry["version"],
                   "counter": entry.get("counter"), "publisher": key.split("+", 1)[0],
                   "key": key, "artifacts": entry["artifacts"], "leaf_hash": leaf_hash.hex()})
    return text[1:]  # an object's text is "{" + its members + "}": release_line adds the rest


def release_line(seq: int, seen: Seen) -> str:
    """The release event of `seen` as a JSON line: the members `encode` writes first (type,
    seq, index; ints print alike in both), then the body the worker encoded."""
    return f'{{"type":"{RELEASE}","seq":{seq},"index":{seen.entry_index},{seen.body}'


def summarize(checked: Checked, leaf: bytes | None = None) -> Seen:
    """The Seen of a leaves.Checked; `leaf` is kept only when the entry is invalid."""
    entry = checked.entry
    if entry is None:
        return Seen(checked.index, checked.leaf_hash, checked.error or "invalid entry", leaf,
                    "", "", "", None, None, "", "", None)
    if entry.get("kind") in REGISTRY_KINDS:
        return Seen(checked.index, checked.leaf_hash, None, None, str(entry.get("kind")),
                    "", "", None, None, str(entry.get("key", "")), "", None, "", entry)
    if entry.get("kind") == MAP_ROOT_KIND:
        # The log's own entry: what it commits to travels as counter (size) and digest (root).
        return Seen(checked.index, checked.leaf_hash, None, None, MAP_ROOT_KIND, "", "", None,
                    entry["size"], "", entry["root"], None)
    if entry.get("kind") in LIFECYCLE_KINDS:
        # Proven and counted like every entry; no events of their own yet.
        return Seen(checked.index, checked.leaf_hash, None, None, str(entry["kind"]),
                    entry["package"], entry["version"], None, None, str(entry["key"]), "",
                    None)
    window = entry.get("install_window")
    return Seen(checked.index, checked.leaf_hash, None, None, KIND, entry["package"],
                entry["version"], version_key(entry["version"]), entry.get("counter"),
                entry["key"], artifacts_digest(entry["artifacts"]),
                window["not_after"] if window else None, release_body(entry, checked.leaf_hash))


def summarize_fetched(item: Fetched) -> Summary:
    """summarize_leaves over one fetched bundle: the work of scan.map_bundles' workers."""
    return summarize_leaves(item.first, item.leaves)


def summarize_leaves(first_index: int, leaves: list[bytes]) -> Summary:
    """leaves.check_leaves, reduced to a Summary: the per-chunk work of the worker processes."""
    checked = check_leaves(first_index, leaves)
    return Summary(first_index, range_hashes(first_index, [c.leaf_hash for c in checked]),
                   [summarize(c, leaves[c.index - first_index] if c.error is not None else None)
                    for c in checked])
