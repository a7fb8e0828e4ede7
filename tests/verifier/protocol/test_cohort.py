"""The cohort rule (verifier/protocol/cohort.py): stable, monotone, pinned."""

from __future__ import annotations

import hashlib

import pytest

from verifier.protocol.cohort import cohort_value, in_rollout, threshold

PKG, VER = "com.acme.app", "1.2.0"
# The encoded message of ("device-1", PKG, VER), written out byte by byte: the prefix, then
# each of device id, package and version after its big-endian uint16 length.
MESSAGE = (b"tlog/cohort/v1\n" + b"\x00\x08device-1" + b"\x00\x0ccom.acme.app"
           + b"\x00\x051.2.0")


def test_the_pinned_vector() -> None:
    """Computed once by hand from the contract's encoding: a change to the rule fails here."""
    assert hashlib.sha256(MESSAGE).digest()[:8].hex() == "f5bf5cd26823bc96"
    assert cohort_value("device-1", PKG, VER) == 0xf5bf5cd26823bc96
    assert cohort_value("device-3", PKG, VER) == 0x7f3b4822e45f4c4a
    # device-1 is in from 96 % on, device-3 from 50 %.
    assert [p for p in range(101) if in_rollout("device-1", PKG, VER, p)] == list(range(96, 101))
    assert [p for p in range(101) if in_rollout("device-3", PKG, VER, p)] == list(range(50, 101))


def test_thresholds() -> None:
    assert threshold(0) == 0
    assert threshold(100) == 2**64
    assert threshold(50) == 2**63
    assert threshold(10) == (10 * 2**64) // 100


def test_nobody_at_zero_everybody_at_one_hundred() -> None:
    devices = [f"d{i}" for i in range(500)]
    assert not any(in_rollout(d, PKG, VER, 0) for d in devices)
    assert all(in_rollout(d, PKG, VER, 100) for d in devices)


def test_widening_never_drops_a_device() -> None:
    """A device in at p is in at every q >= p: the set only grows."""
    devices = [f"device-{i}" for i in range(300)]
    previous: set[str] = set()
    for p in range(101):
        now = {d for d in devices if in_rollout(d, PKG, VER, p)}
        assert previous <= now, p
        previous = now
    # and roughly the share it says (300 devices, generous bounds)
    share = sum(in_rollout(d, PKG, VER, 10) for d in devices)
    assert 10 <= share <= 60


def test_the_answer_is_stable_and_depends_on_package_and_version() -> None:
    assert all(in_rollout("device-2", PKG, VER, 10) for _ in range(5))
    values = {cohort_value("device-2", PKG, VER), cohort_value("device-2", PKG, "1.2.1"),
              cohort_value("device-2", "com.acme.lib", VER)}
    assert len(values) == 3
    # Length prefixes: moving a byte from one field to the next changes the encoding.
    assert cohort_value("ab", "c", VER) != cohort_value("a", "bc", VER)


@pytest.mark.parametrize("device", ["", "x" * 257, "é" * 129])
def test_device_ids_outside_1_to_256_bytes_are_refused(device: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        cohort_value(device, PKG, VER)


@pytest.mark.parametrize("percent", [-1, 101, 10.0, True])
def test_percent_outside_0_to_100_is_refused(percent: object) -> None:
    with pytest.raises(ValueError, match="percent"):
        threshold(percent)  # type: ignore[arg-type]
