"""Durations as people type them: ``90s``, ``15m``, ``24h``, ``7d``. No I/O."""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SECONDS = 100 * 365 * 86400
_DURATION = re.compile(r"(0|[1-9][0-9]{0,9})([smhd])")


def parse_duration(text: str) -> int:
    """Whole seconds of `text`, a decimal and one unit of s, m, h or d (ValueError else)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"duration {text[:40]!r}: want a number and a unit, like 90s, 15m, "
                         "24h or 7d")
    seconds = int(match[1]) * UNITS[match[2]]
    if seconds > MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than 100 years")
    return seconds


def format_duration(seconds: int) -> str:
    """`seconds` in the largest unit that divides it: 86400 -> "1d", 90 -> "90s"."""
    for unit, size in sorted(UNITS.items(), key=lambda u: -u[1]):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
