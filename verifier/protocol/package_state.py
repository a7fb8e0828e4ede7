"""The state of each package as the log's entries define it, and the hash the state map
commits to (see verifier.protocol.statemap for the map itself).

A package's state is the JSON object

    {"package": P,
     "releases": [{"version": V, "index": I, "leaf_hash": hex, "counter": C or null}, ...],
     "lifecycle": {V: {"kind": K, "index": I, "leaf_hash": hex,
                       "rollout": {"index": I, "leaf_hash": hex}}, ...},
     "counter": highest counter or null}

with releases in log order and, per version, only the latest lifecycle statement (rollout/v1,
halt/v1, yank/v1 or resume/v1) in log order; versions without one are absent. When that
latest statement is not itself a rollout/v1 and the version had one before it, "rollout"
names the latest such rollout (absent otherwise): a resume/v1 puts the rollout before it back
in force, so a client shown only the latest statement needs that rollout too, proven the same
way. Its value hash is
SHA-256(b"tlog/package-state/v1\\n" || JCS(state)) (RFC 8785), and its map key is
SHA-256(UTF-8 package name).

Everything here is a pure function of the entries in log order, so a monitor that replays the
log computes the same states, the same hashes and therefore the same map root as the log; a
log that commits to anything else is caught by the first monitor that compares.

How a client is shown a state (the wiring is the log's and the client's): the log appends a
map-root/v1 entry, {"kind": "map-root/v1", "root": hex, "size": N} in JCS, as the last leaf of
every batch, where N is the entry's own index and the root covers entries [0, N). It is
authored by the log and carries no signature of its own: the signed (and cosigned) checkpoint
that includes it is what authenticates it. A client holding a checkpoint of size S takes leaf
S - 1 with its inclusion proof, requires it to be a map-root entry with N = S - 1
(`check_map_root_leaf`: an earlier map root could predate a halt), then checks the state and
its map proof against that root (`verify_state` / `verify_no_state`).

The input is a `Record` per entry, not the parsed entry: the fields the state needs are
common to every kind, and the caller (log or monitor) has already validated the entry.
Records of other kinds (the registry's, the log's own map-root entries) carry no package state
and must be filtered out before; passing one is an error, so nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.strict_json import canonical
from verifier.protocol.statemap import MapProofError, verify_absence, verify_inclusion

RELEASE_KIND = "release/v1"
ROLLOUT_KIND = "rollout/v1"
LIFECYCLE_KINDS = frozenset({"rollout/v1", "halt/v1", "yank/v1", "resume/v1"})
STATE_PREFIX = b"tlog/package-state/v1\n"

PackageState = dict[str, Any]


class StateError(ValueError):
    """Entries that cannot come from a log following its own rules (a lifecycle statement
    for a release not logged before it, indices out of order, an unknown kind)."""


@dataclass(frozen=True)
class Record:
    """What the state needs from one logged entry."""

    index: int
    leaf_hash: bytes
    kind: str
    package: str
    version: str
    counter: int | None = None


def package_key(package: str) -> bytes:
    """The map key of a package: SHA-256 of its UTF-8 name."""
    return hashlib.sha256(package.encode("utf-8")).digest()


def state_bytes(state: Mapping[str, Any]) -> bytes:
    """JCS (RFC 8785) of a state: the bytes a client hashes and a monitor compares."""
    return bytes(rfc8785.dumps(dict(state)))


def built_state_hash(state: Mapping[str, Any]) -> bytes:
    """state_hash of one state built here from records, by StateHasher (see there)."""
    return StateHasher().hash(state)


class StateHasher:
    """state_hash of states that grow by appended releases, without encoding again the
    releases encoded at an earlier call: a package with thousands of releases is hashed
    again at every batch that touches it, and rfc8785 spends milliseconds on each.

    A state's JCS encoding is its members in order, "releases" last:
    {"counter":..,"lifecycle":..,"package":..,"releases":[r0,r1,...]}, and JCS of an array
    is its elements' JCS joined by commas. So the encoding is the JCS of the other three
    members with the releases' encoding spliced in before the closing brace. Each release's
    is the text kept when it was added (_Release), else formatted here. A state whose
    releases are not the kept ones plus new ones at the end (checked by count and the last
    kept release's index) is encoded afresh; one of another shape is left to state_hash.
    """

    def __init__(self) -> None:
        # package -> (releases encoded, index of the last one, their JCS joined by commas)
        self._kept: dict[str, tuple[int, int, bytearray]] = {}

    def hash(self, state: Mapping[str, Any]) -> bytes:
        parts = self._encode(state)
        if parts is None:
            return state_hash(state)
        head, releases = parts
        digest = hashlib.sha256(STATE_PREFIX)
        digest.update(head)
        digest.update(releases)
        digest.update(b"]}")
        return digest.digest()

    def text(self, state: Mapping[str, Any]) -> str:
        """The state's JCS encoding as text (JSON that parses back to the state)."""
        parts = self._encode(state)
        if parts is None:
            return json.dumps(state, sort_keys=True, separators=(",", ":"))
        head, releases = parts
        return (head + releases + b"]}").decode("utf-8")

    def _encode(self, state: Mapping[str, Any]) -> tuple[bytes, bytearray] | None:
        if set(state) != _STATE_MEMBERS or type(state["releases"]) is not list:
            return None
        package, releases = state["package"], state["releases"]
        try:
            head = canonical({"counter": state["counter"], "lifecycle": state["lifecycle"],
                              "package": package})
            done, last, data = self._kept.get(package, (0, -1, bytearray()))
            if done > len(releases) or (done and releases[done - 1].get("index") != last):
                done, data = 0, bytearray()
            new = b",".join([_release_jcs(r) for r in releases[done:]])
            if new:
                data += b"," + new if data else new
        except (EntryError, AttributeError, TypeError):
            return None  # not what StateBuilder makes: state_hash decides (and raises)
        if releases:
            self._kept[package] = (len(releases), releases[-1].get("index"), data)
        return head[:-1] + b',"releases":[', data


def _release_jcs(release: Mapping[str, Any]) -> bytes:
    """JCS of one release of a state: the text kept when it was added, the same formatted
    here (a state read back from JSON), or canonical's for anything else."""
    kept = getattr(release, "jcs", None)
    if type(kept) is str:
        return kept.encode("utf-8")
    if set(release) == _RELEASE_MEMBERS:
        text = _release_text(release["version"], release["index"], release["leaf_hash"],
                             release["counter"])
        if text is not None:
            return text.encode("ascii")
    return canonical(dict(release))


def _release_text(version: Any, index: Any, leaf_hash: Any, counter: Any) -> str | None:
    """A release's JCS, formatted directly (json.dumps with options builds an encoder per
    call, and this runs once per release in every replay); None where JCS might differ:
    a number beyond +-(2**53 - 1), a string json.dumps writes with \\u escapes."""
    if type(index) is not int or abs(index) > _MAX_SIZE or (counter is not None and not (
            type(counter) is int and abs(counter) <= _MAX_SIZE)):
        return None
    if type(leaf_hash) is not str or not _HEX.issuperset(leaf_hash) or type(version) is not str:
        return None
    quoted = json.dumps(version)
    if "\\u" in quoted:
        return None
    return (f'{{"counter":{"null" if counter is None else counter},"index":{index},'
            f'"leaf_hash":"{leaf_hash}","version":{quoted}}}')


class _Release(dict[str, Any]):
    """A release in a state, with its JCS text made once: a state is hashed again at every
    batch that changes it, but its releases never change once added."""

    jcs: str | None = None


_STATE_MEMBERS = frozenset({"package", "releases", "lifecycle", "counter"})
_RELEASE_MEMBERS = frozenset({"version", "index", "leaf_hash", "counter"})
_HEX = frozenset("0123456789abcdef")


def state_hash(state: Mapping[str, Any]) -> bytes:
    """The value the map commits to for a package."""
    return hashlib.sha256(STATE_PREFIX + state_bytes(state)).digest()


def empty_state(package: str) -> PackageState:
    return {"package": package, "releases": [], "lifecycle": {}, "counter": None}


class StateBuilder:
    """Package states built incrementally from records in log order.

    `apply` takes the records of one batch and returns the packages it changed, so the log
    (or a monitor) updates only their map leaves. `last_index` guards the log order: a record
    at or before an index already applied is refused rather than reordered.

    `seed` (states after every record before `after`, e.g. kept from an earlier batch) is
    never modified: a seeded state is copied when a record first changes it, so a batch that
    is rolled back leaves the seed as it was.
    """

    def __init__(self, seed: Mapping[str, PackageState] | None = None, after: int = -1) -> None:
        self.states: dict[str, PackageState] = dict(seed or {})
        self.last_index = after
        self._versions: dict[str, set[str]] = {}  # of the states this builder owns

    def apply(self, records: Iterable[Record]) -> set[str]:
        touched: set[str] = set()
        for record in records:
            self._apply_one(record)
            touched.add(record.package)
        return touched

    def updates(self, packages: Iterable[str], hasher: StateHasher | None = None
                ) -> list[tuple[bytes, bytes]]:
        """(map key, value hash) of each named package, for SparseMap.update; `hasher`
        keeps encodings from one call to the next (a monitor's), else each is made anew
        from the releases' kept texts."""
        hasher = hasher if hasher is not None else StateHasher()
        return [(package_key(p), hasher.hash(self.states[p])) for p in sorted(set(packages))]

    def _apply_one(self, record: Record) -> None:
        if record.index <= self.last_index:
            raise StateError(f"entry {record.index} is not after entry {self.last_index}")
        if len(record.leaf_hash) != 32:
            raise StateError(f"entry {record.index}: leaf hash is not 32 bytes")
        if record.kind == RELEASE_KIND:
            state, versions = self._own(record.package)
            if record.version in versions:
                # The log refuses a second release of a version; a monitor replaying such
                # a log must not paper over it by choosing one.
                raise StateError(f"entry {record.index}: {record.package} {record.version} "
                                 "released twice")
            _add_release(state, record)
            versions.add(record.version)
        elif record.kind in LIFECYCLE_KINDS:
            if record.package not in self.states or record.version not in self._own(
                    record.package)[1]:
                raise StateError(
                    f"entry {record.index}: {record.kind} for {record.package} "
                    f"{record.version}, which is not logged before it"
                )
            _add_statement(self.states[record.package], record)
        else:
            raise StateError(f"entry {record.index}: kind {record.kind!r} has no package state")
        self.last_index = record.index

    def _own(self, package: str) -> tuple[PackageState, set[str]]:
        """The package's state, this builder's own copy, and its released versions (a set:
        a package with n releases must not cost n comparisons per release)."""
        versions = self._versions.get(package)
        if versions is not None:
            return self.states[package], versions
        seeded = self.states.get(package)
        state = empty_state(package) if seeded is None else {
            "package": seeded["package"], "releases": list(seeded["releases"]),
            "lifecycle": dict(seeded["lifecycle"]), "counter": seeded["counter"]}
        versions = {r["version"] for r in state["releases"]}
        self.states[package], self._versions[package] = state, versions
        return state, versions


def _add_release(state: PackageState, record: Record) -> None:
    release = _Release(version=record.version, index=record.index,
                       leaf_hash=record.leaf_hash.hex(), counter=record.counter)
    release.jcs = _release_text(record.version, record.index, release["leaf_hash"],
                                record.counter)
    state["releases"].append(release)
    if record.counter is not None and (
        state["counter"] is None or record.counter > state["counter"]
    ):
        state["counter"] = record.counter


def _add_statement(state: PackageState, record: Record) -> None:
    """The version's latest statement, carrying the latest rollout before it along."""
    previous = state["lifecycle"].get(record.version)
    latest: dict[str, Any] = {
        "kind": record.kind,
        "index": record.index,
        "leaf_hash": record.leaf_hash.hex(),
    }
    if record.kind != ROLLOUT_KIND and previous is not None:
        rollout = (
            {"index": previous["index"], "leaf_hash": previous["leaf_hash"]}
            if previous["kind"] == ROLLOUT_KIND
            else previous.get("rollout")
        )
        if rollout is not None:
            latest["rollout"] = rollout
    state["lifecycle"][record.version] = latest


def build_states(records: Iterable[Record]) -> dict[str, PackageState]:
    """Every package's state after the given records (all of a log's, in log order)."""
    builder = StateBuilder()
    builder.apply(records)
    return builder.states


# --- What a client checks, and the log's map-root entry -------------------------------------

MAP_ROOT_KIND = "map-root/v1"
_MAX_SIZE = 2**53 - 1  # JCS numbers are exact only up to here


def verify_state(root: bytes, package: str, state: Mapping[str, Any], proof: bytes) -> None:
    """Fail (MapProofError) unless the proof shows `state` as the package's state under the
    map root. The state must be the package's own: a state of another package cannot stand
    in for it, since its "package" member is hashed into the value."""
    if state.get("package") != package:
        raise MapProofError(f"state is for {state.get('package')!r}, not {package!r}")
    verify_inclusion(root, package_key(package), state_hash(state), proof)


def verify_no_state(root: bytes, package: str, proof: bytes) -> None:
    """Fail (MapProofError) unless the proof shows the package has no state (never released)."""
    verify_absence(root, package_key(package), proof)


def map_root_entry(size: int, root: bytes) -> bytes:
    """The leaf the log appends as the last entry of each batch: the map root over the
    states of entries [0, size), where `size` is the entry's own index."""
    if not 0 <= size <= _MAX_SIZE or len(root) != 32:
        raise ValueError("map root entry: bad size or root")
    return state_bytes({"kind": MAP_ROOT_KIND, "size": size, "root": root.hex()})


def parse_map_root_entry(leaf: bytes) -> tuple[int, bytes]:
    """(size, root) of a map-root/v1 leaf. Strict: exactly the three members, a lowercase hex
    root, and the leaf must be the entry's own JCS encoding (one encoding per root)."""
    try:
        obj = json.loads(leaf)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateError("map root entry: not JSON") from exc
    if not isinstance(obj, dict) or set(obj) != {"kind", "size", "root"}:
        raise StateError("map root entry: members must be kind, size, root")
    size, root = obj["size"], obj["root"]
    if obj["kind"] != MAP_ROOT_KIND:
        raise StateError(f"map root entry: kind must be {MAP_ROOT_KIND}")
    if type(size) is not int or not 0 <= size <= _MAX_SIZE:
        raise StateError("map root entry: bad size")
    if not isinstance(root, str) or len(root) != 64 or root.strip("0123456789abcdef"):
        raise StateError("map root entry: root must be 64 lowercase hex digits")
    if map_root_entry(size, bytes.fromhex(root)) != leaf:
        raise StateError("map root entry: not in canonical (JCS) form")
    return size, bytes.fromhex(root)


def check_map_root_leaf(checkpoint_size: int, leaf: bytes) -> bytes:
    """The map root a checkpoint commits to: its last leaf (index size - 1), which must be a
    map-root/v1 entry over every entry before it. A root from any earlier leaf could predate a
    halt, so a client takes only this one (after checking the leaf's inclusion proof)."""
    size, root = parse_map_root_entry(leaf)
    if size != checkpoint_size - 1:
        raise StateError(
            f"map root entry covers {size} entries, not the {checkpoint_size - 1} before it"
        )
    return root
