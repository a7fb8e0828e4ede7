"""Verifying one release the way an update client must before installing it.

Online (`verify_release`, or its steps `prove_release`, `check_key_valid_at`, `check_install`,
`check_lifecycle`): the log's current checkpoint must verify with the pinned log key and,
with a state directory, extend the checkpoint trusted before (the new one is then stored);
the package's state that checkpoint commits to is proven (verifier.client.proven_state) and
names the one release of the version and its latest lifecycle statements, each read from
its bundle and checked against the hashes the state commits to. With the log operator's
pinned admin keys, the registry entries before the release are replayed to show the
release's key was valid for its package at its index.
Offline (`verify_receipt_file`): a receipt, the log key and nothing else, no network; a
receipt carrying the package state (`write_receipt` writes one) is decided with it.
Under a witness policy (verifier.protocol.policy.PolicyTrust) every checkpoint must carry the
quorum's cosignatures, and a witnessed cooldown (`min_age`, `check_cooldown` online) asks that
a quorum-cosigned checkpoint holding the release be old enough.
Either way the entry is then checked against the caller's own world
(verifier.protocol.entries.install):
the files about to be installed, the pinned publisher keys, the install window.

Errors follow verifier.errors: UsageError (the caller's own inputs), VerificationFailed or
LogMisbehaviour (do not install), TransportError (the log could not be asked).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from verifier.client.fetch import NotFound
from verifier.client.files import atomic_write
from verifier.client.log import LogClient
from verifier.client.proven_state import find_release
from verifier.client.statedir import StateDir
from verifier.client.tracking import advance, prove_extends
from verifier.errors import LogMisbehaviour, UsageError, VerificationFailed
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.install import FileDigest, check_release
from verifier.protocol.entries.kinds import REGISTRY_KINDS, parse_log_leaf
from verifier.protocol.entries.release import Release
from verifier.protocol.lifecycle_state import Decision
from verifier.protocol.merkle import ProofError, verify_inclusion
from verifier.protocol.note import Verifier
from verifier.protocol.policy import PolicyTrust, Witnessed, check_min_age
from verifier.protocol.receipt import (
    VerifiedReceipt,
    make_receipt,
    parse_tlog_proof,
    verify_receipt,
)
from verifier.protocol.registry import Refusal, Registry
from verifier.protocol.state import Trusted
from verifier.protocol.state_proof import StateProofError, decide_release, rollback_note
from verifier.protocol.trust import LogTrust

__all__ = [
    "MAX_RECEIPT_BYTES",
    "ProvenRelease",
    "VerifiedRelease",
    "check_cooldown",
    "check_install",
    "check_key_valid_at",
    "check_lifecycle",
    "prove_entry",
    "prove_release",
    "read_receipt",
    "verify_receipt_file",
    "verify_release",
    "write_receipt",
]

MAX_RECEIPT_BYTES = 1 << 21


@dataclass(frozen=True)
class ProvenRelease:
    """A release entry proven in the log: `receipt.index` of the tree `trusted` signed."""

    receipt: VerifiedReceipt  # with the proven package state (receipt.package_state)
    trusted: Trusted
    hashes: tuple[bytes, ...] = ()  # the entry's inclusion proof in `trusted`


@dataclass(frozen=True)
class VerifiedRelease:
    """A release that passed every check: where it is logged, and the names of the entry's
    artifacts that the caller's files matched (in the order of the files)."""

    receipt: VerifiedReceipt
    artifacts: tuple[str, ...]
    decision: Decision | None = None  # the lifecycle decision, when one was made

    @property
    def release(self) -> Release:
        return self.receipt.release


def check_install(receipt: VerifiedReceipt, files: Sequence[FileDigest] = (),
                  pinned: Sequence[Verifier] = (), now: datetime | None = None) -> VerifiedRelease:
    """Check a logged release against the caller's files, pinned publisher keys and the
    install window at `now` (default: the current time); VerificationFailed if any fails."""
    when = datetime.now(UTC) if now is None else now
    return VerifiedRelease(receipt, tuple(check_release(receipt.release, files, pinned, when)))


# -- offline: a receipt ------------------------------------------------------------------------


def read_receipt(path: str | Path) -> object:
    """The JSON of a receipt file; `path` is named in errors as given."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"couldn't read receipt {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_RECEIPT_BYTES:
        raise VerificationFailed(f"receipt {path} is larger than {MAX_RECEIPT_BYTES} bytes")
    try:
        loaded: object = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise VerificationFailed(f"receipt {path} is not JSON: {exc}") from exc
    return loaded


def verify_receipt_file(path: str | Path, trust: LogTrust, files: Sequence[FileDigest] = (),
                        pinned: Sequence[Verifier] = (), now: datetime | None = None, *,
                        min_age: int | None = None,
                        device_id: str | None = None) -> VerifiedRelease:
    """Offline: the receipt at `path` must prove its entry in a checkpoint that satisfies `trust`,
    and the entry must pass `check_install`. No network at all.

    Under a policy, the receipt's checkpoint must also be fresh if the trust has a max_age,
    and with `min_age` its quorum must have cosigned it at least that long before `now`: the
    witnessed cooldown (a receipt written before the quorum cosigned cannot pass it).

    A receipt carrying the package state is decided with it (`check_lifecycle`: halted,
    yanked, outside the rollout or not started is refused). One without it says nothing
    about halts or rollouts: asked for a rollout decision (`device_id`), that fails closed.
    """
    when = datetime.now(UTC) if now is None else now
    receipt = read_receipt(path)
    try:
        verified = verify_receipt(receipt, trust)
        # verify_receipt checked the shape: the proof is a tlog-proof holding the note.
        note = parse_tlog_proof(receipt["proof"]).checkpoint  # type: ignore[index]
        trust.latest(note)  # the freshness limit (--max-age) applies to a receipt too
        if min_age is not None:
            check_min_age(_policy(trust).witnessed(note), int(when.timestamp()), min_age)
    except ValueError as exc:
        raise VerificationFailed(f"receipt {path} does not verify: {exc}") from exc
    installable = check_install(verified, files, pinned, when)
    if verified.package_state is None:
        if device_id is not None:
            raise VerificationFailed(
                f"receipt {path} carries no package state, so whether this device may "
                "install the release (halts, yanks, rollouts) cannot be decided; get a "
                "receipt with its state from `tlog-verify release --write-bundle`")
        return installable
    decision = check_lifecycle(ProvenRelease(verified, Trusted(verified.checkpoint, note)),
                               device_id, when)
    return replace(installable, decision=decision)


def _policy(trust: LogTrust) -> PolicyTrust:
    if not isinstance(trust, PolicyTrust):
        raise UsageError("a witnessed cooldown (--min-age) needs a witness policy (--policy)")
    return trust


# -- online: the log ---------------------------------------------------------------------------


def verify_release(client: LogClient, trust: LogTrust, package: str, version: str, *,
                   state: StateDir | None = None, admins: Sequence[Verifier] = (),
                   files: Sequence[FileDigest] = (), pinned: Sequence[Verifier] = (),
                   now: datetime | None = None, min_age: int | None = None,
                   device_id: str | None = None) -> VerifiedRelease:
    """Online, in one call: `prove_release`, then with `min_age` (seconds; `trust` must be
    a PolicyTrust) `check_cooldown`, then with `admins` `check_key_valid_at`, then
    `check_install`, then `check_lifecycle` for `device_id`. `state`, if given, must be
    entered (locked) by the caller."""
    when = datetime.now(UTC) if now is None else now
    proven = prove_release(client, trust, package, version, state)
    if min_age is not None:
        check_cooldown(client, trust, proven, min_age, int(when.timestamp()), state)
    if admins:
        check_key_valid_at(client, proven, admins)
    verified = check_install(proven.receipt, files, pinned, when)
    return replace(verified, decision=check_lifecycle(proven, device_id, when))


def prove_release(client: LogClient, trust: LogTrust, package: str, version: str,
                  state: StateDir | None = None) -> ProvenRelease:
    """The one entry for (package, version), proven in the log's current checkpoint.

    The checkpoint must satisfy `trust`; with `state`, it must extend the stored one, which
    it then replaces (misbehaviour evidence goes to state/evidence/). The package's state
    that checkpoint commits to names the release (verifier.client.proven_state): a package
    never released, a version it does not list, or one it lists twice (ambiguous) is
    refused.
    """
    trusted = advance(client, trust, state)
    found = find_release(client, trusted, package, version)
    return ProvenRelease(found.receipt, trusted, found.hashes)


def check_lifecycle(proven: ProvenRelease, device_id: str | None, now: datetime) -> Decision:
    """The lifecycle decision for the proven release from the statements its proven package
    state names (verifier.protocol.state_proof): VerificationFailed with its reason unless it
    allows installing now on this device; LogMisbehaviour if the statements do not check."""
    receipt = proven.receipt
    if receipt.package_state is None or receipt.package_state.state is None:
        raise VerificationFailed(f"no proven package state for {receipt.release.package}: "
                                 "cannot decide whether to install")
    try:
        decision = decide_release(receipt.package_state.state, receipt.release, receipt.index,
                                  receipt.package_state.statements, device_id, now)
    except StateProofError as exc:
        raise LogMisbehaviour(f"the statements the proven state of "
                              f"{receipt.release.package} names: {exc}") from exc
    if not decision.allowed:
        target = decision.rollback_version
        note = "" if target is None else (
            f" (as of this checkpoint, {rollback_note(receipt.package_state.state, target)})")
        raise VerificationFailed(f"refused ({decision.code}): {decision.message}{note}")
    return decision


def check_cooldown(client: LogClient, trust: LogTrust, proven: ProvenRelease, min_age: int,
                   now: int, state: StateDir | None = None) -> Witnessed:
    """The witnessed cooldown, online: the log's smallest quorum-cosigned checkpoint holding
    the release (GET v1/checkpoints/cosigned?covering=INDEX) must verify under the policy,
    have been cosigned by the quorum at least `min_age` seconds before `now`, hold the entry
    (inclusion proof) and be consistent with the checkpoint the release was proven in (so it
    is the same log, not a fork kept for cooling down releases).

    A release no such checkpoint covers yet is refused as too new (VerificationFailed).
    """
    policy = _policy(trust)
    index = proven.receipt.index
    try:
        note = client.cosigned_checkpoint(index)
    except NotFound as exc:
        raise VerificationFailed(f"too new: the log has no quorum-cosigned checkpoint holding "
                                 f"entry {index} yet (or runs without a witness policy)") from exc
    try:
        witnessed = policy.witnessed(note)
        check_min_age(witnessed, now, min_age)
    except ValueError as exc:
        raise VerificationFailed(f"the cosigned checkpoint the log names for entry {index}: "
                                 f"{exc}") from exc
    cosigned = Trusted(witnessed.checkpoint, note)
    if index >= cosigned.size:
        raise VerificationFailed(f"the cosigned checkpoint the log names for entry {index} has "
                                 f"size {cosigned.size}: it does not hold the entry")
    # Consistency first: two signed checkpoints that disagree are a fork, kept as evidence.
    older, newer = sorted((cosigned, proven.trusted), key=lambda t: t.size)
    prove_extends(client, older, newer, state)
    prove_entry(client, cosigned, index, proven.receipt.release.leaf_hash)
    return witnessed


def prove_entry(client: LogClient, trusted: Trusted, index: int, leaf_hash: bytes) -> None:
    """Entry `index` with `leaf_hash` is in the tree `trusted` signed: a proof from tiles."""
    try:
        verify_inclusion(index, trusted.size, leaf_hash,
                         client.inclusion_proof(index, trusted.size), trusted.root)
    except ProofError as exc:
        raise VerificationFailed(f"entry {index} is not proven in the checkpoint of size "
                                 f"{trusted.size}: {exc}") from exc
    client.keep_verified()  # the tiles (and bundle) of a proof that verified: cache them


def check_key_valid_at(client: LogClient, proven: ProvenRelease,
                       admins: Sequence[Verifier]) -> None:
    """The release's key was valid for its package at its index: replay the registry
    entries before it (each fetched from its bundle and proven in `proven.trusted`) with the
    pinned admin keys. The log could leave a registry entry out of its listing; monitors,
    which replay every entry, catch that."""
    trusted, verified = proven.trusted, proven.receipt
    registry = Registry(admins, enforce=True)
    for index in sorted({i for i in client.registry_indices() if i < verified.index}):
        try:
            entry = parse_log_leaf(client.entry(index, trusted.size))
        except EntryError as exc:
            raise VerificationFailed(f"registry entry {index} does not verify: {exc}") from exc
        prove_entry(client, trusted, index, entry.leaf_hash)
        if entry.kind not in REGISTRY_KINDS:
            raise VerificationFailed(f"the log lists entry {index} as a registry entry; it is "
                                     "a release")
        try:
            registry.apply(index, entry)
        except Refusal as exc:
            raise VerificationFailed(f"the log accepted registry entry {index}, which the "
                                     f"pinned admin keys do not allow: {exc}") from exc
    r = verified.release
    problem = registry.release_problem(r.publisher, r.package, r.key.text())
    if problem is not None:
        raise VerificationFailed(f"at entry {verified.index}, {problem}")


def write_receipt(path: str | Path, proven: ProvenRelease) -> None:
    """A receipt for the proven release against the checkpoint it was proven in, carrying
    the package state proven against that same checkpoint: an offline client decides with
    it as of that checkpoint (and bounds its age with --max-age)."""
    r = proven.receipt
    receipt = make_receipt(r.release.entry, r.index, proven.hashes, proven.trusted.note,
                           r.package_state)
    data = (json.dumps(receipt, indent=2, sort_keys=True) + "\n").encode()
    try:
        atomic_write(Path(path), data, durable=True, mode=0o644)
    except OSError as exc:
        raise UsageError(f"couldn't write {path}: {exc.strerror or exc}") from exc
