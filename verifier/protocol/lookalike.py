"""Publisher names that read alike: a skeleton per Unicode TR39, and mixed scripts.

Two names are confusable when their skeletons are equal: each character is replaced by the
prototype it is commonly mistaken for (a small built-in part of the TR39 confusables table:
the ASCII look-alikes, and the Cyrillic and Greek letters that pass for Latin ones), then
case is folded, since a reader does not tell "Acme" from "acme" at a glance. A name mixes
scripts when its letters come from more than one script (digits and punctuation belong to
none). Publisher names are printable ASCII today (registry_kinds.PUBLISHER_NAME); the rules
do not depend on it. Pure: no I/O.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

__all__ = ["confusable_with", "mixes_scripts", "skeleton"]

# Character -> prototype, as in TR39's confusables.txt (a subset).
_PROTOTYPES = {
    "0": "o", "O": "o", "1": "l", "I": "l", "|": "l", "m": "rn", "w": "vv", "d": "cl",
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "һ": "h", "і": "l", "ј": "j", "к": "k", "м": "rn",
    "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԁ": "cl",
    "ԛ": "q", "ԝ": "vv", "ӏ": "l",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ι": "l", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x",
}


@functools.lru_cache(maxsize=4096)
def skeleton(name: str) -> str:
    """The TR39-style skeleton of `name`: equal skeletons mean names that read alike."""
    decomposed = unicodedata.normalize("NFD", name)
    # Accents go: "acmé" passes for "acme".
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    mapped = "".join(_PROTOTYPES.get(c, c) for c in base).casefold()
    # Folding may make new look-alikes ("M" -> "m"): map once more, then it is stable.
    return "".join(_PROTOTYPES.get(c, c) for c in mapped)


def _script(c: str) -> str | None:
    """The script of a letter, from its Unicode name ("CYRILLIC SMALL LETTER A"); None for
    what is not a letter."""
    if not unicodedata.category(c).startswith("L"):
        return None
    return unicodedata.name(c, "UNKNOWN").split(" ", 1)[0]


def mixes_scripts(name: str) -> bool:
    """Whether the letters of `name` come from more than one script ("аcme": Cyrillic а)."""
    return len({s for c in name if (s := _script(c)) is not None}) > 1


def confusable_with(name: str, others: Iterable[str]) -> list[str]:
    """The names among `others` that differ from `name` but read alike (sorted)."""
    mine = skeleton(name)
    return sorted(o for o in set(others) if o != name and skeleton(o) == mine)
