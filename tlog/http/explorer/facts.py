"""What the explorer shows of stored entries: a few fields of each, read from its leaf.

Leaves are the log's JCS bytes, valid entries of their kind when logged; still, nothing
here trusts a field's type (a value shown is made a str, a number must be an int), since a
page must render whatever the database holds. Pure functions: they run in a page thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from verifier.protocol.entries.lifecycle import (
    HALT_KIND,
    LIFECYCLE_KINDS,
    RESUME_KIND,
    ROLLOUT_KIND,
    YANK_KIND,
)
from verifier.protocol.entries.release import KIND as RELEASE_KIND


@dataclass(frozen=True)
class Statement:
    """A lifecycle statement about one version."""

    index: int
    kind: str
    version: str
    publisher: str
    stage: str | None = None
    percent: int | None = None
    reason: str | None = None
    rollback: str | None = None

    def describe(self) -> str:
        """The statement in a few words: "rollout canary (10 %)", "halted", "yanked"."""
        if self.kind == ROLLOUT_KIND:
            percent = "" if self.percent is None else f" ({self.percent} %)"
            return f"rollout {self.stage or '?'}{percent}"
        return {HALT_KIND: "halted", YANK_KIND: "yanked", RESUME_KIND: "resumed"}.get(
            self.kind, self.kind)


@dataclass
class ReleaseRow:
    """A release and the statements about it, in log order."""

    index: int
    version: str
    counter: int | None
    publisher: str
    key: str
    statements: list[Statement] = field(default_factory=list)

    def lifecycle(self) -> str:
        """Where the release stands: its latest statement, and for a halt or resume the
        rollout stage before it (a resume puts that rollout back in force)."""
        if not self.statements:
            return "released"
        latest = self.statements[-1]
        if latest.kind in (HALT_KIND, RESUME_KIND):
            rollouts = [s for s in self.statements if s.kind == ROLLOUT_KIND]
            if rollouts:
                return f"{latest.describe()} at {rollouts[-1].describe()}"
        return latest.describe()


@dataclass(frozen=True)
class Summary:
    """One release, for the home page's list."""

    index: int
    package: str | None
    version: str | None
    publisher: str


def _text(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    return None if value is None else str(value)


def _int(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    return value if type(value) is int else None


def parse(leaf: bytes) -> dict[str, Any]:
    """The entry of a leaf as an object ({} for anything else)."""
    try:
        obj = json.loads(leaf)
    except (ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def key_name(key: str) -> str:
    """The name of a signed-note vkey text (<name>+<id>+<key>): the publisher."""
    return key.split("+", 1)[0]


def summary(index: int, leaf: bytes) -> Summary:
    obj = parse(leaf)
    return Summary(index, _text(obj, "package"), _text(obj, "version"),
                   key_name(_text(obj, "key") or ""))


def summaries(rows: list[tuple[int, bytes]]) -> list[Summary]:
    return [summary(index, leaf) for index, leaf in rows]


def package_rows(rows: list[tuple[int, bytes]]) -> tuple[list[ReleaseRow], list[Statement]]:
    """The releases (oldest first) with their statements, and every statement, from a
    package's entries in any order. A statement whose release is older than the entries
    read is listed alone."""
    releases: dict[str, ReleaseRow] = {}
    statements: list[Statement] = []
    for index, leaf in sorted(rows):
        obj = parse(leaf)
        kind, version = obj.get("kind"), _text(obj, "version") or "?"
        key = _text(obj, "key") or ""
        if kind == RELEASE_KIND:
            releases[version] = ReleaseRow(index, version, _int(obj, "counter"),
                                           key_name(key), key)
        elif kind in LIFECYCLE_KINDS:
            s = Statement(index, str(kind), version, key_name(key), _text(obj, "stage"),
                          _int(obj, "percent"), _text(obj, "reason"),
                          _text(obj, "rollback_version"))
            statements.append(s)
            if version in releases:
                releases[version].statements.append(s)
    return list(releases.values()), statements
