"""A package's state proven against a checkpoint, and what it says about one release.

The evidence (`StateEvidence`) is what a client collects online and what a receipt carries
offline (its optional "package_state" member, see `state_member` / `parse_state_member`):

    {"state": <state object> | null,
     "proof": base64 map proof (verifier.protocol.statemap),
     "map_root_leaf": base64 leaf S-1 of the checkpoint of size S,
     "map_root_proof": [base64 hashes: inclusion of leaf S-1 in that checkpoint],
     "statements": {"<index>": base64 leaf, ...}}

`verify_evidence` proves the map-root leaf in the checkpoint (so its root is the one the
signed tree ends with, never an earlier one that could predate a halt), then the state under
that root (or its absence). The state then names the release (index and leaf hash) and the
version's latest lifecycle statement and the rollout before it (index and leaf hash): the
leaves given for them must hash to what the state says, so no separate inclusion proof is
needed, and each must be a lifecycle statement by the release's publisher about the release.
`decide_release` puts it together for lifecycle_state.decide.

Everything here is pure; errors are StateProofError (a ValueError), whose message says what
the log (or the receipt) got wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from verifier.protocol.checkpoint import Checkpoint
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import parse_log_leaf
from verifier.protocol.entries.lifecycle import HALT_KIND, ROLLOUT_KIND, YANK_KIND, Lifecycle
from verifier.protocol.entries.release import Release
from verifier.protocol.lifecycle_state import Decision, Statement, decide
from verifier.protocol.merkle import ProofError, leaf_hash, verify_inclusion
from verifier.protocol.note import b64decode_strict, b64encode
from verifier.protocol.package_state import (
    PackageState,
    StateError,
    check_map_root_leaf,
    verify_no_state,
    verify_state,
)
from verifier.protocol.statemap import MapProofError

__all__ = [
    "MEMBERS",
    "ReleaseRef",
    "StateEvidence",
    "StateProofError",
    "check_release_evidence",
    "decide_release",
    "needed_statements",
    "parse_state_member",
    "release_ref",
    "rollback_note",
    "state_member",
    "statement_refs",
    "verify_evidence",
]

MEMBERS = frozenset({"state", "proof", "map_root_leaf", "map_root_proof", "statements"})
MAX_PROOF_HASHES = 63
MAX_LEAF_BYTES = 65535
MAX_MAP_PROOF_BYTES = 1 + 32 + 256 * 32 + 32 + 32  # terminal, bitmap, siblings, leaf
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,15}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class StateProofError(ValueError):
    """The package state, its proofs or the statements it names do not check out."""


@dataclass(frozen=True)
class StateEvidence:
    """A package's state with everything needed to prove it against one checkpoint."""

    state: PackageState | None
    proof: bytes
    map_root_leaf: bytes
    map_root_proof: tuple[bytes, ...]
    statements: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ReleaseRef:
    """Where the state says a version's release (or statement) is: index and leaf hash."""

    index: int
    leaf_hash: bytes
    kind: str = ""


def verify_evidence(checkpoint: Checkpoint, package: str, evidence: StateEvidence) -> None:
    """The state (or its absence) is the one the checkpoint commits to in its last leaf."""
    size = checkpoint.size
    if size < 1:
        raise StateProofError("an empty tree commits to no package state")
    try:
        verify_inclusion(size - 1, size, leaf_hash(evidence.map_root_leaf),
                         evidence.map_root_proof, checkpoint.root)
    except ProofError as exc:
        raise StateProofError(f"the map root leaf is not proven as entry {size - 1} of the "
                              f"checkpoint of size {size}: {exc}") from exc
    try:
        root = check_map_root_leaf(size, evidence.map_root_leaf)
        if evidence.state is None:
            verify_no_state(root, package, evidence.proof)
        else:
            verify_state(root, package, evidence.state, evidence.proof)
    except (StateError, MapProofError) as exc:
        raise StateProofError(f"the state of {package} is not proven against the checkpoint "
                              f"of size {size}: {exc}") from exc


def _ref(obj: Any, what: str, kind: str = "") -> ReleaseRef:
    """A {"index", "leaf_hash"} of a proven state (committed to, but shaped by the log)."""
    if not isinstance(obj, dict):
        raise StateProofError(f"the proven state's {what} is not an object")
    index, hex_hash = obj.get("index"), obj.get("leaf_hash")
    if type(index) is not int or index < 0:
        raise StateProofError(f"the proven state's {what} has a bad index")
    if not isinstance(hex_hash, str) or not _HEX64.fullmatch(hex_hash):
        raise StateProofError(f"the proven state's {what} has a bad leaf hash")
    return ReleaseRef(index, bytes.fromhex(hex_hash), kind)


def release_ref(state: PackageState | None, package: str, version: str) -> ReleaseRef:
    """The one release of `version` the proven state lists."""
    if state is None:
        raise StateProofError(f"{package} was never released: the log proves it has no state")
    releases = state.get("releases")
    if not isinstance(releases, list):
        raise StateProofError("the proven state has no list of releases")
    found = [r for r in releases if isinstance(r, dict) and r.get("version") == version]
    if not found:
        raise StateProofError(f"{package} {version} is not released: the proven state of "
                              f"{package} does not list it")
    if len(found) > 1:
        raise StateProofError(f"the proven state of {package} lists {version} {len(found)} "
                              "times; refusing an ambiguous release")
    return _ref(found[0], f"release {version!r}")


def statement_refs(state: PackageState, version: str) -> tuple[ReleaseRef | None,
                                                               ReleaseRef | None]:
    """(latest statement, rollout before it) the proven state names for `version`."""
    lifecycle = state.get("lifecycle")
    if not isinstance(lifecycle, dict):
        raise StateProofError("the proven state has no lifecycle object")
    latest = lifecycle.get(version)
    if latest is None:
        return None, None
    if not isinstance(latest, dict) or not isinstance(latest.get("kind"), str):
        raise StateProofError(f"the proven state's statement for {version!r} is malformed")
    ref = _ref(latest, f"statement for {version!r}", latest["kind"])
    rollout = latest.get("rollout")
    before = None if rollout is None else _ref(rollout, f"rollout for {version!r}",
                                               ROLLOUT_KIND)
    return ref, before


def _statement(ref: ReleaseRef, leaves: Mapping[int, bytes], release: Release,
               release_index: int) -> Statement:
    leaf = leaves.get(ref.index)
    if leaf is None:
        raise StateProofError(f"entry {ref.index}, which the state names, is missing")
    if leaf_hash(leaf) != ref.leaf_hash:
        raise StateProofError(f"entry {ref.index} does not hash to the leaf hash the proven "
                              "state gives it")
    try:
        entry = parse_log_leaf(leaf)
    except EntryError as exc:
        raise StateProofError(f"entry {ref.index}, which the state names, is not a valid "
                              f"statement: {exc}") from exc
    where = f"entry {ref.index} ({entry.kind})"
    if not isinstance(entry, Lifecycle) or entry.kind != ref.kind:
        raise StateProofError(f"{where} is not the {ref.kind} the proven state says it is")
    if (entry.package, entry.version) != (release.package, release.version):
        raise StateProofError(f"{where} is about {entry.package} {entry.version}, not "
                              f"{release.package} {release.version}")
    if entry.publisher != release.publisher:
        # The log refuses a statement by anyone but the release's publisher.
        raise StateProofError(f"{where} is by {entry.publisher!r}, not by the release's "
                              f"publisher {release.publisher!r}")
    if ref.index <= release_index:
        raise StateProofError(f"{where} comes before the release it speaks of")
    return ref.index, entry


def decide_release(state: PackageState, release: Release, release_index: int,
                   leaves: Mapping[int, bytes], device_id: str | None,
                   now: datetime) -> Decision:
    """The lifecycle decision for a release from the statements its proven state names
    (`leaves`: their leaf bytes by index, which must hash as the state says)."""
    latest_ref, rollout_ref = statement_refs(state, release.version)
    latest = None if latest_ref is None else _statement(latest_ref, leaves, release,
                                                        release_index)
    rollout = None if rollout_ref is None else _statement(rollout_ref, leaves, release,
                                                          release_index)
    return decide(release.package, release.version, latest, rollout, device_id, now)


def rollback_note(state: PackageState, version: str) -> str:
    """What the proven state says of a rollback target: released where, and whether its own
    latest statement halts or yanks it (the kind is committed in the state itself)."""
    try:
        ref = release_ref(state, str(state.get("package")), version)
        latest, _ = statement_refs(state, version)
    except StateProofError:
        return f"{version} is not a release the proven state lists"
    if latest is not None and latest.kind in (HALT_KIND, YANK_KIND):
        return f"{version} (entry {ref.index}) is itself {latest.kind.split('/')[0]}ed " \
               f"(entry {latest.index})"
    return f"{version} is entry {ref.index}, neither halted nor yanked"


def needed_statements(state: PackageState, version: str) -> list[int]:
    """The indices of the statements `decide_release` needs for `version`."""
    return [r.index for r in statement_refs(state, version) if r is not None]


# -- the receipt member ------------------------------------------------------------------


def state_member(evidence: StateEvidence) -> dict[str, Any]:
    """The receipt's "package_state" member for the evidence."""
    return {
        "state": evidence.state,
        "proof": b64encode(evidence.proof),
        "map_root_leaf": b64encode(evidence.map_root_leaf),
        "map_root_proof": [b64encode(h) for h in evidence.map_root_proof],
        "statements": {str(i): b64encode(leaf) for i, leaf in
                       sorted(evidence.statements.items())},
    }


def _b64(value: Any, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * limit:
        raise StateProofError(f"receipt.package_state.{what} must be base64 of at most "
                              f"{limit} bytes")
    try:
        data = b64decode_strict(value)
    except ValueError as exc:
        raise StateProofError(f"receipt.package_state.{what}: {exc}") from exc
    if len(data) > limit:
        raise StateProofError(f"receipt.package_state.{what} is over {limit} bytes")
    return data


def _hashes(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        raise StateProofError(f"receipt.package_state.map_root_proof must be a list of at "
                              f"most {MAX_PROOF_HASHES} hashes")
    hashes = tuple(_b64(h, "map_root_proof", 32) for h in value)
    if any(len(h) != 32 for h in hashes):
        raise StateProofError("receipt.package_state.map_root_proof: hashes are 32 bytes")
    return hashes


def _leaves(value: Any) -> dict[int, bytes]:
    # A version's state names at most two statements: the latest and the rollout before it.
    if not isinstance(value, dict) or len(value) > 2:
        raise StateProofError("receipt.package_state.statements must be an object of at "
                              "most 2 leaves by index")
    leaves: dict[int, bytes] = {}
    for key, leaf in value.items():
        if not isinstance(key, str) or not _DECIMAL.fullmatch(key):
            raise StateProofError("receipt.package_state.statements: keys are decimal indices")
        leaves[int(key)] = _b64(leaf, f"statements.{key}", MAX_LEAF_BYTES)
    return leaves


def parse_state_member(obj: Any) -> StateEvidence:
    """A receipt's "package_state" member, strictly: exactly its five members, canonical
    base64, bounded sizes. Its proofs are checked by `verify_evidence`."""
    if not isinstance(obj, dict) or set(obj) != MEMBERS:
        raise StateProofError("receipt.package_state must be an object with exactly the "
                              f"members {', '.join(sorted(MEMBERS))}")
    state = obj["state"]
    if state is not None and not isinstance(state, dict):
        raise StateProofError("receipt.package_state.state must be an object or null")
    return StateEvidence(state, _b64(obj["proof"], "proof", MAX_MAP_PROOF_BYTES),
                         _b64(obj["map_root_leaf"], "map_root_leaf", MAX_LEAF_BYTES),
                         _hashes(obj["map_root_proof"]), _leaves(obj["statements"]))


def check_release_evidence(checkpoint: Checkpoint, release: Release, index: int,
                           evidence: StateEvidence) -> None:
    """Offline, all of a receipt's package state: proven against the receipt's checkpoint,
    listing the receipt's release at its index, and carrying exactly the statement leaves
    the state names for the version (each checked by `decide_release`)."""
    verify_evidence(checkpoint, release.package, evidence)
    ref = release_ref(evidence.state, release.package, release.version)
    if (ref.index, ref.leaf_hash) != (index, release.leaf_hash):
        raise StateProofError(f"the proven state lists {release.package} {release.version} "
                              f"at entry {ref.index}, not the receipt's entry {index}")
    assert evidence.state is not None  # release_ref refuses a missing state
    wanted = needed_statements(evidence.state, release.version)
    if sorted(evidence.statements) != sorted(wanted):
        raise StateProofError(f"the receipt carries statements {sorted(evidence.statements)}, "
                              f"not the ones the state names: {sorted(wanted)}")

