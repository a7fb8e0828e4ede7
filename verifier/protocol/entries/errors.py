"""Why an entry was refused: :class:`EntryError` and its stable codes.

Every refusal of an entry, of any kind and on any path (strict JSON, schema, canonical form,
key, signature), raises EntryError. Its ``code`` is one of the five below, which the log
service answers with (schema/openapi.yaml) and clients report; its message names the
offending member (``artifacts[1].sha256: ...``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BAD_KEY", "BAD_SIGNATURE", "ENTRY_CODES", "ENTRY_TOO_LARGE", "INVALID_ENTRY",
           "INVALID_JSON", "EntryError", "short"]

INVALID_JSON = "invalid_json"
INVALID_ENTRY = "invalid_entry"
BAD_KEY = "bad_key"
BAD_SIGNATURE = "bad_signature"
ENTRY_TOO_LARGE = "entry_too_large"
ENTRY_CODES = (INVALID_JSON, INVALID_ENTRY, BAD_KEY, BAD_SIGNATURE, ENTRY_TOO_LARGE)


class EntryError(ValueError):
    """An entry was rejected; ``code`` says why, the message says where."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def short(value: Any) -> str:
    """A value as messages quote it: its repr, cut to 80 characters (entries can be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
