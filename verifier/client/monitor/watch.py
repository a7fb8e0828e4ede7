"""The monitor's judgement: feed validated entries in log order, get events back.

`Watcher` holds what the monitor knows (per-package keys, highest version and counter, the
artifact set of each version, the replayed publisher registry) and judges each entry against
it. It does no I/O: the driver (run.Monitor) passes the clock in (`now`), keeps the knowledge
in storage (db.MonitorDB) and prints the events.

Events (one JSON object per line; members in this order, more may be added later): release
events (summary.release_line) and

    {"type": "alert", "seq": 8, "index": 6, "alert": "<code>", "message": "<text>", ...}

- `seq` grows by one per event and never repeats within a state directory; `index` is the
  entry's position in the log (null for checkpoint_inconsistent). An entry's release event
  comes before its alerts.
- Alert codes and their extra members (entry alerts also carry package, version, leaf_hash):
  - `version_not_growing`: the version repeats one already logged for the package, or is not
    above the highest comparable version logged before (previous_version, previous_index).
    Which versions compare: summary.version_key, except for packages a --version-scheme
    pattern matches (versions.SchemeMap, first matching pattern): there the scheme orders
    versions (semver, pep440 or debian), and a release WITHOUT a counter alerts when its
    version is not above the highest version logged before under the scheme, or is not valid
    under it (member `scheme`); a release with a counter is ordered by its counter alone
    (counter_not_growing), so a backport (2.0, then 1.9.1 with a higher counter) is not
    alerted. Exact repeats alert either way. Changing a package's scheme between runs starts
    its highest version afresh.
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
  - `release_not_authorized`: the publisher registry does not authorize the release
    (registry.Registry.release_problem, the rule `tlog-verify release --admin-key` applies):
    a registered publisher's revoked, foreign or unknown key, or an unregistered publisher
    releasing a package some publisher owns (with --admin-key: any package) (key).
  - publisher_registered, ownership_changed, key_added, key_removed, halt_key_added,
    halt_key_removed, key_revoked,
    publisher_revoked (registry.Change; publisher, detail, signer) for registry entries whose
    package patterns overlap a watched glob (registry.patterns_overlap: a grant of "com.*"
    concerns a watch on "com.acme.*"), and `registry_entry_not_authorized` for one the
    registry refuses.
  - `lookalike_publisher`: a newly registered publisher's name reads like a registered one
    (lookalike.skeleton: "acrne-bot" for "acme-bot") or mixes scripts (publisher,
    lookalikes).
  - `invalid_entry`: the entry fails validation (leaf_hash; evidence: a directory holding
    the entry's bytes and a tlog-proof of its inclusion in the checkpoint). Exit status 1.
  - `checkpoint_inconsistent`: the log's new checkpoint does not extend the stored one, or the
    entries it serves do not hash to its signed tree; the message names the evidence
    directory (signed checkpoints, proof). Exit status 1.
  - `map_root_mismatch`: the log's map-root/v1 entry commits to a map root other than the one
    the monitor recomputes from the entries before it (package_state, map_replay), or claims
    to cover another number of entries than its index (leaf_hash, committed_size,
    committed_root, recomputed_root; evidence). Exit status 1.
  - `map_root_missing`: the log's checkpoint does not end with a map-root entry, so it
    commits to no package states (size, leaf_hash of its last entry; evidence). Exit status 1.
  - `witness_view_disagrees`: a policy witness's cosigned checkpoint of the log (its read
    endpoint) and the log's checkpoint are not consistent: a fork (witness; evidence: the
    directory holding both signed notes and the failed proof). Exit status 1.
- Release events are written for packages matching a --package glob (fnmatch, case-sensitive;
  every package when none is given); entry alerts for the same packages; invalid_entry,
  checkpoint_inconsistent, map_root_mismatch and map_root_missing always. What the monitor
  learns does not depend on the globs, so they may change between runs. Valid entries of
  other kinds than release/v1 are proven and counted but produce no events.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from verifier.client.monitor.summary import (
    Event,
    Seen,
    VersionKey,
    release_line,
    summarize,
)
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import (
    LIFECYCLE_KINDS,
    REGISTRY_KINDS,
    validate_registry_entry,
)
from verifier.protocol.entries.registry_kinds import PACKAGE_PATTERN
from verifier.protocol.leaves import Checked
from verifier.protocol.lookalike import confusable_with, mixes_scripts
from verifier.protocol.package_state import MAP_ROOT_KIND
from verifier.protocol.registry import Change, Refusal, Registry, patterns_overlap
from verifier.protocol.rfc3339 import parse_time
from verifier.protocol.versions import SchemeMap, VersionError, sort_key

ALERT = "alert"  # the "type" of an alert event
VERSION_NOT_GROWING = "version_not_growing"
COUNTER_NOT_GROWING = "counter_not_growing"
SECOND_ARTIFACT_SET = "second_artifact_set"
NEW_PUBLISHER_KEY = "new_publisher_key"
INVALID_ENTRY = "invalid_entry"
RELEASE_NOT_AUTHORIZED = "release_not_authorized"
REGISTRY_NOT_AUTHORIZED = "registry_entry_not_authorized"
INSTALL_WINDOW_CLOSED = "install_window_closed"
CHECKPOINT_INCONSISTENT = "checkpoint_inconsistent"
CHECKPOINT_STALE = "checkpoint_stale"
LOOKALIKE_PUBLISHER = "lookalike_publisher"
WITNESS_VIEW_DISAGREES = "witness_view_disagrees"
MAP_ROOT_MISMATCH = "map_root_mismatch"
MAP_ROOT_MISSING = "map_root_missing"


@dataclass
class PackageState:
    """What the monitor knows of one package: its keys and its highest version and counter."""

    keys: dict[str, int] = field(default_factory=dict)  # vkey text -> first index using it
    version: str | None = None  # highest comparable version so far, and where
    version_key: VersionKey | None = None
    version_index: int | None = None
    counter: int | None = None  # highest counter so far, and where
    counter_index: int | None = None
    # Under a --version-scheme: the scheme, and the highest version under it so far and where.
    scheme: str | None = None
    scheme_version: str | None = None
    scheme_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        vk = self.version_key
        value = {"keys": self.keys, "version": self.version,
                 "version_key": None if vk is None else [list(vk[0]), vk[1], vk[2]],
                 "version_index": self.version_index, "counter": self.counter,
                 "counter_index": self.counter_index}
        if self.scheme is not None:
            value["scheme"] = [self.scheme, self.scheme_version, self.scheme_index]
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PackageState:
        vk = value["version_key"]
        # States saved before --version-scheme existed have no "scheme".
        scheme, scheme_version, scheme_index = value.get("scheme") or (None, None, None)
        return cls(dict(value["keys"]), value["version"],
                   None if vk is None else (tuple(vk[0]), vk[1], vk[2]),
                   value["version_index"], value["counter"], value["counter_index"],
                   scheme, scheme_version, scheme_index)


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
                 registry: Registry | None = None, schemes: SchemeMap | None = None) -> None:
        self.patterns = tuple(patterns)
        # --version-scheme: which packages have their versions ordered by an ecosystem's rules.
        self.schemes = schemes if schemes is not None else SchemeMap()
        self._schemes: dict[str, str | None] = {}
        # The publisher registry replayed from the log (verifier.protocol.registry): who may publish
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

    def scheme_for(self, package: str) -> str | None:
        """The --version-scheme of `package`, None when no pattern matches it."""
        if not self.schemes.rules:
            return None
        if package not in self._schemes:
            self._schemes[package] = self.schemes.scheme_for(package)
        return self._schemes[package]

    def observe(self, checked: Checked, now: datetime) -> list[Event]:
        """The events for the next entry of the log, validated by leaves.check_leaves."""
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
        if seen.kind in LIFECYCLE_KINDS or seen.kind == MAP_ROOT_KIND:
            # map roots are checked by maproots.MapWatch, which needs every entry
            return []  # statements about a release: no monitor rule looks at them yet
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
            # keys/v1 and revoke/v1 name no packages: their publisher's grants say what a
            # refused one concerns.
            known = self.registry.publishers.get(publisher)
            patterns = [*entry.entry.get("packages", ()), *(known.patterns if known else ())]
            if not self._registry_relevant(publisher, patterns):
                return []
            return [self.alert(REGISTRY_NOT_AUTHORIZED, f"{entry.kind} for {publisher!r} at "
                               f"entry {seen.entry_index} breaks the registry ({exc}), yet the "
                               "log accepted it", seen.entry_index, publisher=publisher,
                               leaf_hash=seen.leaf_hash.hex())]
        self.registry_changed = True
        owned = self.registry.publishers[publisher].patterns
        alike = self._lookalikes(publisher, changes)
        relevant = [*owned, *entry.entry.get("packages", ()),
                    *(p for a in alike for p in self.registry.publishers[a].patterns)]
        if not self._registry_relevant(publisher, relevant):
            return []
        events = [self.alert(c.kind, f"{publisher}: {c.kind.replace('_', ' ')}: {c.detail}",
                             c.index, publisher=publisher, detail=c.detail,
                             signer=entry.key.text(), leaf_hash=seen.leaf_hash.hex())
                  for c in changes]
        if alike or mixes_scripts(publisher):
            why = (f"reads like {', '.join(map(repr, alike))}" if alike
                   else "mixes letters of several scripts")
            events.append(self.alert(LOOKALIKE_PUBLISHER, f"new publisher {publisher!r} {why}",
                                     seen.entry_index, publisher=publisher, lookalikes=alike,
                                     leaf_hash=seen.leaf_hash.hex()))
        return events

    def _lookalikes(self, publisher: str, changes: Sequence[Change]) -> list[str]:
        """For a newly registered publisher: the registered names that read like its own."""
        if not any(c.kind == "publisher_registered" for c in changes):
            return []
        return confusable_with(publisher, self.registry.publishers)

    def _registry_relevant(self, publisher: str, patterns: Iterable[str]) -> bool:
        """Registry changes concern watched packages when some package name matches both a
        publisher pattern and a glob: a grant of "com.*" concerns a watch on "com.acme.*"."""
        if not self.patterns:
            return True
        return any(_glob_overlaps(g, p) for p in patterns for g in self.patterns)

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
        scheme = self.scheme_for(seen.package)
        if before is None and scheme is None and _unremarkable(pkg, seen):
            # Nearly every entry of a healthy log: what the checks below do then, faster.
            self.versions[name] = self._new_versions[name] = (seen.digest, seen.entry_index)
            pkg.version, pkg.version_key = seen.version, seen.version_key
            pkg.version_index = seen.entry_index
            if seen.counter is not None:
                pkg.counter, pkg.counter_index = seen.counter, seen.entry_index
            return []
        default = self._check_version(pkg, seen, name, before)
        if scheme is not None:
            # The scheme decides growth; of the default rule's findings only a repeat stays.
            ordered = _check_scheme(pkg, seen, name, scheme)
            default = default if before is not None else ordered
        found = [self._check_key(pkg, seen), default,
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
            if s.kind in REGISTRY_KINDS or s.kind in LIFECYCLE_KINDS or s.error is not None:
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


def _glob_overlaps(glob: str, pattern: str) -> bool:
    """Whether a --package glob and a registry package pattern may match a common name.

    A glob shaped like a package pattern (a name, or a prefix then '*') is one, and
    registry.patterns_overlap decides. Any other glob ('?', '[...]', an inner '*') is taken to
    overlap every pattern: an alert too many rather than a grant unseen.
    """
    if PACKAGE_PATTERN.fullmatch(glob) is None:
        return True
    return patterns_overlap(glob, pattern)


def _check_scheme(pkg: PackageState, seen: Seen, name: str, scheme: str) -> Problem | None:
    """Order `seen` after the package's highest version under `scheme`; a problem only for a
    release without a counter (one with a counter is ordered by it: _check_counter)."""
    if pkg.scheme != scheme or not _valid(scheme, pkg.scheme_version):
        # The first release under this scheme: none yet, the scheme changed between runs, or
        # (after a library upgrade) the stored highest no longer parses.
        pkg.scheme, pkg.scheme_version, pkg.scheme_index = scheme, None, None
    highest = pkg.scheme_version
    previous = {"previous_version": highest, "previous_index": pkg.scheme_index,
                "scheme": scheme}
    try:
        key = sort_key(scheme, seen.version)
    except VersionError as exc:
        if seen.counter is not None:
            return None
        return (VERSION_NOT_GROWING, f"{name} cannot be shown to grow"
                + (f" past version {highest} (entry {pkg.scheme_index})" if highest else "")
                + f": {exc}", previous)
    if highest is not None and key <= sort_key(scheme, highest):
        if seen.counter is not None:
            return None
        return (VERSION_NOT_GROWING, f"{name} does not grow past version {highest} (entry "
                f"{pkg.scheme_index}) under {scheme} order", previous)
    pkg.scheme_version, pkg.scheme_index = seen.version, seen.entry_index
    return None


def _valid(scheme: str, version: str | None) -> bool:
    try:
        return version is None or sort_key(scheme, version) is not None
    except VersionError:
        return False


def _check_window(seen: Seen, now: datetime) -> Problem | None:
    if seen.not_after is None or parse_time(seen.not_after) >= now:
        return None
    observed = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (INSTALL_WINDOW_CLOSED, f"{seen.package} {seen.version}: its install window closed "
            f"at {seen.not_after}, before the monitor observed it at {observed}",
            {"not_after": seen.not_after, "observed_at": observed})
