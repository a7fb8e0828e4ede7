"""HTML from templates, with every value escaped unless it is already markup.

Templates are files of this package (templates/*.html) with {name} fields filled by
str.format_map; a value is escaped (html.escape, quotes included) unless it is a Safe,
which only this package makes: from a template, or by joining Safe pieces. So a string
from an entry can reach a page only escaped, whatever field it is put in.

`shown` also makes text from an entry harmless to look at: control and invisible format
characters (bidirectional overrides, zero-width joiners) are written as \\uXXXX escapes, so
a publisher name cannot read as another one, and long values are cut.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache
from importlib.resources import files
from typing import Any

SHOWN_MAX = 200  # characters of one value shown in a table cell
# Characters written as escapes: controls, format (bidi, zero-width), separators, private
# use, surrogates and unassigned code points.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})


class Safe(str):
    """Markup that goes into a page as it is (made here from templates and escaped text)."""


def esc(value: Any) -> Safe:
    """`value` as HTML text: Safe stays, anything else is escaped."""
    if isinstance(value, Safe):
        return value
    return Safe(html.escape(str(value), quote=True))


def join(parts: Iterable[Safe], sep: str = "") -> Safe:
    return Safe(sep.join(esc(p) for p in parts))


def shown(text: str, limit: int = SHOWN_MAX) -> str:
    """Text from an entry, safe to look at (see the module's doc); cut at `limit`."""
    out = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in _HIDDEN else c
                  for c in text[:limit])
    return out + ("…" if len(text) > limit else "")


@cache
def template(name: str) -> str:
    return (files("tlog.http.explorer") / "templates" / name).read_text("utf-8")


class _Escaping(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise KeyError(f"template field {key!r} has no value")

    def __getitem__(self, key: str) -> Safe:
        return esc(super().__getitem__(key))


def render(template_name: str, **values: Any) -> Safe:
    """Template `template_name` with its fields filled by escaped `values`."""
    return Safe(template(template_name).format_map(_Escaping(values)))


def tag(name: str, text: Any, attrs: Mapping[str, Any] | None = None) -> Safe:
    """<name attrs>text</name> with the text and attribute values escaped."""
    attr = "".join(f' {k}="{esc(v)}"' for k, v in (attrs or {}).items())
    return Safe(f"<{name}{attr}>{esc(text)}</{name}>")


def link(href: str, text: Any) -> Safe:
    return tag("a", text, {"href": href})
