"""Times as RFC 3339 writes them (section 5.6), read into aware datetimes in UTC.

One parser for every time the verifier reads: install windows of release entries and the
times people give on the command line. RFC 3339 lets "Z" be written "z" (section 5.6, note
on case), so both are accepted here. Entry schemas are stricter on their own: the release/v1
schema's pattern admits only "Z", and it runs before this parser does. Nothing here does I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime

from verifier.errors import UsageError

__all__ = ["TimeFormatError", "parse_time"]


class TimeFormatError(UsageError, ValueError):
    """Not an RFC 3339 time with a zone.

    A UsageError where a person typed the time (exit code 2 of tlog-verify), and a
    ValueError for code that reads times out of data (entries turn it into their own error).
    """


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with a zone (e.g. 2026-11-24T10:00:00Z) as an aware datetime in UTC.

    Raises TimeFormatError for anything else, a time without a zone included.
    """
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise TimeFormatError(f"not an RFC 3339 time: {text!r}") from exc
    if value.tzinfo is None:
        raise TimeFormatError(f"time {text!r} needs a zone, e.g. {text}Z")
    return value.astimezone(UTC)
