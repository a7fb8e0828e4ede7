"""LogTrust: a checkpoint is believed only as the trust says (today: the pinned log key)."""

from __future__ import annotations

import pytest

from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.merkle import EMPTY_ROOT
from verifier.protocol.note import generate_key
from verifier.protocol.trust import KeyTrust, LogTrust

LOG = generate_key("log.example.org/trust")


def test_key_trust_opens_checkpoints_its_key_signed() -> None:
    trust: LogTrust = KeyTrust(LOG.verifier())
    note = sign_checkpoint(Checkpoint(LOG.name, 0, EMPTY_ROOT), LOG)
    assert trust.open(note) == Checkpoint(LOG.name, 0, EMPTY_ROOT)
    assert trust.origin == LOG.name
    assert trust.describe() == f"the pinned key {LOG.name}"


def test_key_trust_refuses_another_key_of_the_same_name() -> None:
    impostor = generate_key(LOG.name)
    note = sign_checkpoint(Checkpoint(LOG.name, 5, EMPTY_ROOT), impostor)
    with pytest.raises(ValueError):
        KeyTrust(LOG.verifier()).open(note)
