"""`tlog-verify monitor`: follow a log, report every release and alert on suspicious ones.

    tlog-verify monitor --log URL --key LOG.vkey --state DIR [--package GLOB]...
                        [--follow [--interval S]] [--workers N] [--metrics-port P]

Each run (each round with --follow) fetches the log's checkpoint, proves it consistent with
the one stored in DIR, scans every entry from where the previous run stopped (from 0 on the
first run: a backfill) up to the checkpoint's size, and writes events to stdout as JSON Lines.
Entries are validated (schema, canonical form, publisher signature) in worker processes; every
scanned prefix of the log is proven to be a prefix of the signed checkpoint before any event
about it is written, so no event ever describes an entry the log did not commit to.

Events (one JSON object per line; members in this order, more may be added later):

    {"type": "release", "seq": 7, "index": 6, "package": "com.acme.app", "version": "1.2",
     "counter": 12 | null, "publisher": "acme-bot", "key": "<vkey text>",
     "artifacts": [{"name": ..., "sha256": ..., "size": ...}], "leaf_hash": "<hex>"}
    {"type": "alert", "seq": 8, "index": 6, "alert": "<code>", "message": "<text>", ...}

- `seq` grows by one per event and never repeats within a state directory; `index` is the
  entry's position in the log (null for checkpoint_inconsistent). An entry's release event
  comes before its alerts.
- Alert codes and their extra members (entry alerts also carry package, version, leaf_hash):
  - `version_not_growing`: the version repeats one already logged for the package, or is not
    above the highest comparable version logged before (previous_version, previous_index).
  - `counter_not_growing`: the entry has a counter not above the package's highest counter
    so far (counter, previous_counter, previous_index). Entries without a counter are not
    compared.
  - `second_artifact_set`: a second entry for the same (package, version) lists a different
    set of artifacts (previous_index: the first entry).
  - `new_publisher_key`: the entry is signed by a key never seen for the package before
    (key). A package's very first key is recorded without an alert.
  - `install_window_closed`: the entry's install window had already closed when the monitor
    observed the entry (not_after, observed_at). A backfill observes old entries now, so it
    flags every past entry whose window has closed since.
  - `invalid_entry`: the entry fails validation (leaf_hash; evidence: a directory holding
    the entry's bytes and a tlog-proof of its inclusion in the checkpoint). Exit status 1.
  - `checkpoint_inconsistent`: the log's new checkpoint does not extend the stored one, or the
    entries it serves do not hash to its signed tree; the message names the evidence
    directory (signed checkpoints, proof). Exit status 1.
- Release events are written for packages matching a --package glob (fnmatch, case-sensitive;
  every package when none is given); entry alerts for the same packages; invalid_entry and
  checkpoint_inconsistent always. What the monitor learns does not depend on the globs, so
  they may change between runs. Valid entries of other kinds than release/v1 are proven
  and counted but produce no events.

Version rule: a version is comparable when it reads `[v]N(.N)*` optionally followed by one
pre-release label (dev < a|alpha < b|beta < c|rc, then an optional number), as in
"1.2.0", "v2.0-rc.1", "1.0a2". Numbers compare as integers and trailing zero parts are
ignored (1.0 == 1.0.0). Anything else ("1.0.post1", "2024-05-01+build") is only checked for
exact repeats. Backports to an older line (2.0 then 1.9.1) are alerted: the version did not
grow; the counter is the field that orders releases.

Persistence (DIR/monitor.db, SQLite, one transaction per group of GROUP_BUNDLES bundles):
the position, the tree's right edge, the per-package knowledge, the per-version artifact
digests, the next seq, and an outbox holding the group's event lines. A group is committed
with its events in the outbox, then the events are printed and flushed (and fsynced when
stdout is a regular file), then the outbox is cleared in a second commit; a new run prints
any outbox first. So a crash or kill
- before the first commit: the group is scanned again; its events were never printed;
- between the first commit and the printing: the next run prints them (same seq);
- between the printing and the second commit: the next run prints them again with the
  same seq. Delivery is at least once: consumers drop any event whose seq is not above the
  last one they handled. No entry is skipped and no event is lost in any case. (Evidence
  of an invalid entry is written before the first commit: a crash there may leave a second
  copy of it in DIR/evidence/.)

Exit status: 0 done (alerts are reported as events, not as failure); 1 an entry failed
validation or the log misbehaved (reason on stderr, evidence in DIR/evidence/); 2 usage;
3 transport. With --follow, transport errors are reported on stderr and retried next round;
SIGINT or SIGTERM finish the current group and exit 0.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fnmatch
import functools
import hashlib
import json
import os
import re
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, TextIO, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from verifier.client.log import LogClient
from verifier.client.scan import Checked, Fetched, check_leaves, default_workers, map_bundles
from verifier.client.statedir import StateDir, load_vkey
from verifier.client.tracking import advance
from verifier.errors import (
    EXIT_OK,
    LogMisbehaviour,
    TransportError,
    UsageError,
    VerificationFailed,
)
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import REGISTRY_KINDS, validate_registry_entry
from verifier.protocol.entries.release import KIND
from verifier.protocol.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    ProofError,
    fold,
    node_hash,
    range_nodes,
    verify_consistency,
)
from verifier.protocol.note import Verifier, b64encode
from verifier.protocol.receipt import format_tlog_proof
from verifier.protocol.registry import Refusal, Registry
from verifier.protocol.rfc3339 import parse_time
from verifier.protocol.state import Trusted
from verifier.protocol.tiles import hash_up

DB_FILE = "monitor.db"
DB_FORMAT = 1
GROUP_BUNDLES = 64  # bundles (of 256 entries) per commit
IN_FLIGHT = 4  # tasks (of scan.BUNDLES_PER_TASK bundles) queued per worker: they keep
# validating while a group commits
DEFAULT_INTERVAL = 60.0

RELEASE = "release"
ALERT = "alert"
VERSION_NOT_GROWING = "version_not_growing"
COUNTER_NOT_GROWING = "counter_not_growing"
SECOND_ARTIFACT_SET = "second_artifact_set"
NEW_PUBLISHER_KEY = "new_publisher_key"
INVALID_ENTRY = "invalid_entry"
RELEASE_NOT_AUTHORIZED = "release_not_authorized"
REGISTRY_NOT_AUTHORIZED = "registry_entry_not_authorized"
INSTALL_WINDOW_CLOSED = "install_window_closed"
CHECKPOINT_INCONSISTENT = "checkpoint_inconsistent"
ALERT_CODES = (VERSION_NOT_GROWING, COUNTER_NOT_GROWING, SECOND_ARTIFACT_SET, NEW_PUBLISHER_KEY,
               INVALID_ENTRY, INSTALL_WINDOW_CLOSED, CHECKPOINT_INCONSISTENT)

Event = dict[str, Any]
T = TypeVar("T")

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
    """A sort key for a comparable version (see the module doc), None if not comparable.

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
    `key` and `registry` are set besides the index and leaf hash. A release's `body` is its
    event's JSON text after the "index" member (release_body): the worker encodes it, so the
    main process, which writes an event per entry, only adds the seq and the index.
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


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DIGEST_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode(event: Event) -> str:
    """The event's JSON Lines text (ASCII, no spaces, members in insertion order)."""
    return _ENCODER.encode(event)


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
    """The Seen of a scan.Checked; `leaf` is kept only when the entry is invalid."""
    entry = checked.entry
    if entry is None:
        return Seen(checked.index, checked.leaf_hash, checked.error or "invalid entry", leaf,
                    "", "", "", None, None, "", "", None)
    if entry.get("kind") in REGISTRY_KINDS:
        return Seen(checked.index, checked.leaf_hash, None, None, str(entry.get("kind")),
                    "", "", None, None, str(entry.get("key", "")), "", None, "", entry)
    window = entry.get("install_window")
    return Seen(checked.index, checked.leaf_hash, None, None, KIND, entry["package"],
                entry["version"], version_key(entry["version"]), entry.get("counter"),
                entry["key"], artifacts_digest(entry["artifacts"]),
                window["not_after"] if window else None, release_body(entry, checked.leaf_hash))


def summarize_fetched(item: Fetched) -> Summary:
    """summarize_leaves over one fetched bundle: the work of scan.map_bundles' workers."""
    return summarize_leaves(item.first, item.leaves)


def summarize_leaves(first_index: int, leaves: list[bytes]) -> Summary:
    """scan.check_leaves, reduced to a Summary: the per-chunk work of the worker processes."""
    checked = check_leaves(first_index, leaves)
    return Summary(first_index, range_hashes(first_index, [c.leaf_hash for c in checked]),
                   [summarize(c, leaves[c.index - first_index] if c.error is not None else None)
                    for c in checked])


def range_hashes(first: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The hashes of the merkle.range_nodes over leaves first.. with these hashes."""
    out, pos = [], 0
    for level, _ in range_nodes(first, first + len(leaf_hashes)):
        out.append(hash_up(leaf_hashes[pos:pos + (1 << level)]))
        pos += 1 << level
    return out


# -- the pure core ---------------------------------------------------------------------------


@dataclass
class PackageState:
    """What the monitor knows of one package: its keys and its highest version and counter."""

    keys: dict[str, int] = field(default_factory=dict)  # vkey text -> first index using it
    version: str | None = None  # highest comparable version so far, and where
    version_key: VersionKey | None = None
    version_index: int | None = None
    counter: int | None = None  # highest counter so far, and where
    counter_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        vk = self.version_key
        return {"keys": self.keys, "version": self.version,
                "version_key": None if vk is None else [list(vk[0]), vk[1], vk[2]],
                "version_index": self.version_index, "counter": self.counter,
                "counter_index": self.counter_index}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PackageState:
        vk = value["version_key"]
        return cls(dict(value["keys"]), value["version"],
                   None if vk is None else (tuple(vk[0]), vk[1], vk[2]),
                   value["version_index"], value["counter"], value["counter_index"])


Problem = tuple[str, str, dict[str, Any]]  # alert code, message, extra members


class Watcher:
    """The monitor's judgement, without I/O: feed entries in log order, get events back.

    Holds per-package knowledge (`packages`), the artifact digest and first index of every
    (package, version) fed or preloaded (`versions`, keyed "package version"), the next
    entry index and the next event seq. `feed` returns events as dicts; `report`, for the
    driver, returns a release event as its JSON line (release_line) and alerts as dicts. A
    driver that keeps `versions` elsewhere calls preload(stored_version_names()) before
    feeding, take_changes() after, and forget_versions() once stored.
    """

    def __init__(self, patterns: Sequence[str] = (), *, next_index: int = 0,
                 next_seq: int = 1, packages: dict[str, PackageState] | None = None,
                 registry: Registry | None = None) -> None:
        self.patterns = tuple(patterns)
        # The publisher registry replayed from the log (verifier.registry): who may publish
        # what. Without pinned admin keys it reports registrations without authenticating them.
        self.registry = registry if registry is not None else Registry(None, enforce=False)
        self.registry_changed = False
        self.next_index, self.next_seq = next_index, next_seq
        self.packages: dict[str, PackageState] = packages if packages is not None else {}
        self.versions: dict[str, tuple[str, int]] = {}
        self._new_versions: dict[str, tuple[str, int]] = {}
        self._dirty: set[str] = set()
        self._matched: dict[str, bool] = {}

    def matches(self, package: str) -> bool:
        """Whether events about `package` are written (--package globs; all when none)."""
        hit = self._matched.get(package)
        if hit is None:
            hit = not self.patterns or any(fnmatch.fnmatchcase(package, p)
                                           for p in self.patterns)
            self._matched[package] = hit
        return hit

    def observe(self, checked: Checked, now: datetime) -> list[Event]:
        """The events for the next entry of the log, validated by scan.check_leaves."""
        return self.feed(summarize(checked), now)

    def feed(self, seen: Seen, now: datetime) -> list[Event]:
        """The events for the next entry; ValueError unless it is entry `next_index`."""
        return [json.loads(e) if isinstance(e, str) else e for e in self.report(seen, now)]

    def report(self, seen: Seen, now: datetime) -> list[str | Event]:
        """feed(), but the release event comes as its JSON line, ready to print."""
        if seen.entry_index != self.next_index:
            raise ValueError(f"entry {seen.entry_index} fed where entry {self.next_index} is next")
        self.next_index += 1
        if seen.error is not None:
            return [self.alert(INVALID_ENTRY, f"entry {seen.entry_index} fails validation: "
                               f"{seen.error}", seen.entry_index, leaf_hash=seen.leaf_hash.hex())]
        if seen.kind in REGISTRY_KINDS:
            return [*self._registry_events(seen)]
        problems = self._learn(seen, now)
        unauthorized = self.registry.release_problem(seen.key.split("+", 1)[0], seen.package,
                                                     seen.key)
        if unauthorized is not None:
            problems.append((RELEASE_NOT_AUTHORIZED, f"{seen.package} {seen.version}: "
                             f"{unauthorized}, yet the log accepted it", {"key": seen.key}))
        if not self.matches(seen.package):
            return []
        events: list[str | Event] = [release_line(self.next_seq, seen)]
        self.next_seq += 1
        for code, message, extra in problems:
            events.append(self.alert(code, message, seen.entry_index, package=seen.package,
                                     version=seen.version, leaf_hash=seen.leaf_hash.hex(),
                                     **extra))
        return events

    def _registry_events(self, seen: Seen) -> list[Event]:
        """Replay a registry entry; alert on every change concerning watched packages."""
        try:
            entry = validate_registry_entry(seen.registry)
        except EntryError as exc:
            return [self.alert(INVALID_ENTRY, f"entry {seen.entry_index} fails validation: "
                               f"{exc}", seen.entry_index, leaf_hash=seen.leaf_hash.hex())]
        publisher = entry.publisher
        try:
            changes = self.registry.apply(seen.entry_index, entry)
        except Refusal as exc:
            if not self._registry_relevant(publisher, entry.entry.get("packages", ())):
                return []
            return [self.alert(REGISTRY_NOT_AUTHORIZED, f"{entry.kind} for {publisher!r} at "
                               f"entry {seen.entry_index} breaks the registry ({exc}), yet the "
                               "log accepted it", seen.entry_index, publisher=publisher,
                               leaf_hash=seen.leaf_hash.hex())]
        self.registry_changed = True
        owned = self.registry.publishers[publisher].patterns
        if not self._registry_relevant(publisher, [*owned, *entry.entry.get("packages", ())]):
            return []
        return [self.alert(c.kind, f"{publisher}: {c.kind.replace('_', ' ')}: {c.detail}",
                           c.index, publisher=publisher, detail=c.detail,
                           signer=entry.key.text(), leaf_hash=seen.leaf_hash.hex())
                for c in changes]

    def _registry_relevant(self, publisher: str, patterns: Iterable[str]) -> bool:
        """Registry changes concern watched packages when a publisher pattern meets a glob."""
        if not self.patterns:
            return True
        return any(self.matches(p.rstrip("*")) or fnmatch.fnmatchcase(p, g)
                   for p in patterns for g in self.patterns)

    def alert(self, code: str, message: str, index: int | None, **extra: Any) -> Event:
        """A new alert event (taking the next seq)."""
        event: Event = {"type": ALERT, "seq": self.next_seq, "index": index, "alert": code,
                        "message": message, **extra}
        self.next_seq += 1
        return event

    def _learn(self, seen: Seen, now: datetime) -> list[Problem]:
        """Update the knowledge with one valid entry; return what is wrong with it."""
        pkg = self.packages.get(seen.package)
        if pkg is None:
            pkg = self.packages[seen.package] = PackageState()
        self._dirty.add(seen.package)
        name = f"{seen.package} {seen.version}"
        before = self.versions.get(name)  # (digest, index) of its first entry, if any
        if before is None and _unremarkable(pkg, seen):
            # Nearly every entry of a healthy log: what the checks below do then, faster.
            self.versions[name] = self._new_versions[name] = (seen.digest, seen.entry_index)
            pkg.version, pkg.version_key = seen.version, seen.version_key
            pkg.version_index = seen.entry_index
            if seen.counter is not None:
                pkg.counter, pkg.counter_index = seen.counter, seen.entry_index
            return []
        found = [self._check_key(pkg, seen), self._check_version(pkg, seen, name, before),
                 self._check_counter(pkg, seen), self._check_artifacts(seen, name, before),
                 _check_window(seen, now)]
        return [p for p in found if p is not None]

    @staticmethod
    def _check_key(pkg: PackageState, seen: Seen) -> Problem | None:
        if seen.key in pkg.keys:
            return None
        known = list(pkg.keys)
        pkg.keys[seen.key] = seen.entry_index
        if not known:
            return None  # the package's first key
        shown = ", ".join(known[:3]) + (f" and {len(known) - 3} more" if len(known) > 3 else "")
        return (NEW_PUBLISHER_KEY, f"{seen.package} {seen.version} is signed by a key never "
                f"seen for this package: {seen.key}; known keys: {shown}", {"key": seen.key})

    @staticmethod
    def _check_version(pkg: PackageState, seen: Seen, name: str,
                       before: tuple[str, int] | None) -> Problem | None:
        problem: Problem | None = None
        if before is not None:
            problem = (VERSION_NOT_GROWING, f"{name} repeats the version of entry {before[1]}",
                       {"previous_version": seen.version, "previous_index": before[1]})
        vk = seen.version_key
        if vk is not None and pkg.version_key is not None and vk <= pkg.version_key:
            problem = problem or (
                VERSION_NOT_GROWING, f"{name} does not grow past version {pkg.version} "
                f"(entry {pkg.version_index})",
                {"previous_version": pkg.version, "previous_index": pkg.version_index})
        elif vk is not None:
            pkg.version, pkg.version_key, pkg.version_index = seen.version, vk, seen.entry_index
        return problem

    @staticmethod
    def _check_counter(pkg: PackageState, seen: Seen) -> Problem | None:
        counter = seen.counter
        if counter is None:
            return None
        if pkg.counter is not None and counter <= pkg.counter:
            return (COUNTER_NOT_GROWING, f"{seen.package} {seen.version} has counter {counter}, "
                    f"not above {pkg.counter} (entry {pkg.counter_index})",
                    {"counter": counter, "previous_counter": pkg.counter,
                     "previous_index": pkg.counter_index})
        pkg.counter, pkg.counter_index = counter, seen.entry_index
        return None

    def _check_artifacts(self, seen: Seen, name: str,
                         before: tuple[str, int] | None) -> Problem | None:
        if before is None:
            self.versions[name] = self._new_versions[name] = (seen.digest, seen.entry_index)
            return None
        if before[0] == seen.digest:
            return None
        return (SECOND_ARTIFACT_SET, f"{name} was logged at entry {before[1]} with a different "
                "set of artifacts", {"previous_index": before[1]})

    # -- for drivers that keep the knowledge in storage ----------------------------------

    def stored_version_names(self, seen: Iterable[Seen]) -> list[str]:
        """The `versions` keys that feeding `seen` will look up and that may be stored.

        Not those of a package never fed, nor a comparable version above the package's
        highest comparable version (or when it has none): had it been fed, that highest
        would not be below it. In a log whose versions grow, that leaves out nearly all,
        so a backfill looks up almost nothing.
        """
        names = []
        for s in seen:
            if s.kind in REGISTRY_KINDS or s.error is not None:
                continue
            pkg = self.packages.get(s.package)
            vk = s.version_key
            if pkg is None or (vk is not None and (pkg.version_key is None
                                                   or vk > pkg.version_key)):
                continue
            names.append(f"{s.package} {s.version}")
        return names

    def preload(self, versions: dict[str, tuple[str, int]]) -> None:
        """Add stored (digest, first index) of versions before feeding the entries they concern."""
        self.versions.update(versions)

    def take_changes(self) -> tuple[dict[str, PackageState], dict[str, tuple[str, int]]]:
        """The packages changed and the versions first seen since the previous call."""
        packages = {name: self.packages[name] for name in self._dirty}
        versions, self._new_versions, self._dirty = self._new_versions, {}, set()
        return packages, versions

    def forget_versions(self) -> None:
        """Drop `versions` (the driver has stored them): memory stays per package."""
        self.versions = {}


def _unremarkable(pkg: PackageState, seen: Seen) -> bool:
    """Whether a version not seen before for the package passes every check of Watcher._learn
    and moves the package's highest version (and counter, if it has one) up to its own: a
    known key, a comparable version above the highest, a counter above the highest, no
    install window."""
    vk, counter = seen.version_key, seen.counter
    return (seen.key in pkg.keys and seen.not_after is None and vk is not None
            and pkg.version_key is not None and vk > pkg.version_key
            and (counter is None or pkg.counter is None or counter > pkg.counter))


def _check_window(seen: Seen, now: datetime) -> Problem | None:
    if seen.not_after is None or parse_time(seen.not_after) >= now:
        return None
    observed = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (INSTALL_WINDOW_CLOSED, f"{seen.package} {seen.version}: its install window closed "
            f"at {seen.not_after}, before the monitor observed it at {observed}",
            {"not_after": seen.not_after, "observed_at": observed})


class Edge:
    """The right edge of the tree over the leaves appended so far (RFC 9162 §2.1.1).

    One perfect-subtree hash per set bit of `size`, largest first, so the root is their
    right fold; appending a perfect subtree (`extend`) merges the trailing equal-sized ones.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count() or any(
                len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"{len(hashes)} edge hashes do not fit a tree of size {size}")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> Edge:
        return Edge(self.size, self.hashes)

    def extend(self, first: int, count: int, nodes: Sequence[bytes]) -> None:
        """Append leaves first..first+count-1, given as their range_hashes."""
        levels = [level for level, _ in range_nodes(first, first + count)]
        if first != self.size or len(nodes) != len(levels):
            raise ValueError(f"{len(nodes)} hashes of leaves {first}.. do not extend a tree "
                             f"of size {self.size}")
        for level, h in zip(levels, nodes, strict=True):
            self._push(level, h)

    def _push(self, level: int, h: bytes) -> None:
        """Append a perfect subtree of 2**level leaves; `size` is a multiple of 2**level."""
        size = self.size >> level
        while size & 1:  # merge with the equal-sized subtrees at the right edge
            h = node_hash(self.hashes.pop(), h)
            size >>= 1
        self.hashes.append(h)
        self.size += 1 << level

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT


# -- storage -------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS position (
    onerow     INTEGER PRIMARY KEY CHECK (onerow = 1),
    format     INTEGER NOT NULL,   -- DB_FORMAT of the code that created it
    origin     TEXT,               -- the log's origin, set on the first round
    next_index INTEGER NOT NULL,   -- first entry not yet scanned
    next_seq   INTEGER NOT NULL,   -- seq of the next event
    edge       TEXT NOT NULL       -- JSON list of the hex hashes of Edge(next_index)
);
CREATE TABLE IF NOT EXISTS packages (
    name      TEXT PRIMARY KEY,
    knowledge TEXT NOT NULL        -- PackageState.to_json()
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    name   TEXT PRIMARY KEY,       -- "package version"
    digest TEXT NOT NULL,          -- artifacts_digest of its first entry
    idx    INTEGER NOT NULL        -- that entry's index
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry (
    onerow INTEGER PRIMARY KEY CHECK (onerow = 1),
    state  TEXT NOT NULL           -- Registry.to_json(): the publisher registry replayed so far
);
CREATE TABLE IF NOT EXISTS outbox (
    first_seq INTEGER PRIMARY KEY, -- events committed but maybe not printed yet:
    lines     TEXT NOT NULL        -- their JSON lines, seq first_seq, first_seq + 1, ...
);
"""


@dataclass
class Loaded:
    origin: str | None
    next_index: int
    next_seq: int
    edge: Edge
    packages: dict[str, PackageState]
    outbox: list[str]
    registry: dict[str, Any]


class MonitorDB:
    """The monitor's state in one SQLite file; every save is one durable transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.conn = sqlite3.connect(path, isolation_level=None)
            # For a new file only (no-op otherwise): a group's commit writes some 10 MB of
            # pages to the WAL, one write per page; bigger pages cut its time by a third.
            self.conn.execute("PRAGMA page_size=16384")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            # Each commit dirties pages all over the versions index: keep them cached, and
            # let the WAL grow to ~40 MB before copying it back into the database.
            self.conn.execute("PRAGMA cache_size=-32768")
            self.conn.execute("PRAGMA wal_autocheckpoint=10000")
            # The state is public log data: deleting the outbox need not overwrite its pages
            # with zeros (a build default of some SQLite packages), which doubled its cost.
            self.conn.execute("PRAGMA secure_delete=OFF")
            self.conn.executescript(_SCHEMA)
            self.conn.execute("INSERT OR IGNORE INTO position VALUES (1, ?, NULL, 0, 1, '[]')",
                              (DB_FORMAT,))
        except sqlite3.Error as exc:
            raise UsageError(f"couldn't open the monitor state {path}: {exc}") from exc

    def __enter__(self) -> MonitorDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def load(self) -> Loaded:
        try:
            fmt, origin, next_index, next_seq, edge = self.conn.execute(
                "SELECT format, origin, next_index, next_seq, edge FROM position").fetchone()
            if fmt != DB_FORMAT:
                raise UsageError(f"{self.path} has format {fmt}; this monitor reads {DB_FORMAT}")
            packages = {name: PackageState.from_json(json.loads(text)) for name, text in
                        self.conn.execute("SELECT name, knowledge FROM packages")}
            outbox = [line for (lines,) in
                      self.conn.execute("SELECT lines FROM outbox ORDER BY first_seq")
                      for line in lines.splitlines()]
            row = self.conn.execute("SELECT state FROM registry").fetchone()
            return Loaded(origin, next_index, next_seq,
                          Edge(next_index, [bytes.fromhex(h) for h in json.loads(edge)]),
                          packages, outbox, json.loads(row[0]) if row else {})
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{self.path} is not a usable monitor state: {exc}") from exc

    def lookup_versions(self, names: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Stored (digest, first index) of those of `names` seen before."""
        if not names:
            return {}
        rows = self.conn.execute(
            "SELECT name, digest, idx FROM versions WHERE name IN "
            "(SELECT value FROM json_each(?))", (json.dumps(names),))
        return {name: (digest, idx) for name, digest, idx in rows}

    def save(self, watcher: Watcher, edge: Edge, origin: str, lines: Sequence[str]) -> None:
        """Commit the watcher's changes, the position, the next seq and `lines` to the outbox."""
        packages, versions = watcher.take_changes()
        with self._transaction() as c:
            # Sorted: neighbouring inserts then share index pages (about a fifth faster).
            c.executemany("INSERT INTO versions VALUES (?, ?, ?)",
                          sorted((name, d, i) for name, (d, i) in versions.items()))
            c.executemany("INSERT OR REPLACE INTO packages VALUES (?, ?)",
                          [(name, json.dumps(p.to_json())) for name, p in packages.items()])
            if watcher.registry_changed:
                c.execute("INSERT OR REPLACE INTO registry VALUES (1, ?)",
                          (json.dumps(watcher.registry.to_json()),))
                watcher.registry_changed = False
            c.execute("UPDATE position SET origin = ?, next_index = ?, next_seq = ?, edge = ?",
                      (origin, watcher.next_index, watcher.next_seq,
                       json.dumps([h.hex() for h in edge.hashes])))
            self._add_outbox(c, watcher.next_seq, lines)

    def save_alerts(self, next_seq: int, lines: Sequence[str]) -> None:
        """Commit events that change no knowledge (checkpoint alerts) and the next seq."""
        with self._transaction() as c:
            c.execute("UPDATE position SET next_seq = ?", (next_seq,))
            self._add_outbox(c, next_seq, lines)

    @staticmethod
    def _add_outbox(c: sqlite3.Connection, next_seq: int, lines: Sequence[str]) -> None:
        if lines:
            c.execute("INSERT INTO outbox VALUES (?, ?)", (next_seq - len(lines), _text(lines)))

    def clear_outbox(self) -> None:
        with self._transaction() as c:
            c.execute("DELETE FROM outbox")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


# -- the driver ------------------------------------------------------------------------------


class Metrics:
    """Prometheus counters of one monitor process, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("tlog_monitor_events", "Events written, by type and alert code",
                              ["type", "alert"], registry=self.registry)
        self.entries = Counter("tlog_monitor_entries_scanned", "Log entries scanned",
                               registry=self.registry)
        self.tree_size = Gauge("tlog_monitor_tree_size",
                               "Size of the latest checkpoint proven consistent",
                               registry=self.registry)
        self.last_success = Gauge("tlog_monitor_last_success_timestamp_seconds",
                                  "When the last round finished without error (UNIX time)",
                                  registry=self.registry)
        self._server: Any = None

    def serve(self, port: int) -> None:
        """Serve /metrics on 127.0.0.1:port until close()."""
        try:
            self._server, _ = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        except OSError as exc:
            raise UsageError(f"couldn't serve metrics on 127.0.0.1:{port}: {exc}") from exc

    def count(self, events: Iterable[str | Event]) -> None:
        """Count events by type and alert code (a str is a release event's line)."""
        tally = collections.Counter((RELEASE, "") if isinstance(e, str) else
                                    (e["type"], e.get("alert", "")) for e in events)
        for labels, n in tally.items():
            self.events.labels(*labels).inc(n)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Stop:
    """SIGINT/SIGTERM handling: the signal only sets `requested`; the driver stops between
    groups. Worker processes reset it (worker_signals).
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


def worker_signals() -> None:
    """In a worker process: ignore SIGINT (a terminal's Ctrl-C reaches the whole process
    group; the main process decides when to stop) and let SIGTERM terminate as usual."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Monitor:
    """One monitor over one state directory: rounds of advance, scan, commit, print."""

    def __init__(self, client: LogClient, key: Verifier, state: StateDir, db: MonitorDB,
                 patterns: Sequence[str], workers: int, out: TextIO, metrics: Metrics,
                 stop: Stop, admin_keys: Sequence[Verifier] | None = None) -> None:
        self.client, self.key, self.state, self.db = client, key, state, db
        self.workers, self.out, self.metrics, self.stop = workers, out, metrics, stop
        loaded = db.load()
        self.origin = loaded.origin
        self.edge = loaded.edge
        registry = Registry(admin_keys or None, enforce=False)
        registry.load_json(loaded.registry)
        self.watcher = Watcher(patterns, next_index=loaded.next_index,
                               next_seq=loaded.next_seq, packages=loaded.packages,
                               registry=registry)
        self._unprinted = loaded.outbox

    def run(self, follow: bool, interval: float) -> int:
        """Print what a previous run left unprinted, then scan once or until stopped."""
        if self._unprinted:
            self._print(self._unprinted)
            self.db.clear_outbox()
        while not self.stop.requested:
            try:
                self.round()
            except TransportError as exc:
                if not follow:
                    raise
                print(f"tlog-verify monitor: {exc}; retrying in {interval:g} s",
                      file=sys.stderr, flush=True)
            if not follow:
                break
            self.stop.sleep(interval)
        return EXIT_OK

    def round(self) -> None:
        """Prove the log's checkpoint consistent, then scan and report up to its size."""
        try:
            trusted = advance(self.client, self.key, self.state)
        except LogMisbehaviour as exc:
            self._report(exc)
            raise
        self._check_origin(trusted)
        self.metrics.tree_size.set(trusted.size)
        self._scan(trusted)
        self.metrics.last_success.set(time.time())

    def _check_origin(self, trusted: Trusted) -> None:
        origin = trusted.checkpoint.origin
        if self.origin is None:
            self.origin = origin
        elif origin != self.origin:
            raise UsageError(f"{self.db.path} follows {self.origin}, not {origin}")

    def _scan(self, trusted: Trusted) -> None:
        start = self.watcher.next_index
        if trusted.size < start:
            raise self._report(self._evidence(
                f"rollback: the log's checkpoint has size {trusted.size}, but this monitor "
                f"already scanned {start} entries of it", trusted, self.edge, None))
        if trusted.size == start:
            self._prove_prefix(self.edge, trusted)
            return
        results = map_bundles(self.client, trusted.size, start, summarize_fetched, self.workers,
                              in_flight=IN_FLIGHT * self.workers, initializer=worker_signals)
        with _closing(results):  # stop fetching and validating on any exit
            for group in _groups(results, GROUP_BUNDLES):
                self._process(group, trusted)
                if self.stop.requested:
                    return

    def _process(self, group: list[Summary], trusted: Trusted) -> None:
        """Prove, judge, commit, print and clear one group of consecutive entries."""
        edge = self.edge.copy()
        for part in group:
            edge.extend(part.first, len(part.entries), part.nodes)
        self._prove_prefix(edge, trusted)  # no event about an entry the log did not sign
        seen = [s for part in group for s in part.entries]
        invalid = [s for s in seen if s.error is not None]
        proofs = {s.entry_index: self.client.inclusion_proof(s.entry_index, trusted.size)
                  for s in invalid}
        # Network is done: from here on, a failure is fatal, never retried in this process.
        now = datetime.now(UTC)
        watcher = self.watcher
        watcher.preload(self.db.lookup_versions(watcher.stored_version_names(seen)))
        events: list[str | Event] = []
        for s in seen:
            events += watcher.report(s, now)
        where = {s.entry_index: self._invalid_evidence(s, proofs[s.entry_index], trusted)
                 for s in invalid}
        lines = [e if isinstance(e, str) else _encode_alert(e, where) for e in events]
        self.db.save(watcher, edge, trusted.checkpoint.origin, lines)  # durability point 1
        self.edge = edge
        watcher.forget_versions()
        self.metrics.entries.inc(len(seen))
        self.metrics.count(events)
        self._print(lines)  # durability point 2: printed (a crash before this reprints them)
        self.db.clear_outbox()  # durability point 3: a crash before this prints them again
        if invalid:
            first = invalid[0]
            raise VerificationFailed(f"entry {first.entry_index} of the log fails validation: "
                                     f"{first.error}; evidence saved in {where[first.entry_index]}")

    def _prove_prefix(self, edge: Edge, trusted: Trusted) -> None:
        """The leaves scanned so far must be the first edge.size leaves of the signed tree."""
        size = trusted.size
        proof = self.client.consistency_proof(edge.size, size) if 0 < edge.size < size else []
        try:
            verify_consistency(edge.size, size, edge.root(), trusted.root, proof)
        except ProofError as exc:
            raise self._report(self._evidence(
                f"the log's entries 0..{edge.size - 1} do not hash to a prefix of its "
                f"checkpoint of size {size}: {exc}", trusted, edge, proof)) from exc

    def _evidence(self, reason: str, trusted: Trusted, edge: Edge,
                  proof: Sequence[bytes] | None) -> LogMisbehaviour:
        files: dict[str, str | bytes] = {
            "reason.txt": f"{reason}\n",
            "checkpoint": trusted.note,
            "scanned-root": f"size {edge.size}\nroot {b64encode(edge.root())}\n"}
        if proof is not None:
            files["consistency-proof"] = (f"consistency {edge.size} {trusted.size}\n" +
                                          "".join(b64encode(h) + "\n" for h in proof))
        where = self.state.save_evidence(reason, files)
        return LogMisbehaviour(f"{reason}; evidence saved in {where}", files)

    def _invalid_evidence(self, seen: Seen, proof: list[bytes], trusted: Trusted) -> Path:
        reason = f"entry {seen.entry_index} fails validation: {seen.error}"
        return self.state.save_evidence(f"invalid entry {seen.entry_index}", {
            "reason.txt": f"{reason}\n",
            "entry": seen.leaf or b"",
            "entry.tlog-proof": format_tlog_proof(seen.entry_index, proof, trusted.note)})

    def _report(self, exc: LogMisbehaviour) -> LogMisbehaviour:
        """Commit and print a checkpoint_inconsistent alert for `exc`; return `exc`."""
        event = self.watcher.alert(CHECKPOINT_INCONSISTENT, str(exc), None)
        lines = [encode(event)]
        self.db.save_alerts(self.watcher.next_seq, lines)  # durability point 1
        self.metrics.count([event])
        self._print(lines)  # point 2
        self.db.clear_outbox()  # point 3
        return exc

    def _print(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        self.out.write(_text(lines))
        self.out.flush()
        _sync_if_file(self.out)


def _text(lines: Sequence[str]) -> str:
    """JSON Lines text: each line followed by a newline (join copies each line only once)."""
    return "\n".join(lines) + "\n"


def _sync_if_file(out: TextIO) -> None:
    """fsync stdout when it is a regular file, so printed events survive a power loss."""
    try:
        fd = out.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    except (OSError, ValueError, AttributeError):
        return  # a pipe, a terminal or an in-memory stream: nothing to sync


@contextlib.contextmanager
def _closing(it: Iterator[T]) -> Iterator[Iterator[T]]:
    """Close a generator on leaving the block, so its pools and threads stop now."""
    try:
        yield it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _encode_alert(event: Event, evidence: dict[int, Path]) -> str:
    """An alert's line; an invalid entry's names the directory holding its evidence."""
    if event["alert"] == INVALID_ENTRY:
        event["evidence"] = str(evidence[event["index"]])
    return encode(event)


def _groups(results: Iterable[Summary], size: int) -> Iterator[list[Summary]]:
    """`size` consecutive non-empty chunk results at a time."""
    group: list[Summary] = []
    for chunk in results:
        if not chunk.entries:
            continue
        group.append(chunk)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


# -- the command -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    patterns: tuple[str, ...]
    follow: bool
    interval: float
    workers: int
    metrics_port: int | None


def _options(args: argparse.Namespace) -> Options:
    if args.interval is not None and not args.follow:
        raise UsageError("--interval needs --follow")
    interval = DEFAULT_INTERVAL if args.interval is None else args.interval
    if not interval > 0:
        raise UsageError("--interval must be a positive number of seconds")
    workers = default_workers() if args.workers is None else args.workers
    if workers < 0:
        raise UsageError("--workers must be 0 (validate in this process) or more")
    port = args.metrics_port
    if port is not None and not 0 < port < 65536:
        raise UsageError("--metrics-port must be in 1..65535")
    return Options(tuple(args.package), args.follow, interval, workers, port)


def cmd_monitor(args: argparse.Namespace) -> int:
    opts = _options(args)
    key = load_vkey(args.key)
    client = LogClient(args.log, timeout=args.timeout, retries=args.retries)
    metrics = Metrics()
    with StateDir(Path(args.state)) as state, MonitorDB(state.path / DB_FILE) as db, \
            Stop() as stop:
        if opts.metrics_port is not None:
            metrics.serve(opts.metrics_port)
        try:
            admins = [load_vkey(p, "admin key") for p in args.admin_key]
            monitor = Monitor(client, key, state, db, opts.patterns, opts.workers, sys.stdout,
                              metrics, stop, admins)
            return monitor.run(opts.follow, opts.interval)
        finally:
            metrics.close()


DESCRIPTION = """\
Scan every entry of the log since the previous run (all of it on the first run), prove each
new checkpoint consistent with the stored one, and write JSON Lines events to stdout:
"release" for each release of a watched package and "alert" for a version or counter that
does not grow, a second artifact set for a version, a new publisher key, an invalid entry, an
install window already closed when seen, or an inconsistent checkpoint. Every event has a "seq"
that grows within the state directory; after a crash an event may be printed again with the
same seq, never lost. Exit: 0 done, 1 invalid entry or log misbehaviour (evidence in
STATE/evidence/), 2 usage, 3 transport."""


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `tlog-verify monitor` to the subcommands."""
    p = sub.add_parser("monitor", help="follow the log: report releases, alert on anomalies",
                       description=DESCRIPTION)
    common(p)
    p.add_argument("--state", required=True, metavar="DIR",
                   help="directory keeping the position, knowledge and evidence (created)")
    p.add_argument("--package", action="append", default=[], metavar="GLOB",
                   help="report only packages matching this fnmatch glob (repeatable; "
                        "default: all)")
    p.add_argument("--follow", action="store_true",
                   help="keep scanning new entries until SIGINT/SIGTERM")
    p.add_argument("--interval", type=float, metavar="S",
                   help=f"seconds between rounds with --follow (default {DEFAULT_INTERVAL:g})")
    p.add_argument("--workers", type=int, metavar="N",
                   help="validation processes (default: one per core; 0: in this process)")
    p.add_argument("--metrics-port", type=int, metavar="P",
                   help="serve Prometheus metrics on 127.0.0.1:P")
    p.add_argument("--admin-key", action="append", default=[], metavar="VKEY_FILE",
                   help="the operator's registry admin key (repeatable): registrations and "
                        "admin actions signed by other keys are alerted; without it they are "
                        "reported unauthenticated")
    p.set_defaults(func=cmd_monitor)


