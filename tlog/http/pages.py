"""JSON answers built from stored entry bytes, without parsing them back into objects.

A stored leaf is canonical JSON (RFC 8785, JCS). The API has always answered an entry as
`json.dumps(json.loads(leaf))` (aiohttp's json_response): ", " and ": " between items,
non-ASCII escaped as \\uXXXX, floats as Python spells them. Parsing a 64 KiB entry of nested
empty lists into objects costs milliseconds and tens of MB; `dumps_form` gives the same
bytes with a few C-speed passes over the stored ones (bytes.replace, re, str.encode), so a
page of entries costs about its size in CPU and memory. A page is bounded by count and by
bytes, and built in a worker thread (tlog.http.handlers), off the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii

from verifier.protocol.merkle import leaf_hash

# A JSON string of a JCS text: the only place ", :, non-ASCII and DEL can appear literally.
_STRINGS = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")')
# A number with a fraction or an exponent: json.loads makes it a float.
_FLOAT = re.compile(rb"-?[0-9]+(?:\.[0-9]+(?:e[-+]?[0-9]+)?|e[-+]?[0-9]+)")
_GAP = b"\x00"  # never in a JCS text, where control characters are escaped


def _python_float(match: re.Match[bytes]) -> bytes:
    """A JCS float as json.dumps writes it (1e-7 -> 1e-07, 0.00001 -> 1e-05)."""
    return repr(float(match.group())).encode()


def dumps_form(leaf: bytes) -> bytes:
    """`json.dumps(json.loads(leaf)).encode()` for a JCS leaf, without building objects.

    The text between strings is joined into one (with a byte JCS never holds between the
    pieces), spaced, its floats respelled, and split again: C calls, however many strings.
    """
    parts = _STRINGS.split(leaf)
    between = _GAP.join(parts[0::2]).replace(b",", b", ").replace(b":", b": ")
    if b"." in between or b"e" in between:  # a cheap test first ("e" is in true, false)
        between = _FLOAT.sub(_python_float, between)
    parts[0::2] = between.split(_GAP)
    out = b"".join(parts)
    # UTF-8 has no byte below 0x80 inside a character, so the passes above could not cut
    # one; non-ASCII and DEL are only in strings, and json.dumps escapes them.
    return _ascii(out) if not out.isascii() or b"\x7f" in out else out


def _ascii(text: bytes) -> bytes:
    """Non-ASCII and DEL as \\uXXXX: the C encoder of JSON strings escapes them, and also
    every " and \\ of the text (each becomes \\" or \\\\), which two left-to-right
    replaces take back: after the first, a \\ before a " is only ever the encoder's."""
    quoted = encode_basestring_ascii(text.decode("utf-8"))[1:-1].encode("ascii")
    return quoted.replace(b"\\\\", b"\\").replace(b'\\"', b'"')


def entry_item(index: int, leaf: bytes) -> bytes:
    """One entry of the API: {"index": I, "leaf_hash": H, "entry": E}."""
    return b'{"index": %d, "leaf_hash": "%s", "entry": %s}' % (
        index, leaf_hash(leaf).hex().encode(), dumps_form(leaf))


def build_page(rows: Sequence[tuple[int, bytes]], limit: int, max_bytes: int) -> bytes:
    """The body of a page: {"entries": [...], "next_after": I or null}.

    `rows` are what the store returned for at most `limit` entries whose stored bytes
    reach `max_bytes` at most once (tlog.store.postgres). The entries stop before the one
    that would take the body's entries past `max_bytes` (the first one is always there, so
    a page is never empty while entries remain). next_after is the last index given when
    entries may remain: the page is full, cut here, or the store stopped at the byte bound.
    """
    items: list[bytes] = []
    size = 0
    for index, leaf in rows:
        item = entry_item(index, leaf)
        if items and size + len(item) + 2 > max_bytes:
            break
        items.append(item)
        size += len(item) + 2  # and its ", "
    more = len(items) == limit or len(items) < len(rows) or \
        sum(len(leaf) for _, leaf in rows) >= max_bytes
    next_after = b"%d" % rows[len(items) - 1][0] if items and more else b"null"
    return b'{"entries": [%s], "next_after": %s}' % (b", ".join(items), next_after)
