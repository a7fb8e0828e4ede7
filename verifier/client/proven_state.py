"""A release found through its package's state, proven against the client's checkpoint.

The log answers GET v1/package-state with a state and a map proof; nothing in that answer is
taken on trust. The client reads the last leaf of its own checkpoint's tree from its entry
bundle, proves it in the checkpoint (a proof from tiles), takes the map root from it, and
checks the state against that root (verifier.protocol.state_proof). The state then names
the release and the version's lifecycle statements by index and leaf hash: each is read
from its bundle and must hash to what the state says. A log that leaves a halt out of its
answer therefore fails the map proof; one that commits to a wrong map is caught by monitors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from verifier.client.log import LogClient
from verifier.errors import LogMisbehaviour, VerificationFailed
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import parse_log_leaf
from verifier.protocol.entries.release import Release
from verifier.protocol.merkle import ProofError, leaf_hash, verify_inclusion
from verifier.protocol.note import b64decode_strict
from verifier.protocol.receipt import VerifiedReceipt
from verifier.protocol.state import Trusted
from verifier.protocol.state_proof import (
    StateEvidence,
    StateProofError,
    check_release_evidence,
    needed_statements,
    release_ref,
    verify_evidence,
)

__all__ = ["Found", "find_release", "prove_state"]


@dataclass(frozen=True)
class Found:
    """The release the proven state names, proven in `trusted`; `hashes` is its inclusion
    proof there (for a receipt) and `receipt.package_state` the state with its statements."""

    receipt: VerifiedReceipt
    hashes: tuple[bytes, ...]


def _answer(client: LogClient, package: str, size: int) -> tuple[dict[str, Any] | None, bytes]:
    """The state and map proof of the log's answer, checked in shape only."""
    body = client.package_state(package, size)
    if body.get("package") != package or body.get("size") != size:
        raise LogMisbehaviour(f"the log answered the state of {body.get('package')!r} at size "
                              f"{body.get('size')!r} when asked for {package!r} at {size}")
    state, proof = body.get("state"), body.get("proof")
    if state is not None and not isinstance(state, dict):
        raise LogMisbehaviour("the log's package state is neither an object nor null")
    if not isinstance(proof, str):
        raise LogMisbehaviour("the log's package state answer has no proof")
    try:
        return state, b64decode_strict(proof)
    except ValueError as exc:
        raise LogMisbehaviour(f"the log's package state proof is not base64: {exc}") from exc


def prove_state(client: LogClient, trusted: Trusted, package: str) -> StateEvidence:
    """The package's state (None: never released) that `trusted` commits to, proven."""
    size = trusted.size
    state, proof = _answer(client, package, size)
    if size < 1:
        raise LogMisbehaviour("the log's checkpoint is empty: it commits to no package state")
    leaf = client.entry(size - 1, size)
    evidence = StateEvidence(state, proof, leaf,
                             tuple(client.inclusion_proof(size - 1, size)))
    try:
        verify_evidence(trusted.checkpoint, package, evidence)
    except StateProofError as exc:
        raise LogMisbehaviour(f"the log's answer for the state of {package} does not prove: "
                              f"{exc}") from exc
    client.keep_verified()
    return evidence


def find_release(client: LogClient, trusted: Trusted, package: str, version: str) -> Found:
    """The one release of (package, version) that the proven state of `package` lists,
    with the lifecycle statements the state names for it, all read from their bundles."""
    try:
        return _find_once(client, trusted, package, version)
    except VerificationFailed:
        # Tiles or bundles from the cache may be what failed (see LogClient.drop_cache).
        if not client.drop_cache():
            raise
        return _find_once(client, trusted, package, version)


def _find_once(client: LogClient, trusted: Trusted, package: str, version: str) -> Found:
    size = trusted.size
    evidence = prove_state(client, trusted, package)
    try:
        ref = release_ref(evidence.state, package, version)
    except StateProofError as exc:
        raise VerificationFailed(f"refused: {exc} (as of the checkpoint of size {size})") from exc
    release = _release(client, trusted, ref.index, ref.leaf_hash, package, version)
    assert evidence.state is not None  # release_ref refuses a missing state
    try:
        wanted = needed_statements(evidence.state, version)
    except StateProofError as exc:
        raise LogMisbehaviour(f"the proven state of {package}: {exc}") from exc
    if any(i >= size - 1 for i in wanted):
        raise LogMisbehaviour(f"the proven state of {package} names statements {wanted}, "
                              "beyond the entries its map root covers")
    leaves = {i: client.entry(i, size) for i in wanted}
    evidence = replace(evidence, statements=leaves)
    hashes = tuple(client.inclusion_proof(ref.index, size))
    try:
        verify_inclusion(ref.index, size, release.leaf_hash, hashes, trusted.root)
    except ProofError as exc:
        raise LogMisbehaviour(f"entry {ref.index} is not proven in the checkpoint of size "
                              f"{size}: {exc}") from exc
    try:
        check_release_evidence(trusted.checkpoint, release, ref.index, evidence)
    except StateProofError as exc:
        raise LogMisbehaviour(f"entry {ref.index} ({package} {version}): {exc}") from exc
    client.keep_verified()
    return Found(VerifiedReceipt(release, ref.index, trusted.checkpoint, evidence), hashes)


def _release(client: LogClient, trusted: Trusted, index: int, want: bytes, package: str,
             version: str) -> Release:
    """Entry `index`, which the proven state says is the release with leaf hash `want`."""
    if index >= trusted.size - 1:
        raise LogMisbehaviour(f"the proven state of {package} puts {version} at entry "
                              f"{index}, beyond the entries its map root covers")
    leaf = client.entry(index, trusted.size)
    if leaf_hash(leaf) != want:
        raise LogMisbehaviour(f"entry {index} is not proven: its bytes in the log's bundle do "
                              f"not hash to the leaf hash the proven state of {package} "
                              f"gives {version}")
    try:
        entry = parse_log_leaf(leaf)
    except EntryError as exc:
        raise LogMisbehaviour(f"entry {index}, which the proven state names as {package} "
                              f"{version}, is not a valid entry: {exc}") from exc
    if not isinstance(entry, Release) or (entry.package, entry.version) != (package, version):
        raise LogMisbehaviour(f"entry {index}, which the proven state names as {package} "
                              f"{version}, is a {entry.kind} entry for something else")
    return entry
