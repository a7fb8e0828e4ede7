"""Which devices are in a staged rollout: a stable, public, monotone cohort rule.

A device's cohort value for a release is

    x = first 8 bytes, big-endian, of SHA-256(b"tlog/cohort/v1\\n"
            || u16be(len(d)) || d || u16be(len(p)) || p || u16be(len(v)) || v)

where d, p and v are the UTF-8 bytes of the device id (1..256 bytes), the package and the
version (length-prefixed, so no two triples share an encoding). The device is in a rollout
of `percent` iff x < (percent * 2**64) // 100. So the same device always gets the same
answer, 0 % is nobody, 100 % everybody, and widening the percent never drops a device that
was in. The percent is public in the log: aiming a small stage at chosen devices would need
device ids picked to fall under it, and the stage shows in the log for anyone to see.
Nothing here does I/O.
"""

from __future__ import annotations

import hashlib

__all__ = ["COHORT_PREFIX", "MAX_DEVICE_ID", "cohort_value", "in_rollout", "threshold"]

COHORT_PREFIX = b"tlog/cohort/v1\n"
MAX_DEVICE_ID = 256  # bytes of UTF-8


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def cohort_value(device_id: str, package: str, version: str) -> int:
    """x above: a 64-bit integer, uniform over devices for one (package, version)."""
    d = device_id.encode("utf-8")
    if not 1 <= len(d) <= MAX_DEVICE_ID:
        raise ValueError(f"a device id is 1-{MAX_DEVICE_ID} bytes of UTF-8, not {len(d)}")
    p, v = package.encode("utf-8"), version.encode("utf-8")
    digest = hashlib.sha256(COHORT_PREFIX + _field(d) + _field(p) + _field(v)).digest()
    return int.from_bytes(digest[:8], "big")


def threshold(percent: int) -> int:
    """The cohort values below which a device is in a rollout of `percent` (0..100)."""
    if type(percent) is not int or not 0 <= percent <= 100:
        raise ValueError(f"percent must be an integer 0..100, not {percent!r}")
    return (percent * 2**64) // 100


def in_rollout(device_id: str, package: str, version: str, percent: int) -> bool:
    """Whether the device is in a rollout of `percent` of (package, version)."""
    return cohort_value(device_id, package, version) < threshold(percent)
