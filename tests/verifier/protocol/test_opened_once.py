"""OpenedOnce: a receipt file's checkpoints are each verified once, and a bad one is refused
every time it appears."""

from __future__ import annotations

import pytest

from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.note import generate_key
from verifier.protocol.trust import KeyTrust, OpenedOnce


class Counting(KeyTrust):
    opened = 0

    def open(self, note: bytes | str) -> Checkpoint:
        type(self).opened += 1
        return super().open(note)


def test_each_note_is_opened_once_and_refusals_repeat() -> None:
    key = generate_key("log.example/a")
    other = generate_key("log.example/a")  # the same name, another key: a forgery
    good = sign_checkpoint(Checkpoint(key.name, 3, bytes(32)), key)
    forged = sign_checkpoint(Checkpoint(key.name, 4, bytes(32)), other)
    trust = OpenedOnce(Counting(key.verifier()))
    assert [trust.open(good).size for _ in range(5)] == [3] * 5
    assert Counting.opened == 1
    for _ in range(2):
        with pytest.raises(ValueError):
            trust.open(forged)
    assert Counting.opened == 3
    assert trust.origin == key.name
