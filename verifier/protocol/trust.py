"""What a client trusts about a log: its origin and how to open its checkpoints. No I/O.

Every verifier entry point that takes a checkpoint from a log takes a `LogTrust` rather than a
bare key, so the rule for believing a checkpoint lives in one place. Today the rule is one
pinned Ed25519 key (`KeyTrust`, C2SP tlog-checkpoint "Signatures": the log's signature by the
key whose name is the origin) or a witness policy (`verifier.protocol.policy.PolicyTrust`,
C2SP tlog-policy: the log's signature plus a quorum of cosignatures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from verifier.protocol.checkpoint import Checkpoint, open_checkpoint
from verifier.protocol.note import Verifier


class LogTrust(Protocol):
    @property
    def origin(self) -> str:
        """The log's origin line: a checkpoint of any other origin is refused."""
        ...

    def describe(self) -> str:
        """What the trust is, for messages ("the pinned key NAME")."""
        ...

    def open(self, note: bytes | str) -> Checkpoint:
        """The checkpoint of a signed note that satisfies this trust; ValueError (NoteError,
        CheckpointError) otherwise."""
        ...

    def latest(self, note: bytes | str) -> Checkpoint:
        """As open, for a note the log serves as its current view: a trust may also refuse
        one that is stale (verifier.protocol.policy.PolicyTrust with a freshness limit)."""
        ...


@dataclass(frozen=True)
class KeyTrust:
    """Trust in one log key: a checkpoint is believed when that key signed it."""

    key: Verifier

    @property
    def origin(self) -> str:
        return self.key.name

    def describe(self) -> str:
        return f"the pinned key {self.key.name}"

    def open(self, note: bytes | str) -> Checkpoint:
        return open_checkpoint(note, self.key)

    def latest(self, note: bytes | str) -> Checkpoint:
        return self.open(note)


class OpenedOnce:
    """A KeyTrust that opens each distinct note once: a file of thousands of receipts from
    one log names a few dozen checkpoints, and checking the same signature again tells
    nothing new (the answer is a pure function of the note and the key). Refusals are not
    kept: they raise each time."""

    def __init__(self, trust: KeyTrust) -> None:
        self._trust = trust
        self._opened: dict[bytes | str, Checkpoint] = {}

    @property
    def origin(self) -> str:
        return self._trust.origin

    def describe(self) -> str:
        return self._trust.describe()

    def open(self, note: bytes | str) -> Checkpoint:
        opened = self._opened.get(note)
        if opened is None:
            opened = self._opened[note] = self._trust.open(note)
        return opened

    def latest(self, note: bytes | str) -> Checkpoint:
        return self.open(note)
