"""Durations as typed on the command line (--max-age, --min-age)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.protocol.duration import MAX_SECONDS, UNITS, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0), ("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("36500d", MAX_SECONDS),
])
def test_durations_are_a_number_and_one_unit(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "", "s", "10", "1.5h", "-1s", "+1s", "01s", "1 s", " 1s", "1s ", "1S", "1w", "1h30m",
    "１s", "1e3s", "99999999999s", "36501d",
])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(0, MAX_SECONDS))
def test_format_and_parse_round_trip(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert text[-1] in UNITS
