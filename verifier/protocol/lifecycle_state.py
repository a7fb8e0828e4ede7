"""What the lifecycle statements of a version say to a client about installing it now.

The proven package state (verifier.protocol.package_state) keeps, per version, only the
latest lifecycle statement in log order and, next to it, the latest rollout/v1 before it.
Given those two (as checked entries), an optional device id and the time, :func:`decide`
answers by the **latest statement**:

- ``yank/v1``: refuse, naming the reason and the rollback target. A yank is final: the log
  refuses any statement after a yank but another yank, so a yanked version's latest
  statement is a yank;
- ``halt/v1``: refuse, with its reason (and rollback target, when given);
- ``rollout/v1``: refuse before its ``start_time``; refuse a device outside the cohort of
  its percent (verifier.protocol.cohort); without a device id, refuse any rollout below
  100 %: a client that cannot say which device it is cannot know it is in the cohort, so
  it fails closed and says that a device id is needed;
- ``resume/v1``: the latest rollout/v1 before it applies again (none: allowed);
- no statement at all: allowed, as releases always were.

:func:`latest_statements` picks the two from a list of entries (a replay, or a test); a
client takes them from the proven state instead. Nothing here does I/O: `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from verifier.protocol.cohort import in_rollout
from verifier.protocol.entries.lifecycle import (
    HALT_KIND,
    ROLLOUT_KIND,
    YANK_KIND,
    Lifecycle,
)
from verifier.protocol.rfc3339 import parse_time

__all__ = ["ALLOWED", "HALTED", "NEEDS_DEVICE_ID", "NOT_STARTED", "OUTSIDE_ROLLOUT", "YANKED",
           "Decision", "Statement", "decide",
           "latest_statements"]

ALLOWED = "allowed"
YANKED = "yanked"
HALTED = "halted"
NOT_STARTED = "rollout_not_started"
OUTSIDE_ROLLOUT = "outside_rollout"
NEEDS_DEVICE_ID = "device_id_needed"
MAX_REASON_SHOWN = 300  # characters of a publisher's reason quoted in a message


@dataclass(frozen=True)
class Decision:
    """Whether to install: `code` is ALLOWED or why not; `message` is for people."""

    code: str
    message: str
    rollback_version: str | None = None
    statement_index: int | None = None  # the log index of the statement that decided

    @property
    def allowed(self) -> bool:
        return self.code == ALLOWED


def _reason(entry: dict[str, Any]) -> str:
    """A publisher's reason, quoted safely (it is free text from the log)."""
    text = entry.get("reason")
    return repr(text[:MAX_REASON_SHOWN]) if isinstance(text, str) else "(no reason given)"


def _rollback(s: Lifecycle) -> str:
    return (f"; roll back to {s.rollback_version}" if s.rollback_version is not None
            else "; no rollback version given")


def _rollout(name: str, s: Lifecycle, index: int, device_id: str | None,
             now: datetime) -> Decision:
    e = s.entry
    stage, percent = e["stage"], e["percent"]
    where = f"stage {stage!r} ({percent}%, entry {index})"
    if "start_time" in e and now < parse_time(e["start_time"]):
        return Decision(NOT_STARTED, f"{name}: rollout {where} starts at {e['start_time']}",
                        statement_index=index)
    if percent >= 100:
        return Decision(ALLOWED, f"{name}: rolled out to everybody, {where}",
                        statement_index=index)
    if device_id is None:
        return Decision(NEEDS_DEVICE_ID, f"{name}: rollout {where} covers part of the devices;"
                                         " give --device-id to learn whether this one is in it",
                        statement_index=index)
    if not in_rollout(device_id, s.package, s.version, percent):
        return Decision(OUTSIDE_ROLLOUT, f"{name}: device {device_id!r} is outside rollout "
                                         f"{where}", statement_index=index)
    return Decision(ALLOWED, f"{name}: device {device_id!r} is in rollout {where}",
                    statement_index=index)


Statement = tuple[int, Lifecycle]  # (log index, checked entry)


def latest_statements(entries: Iterable[tuple[int, Any]], package: str,
                      version: str) -> tuple[Statement | None, Statement | None]:
    """(latest statement, latest rollout/v1 before it) of (package, version) among `entries`
    ((index, checked entry) pairs; other kinds and versions are skipped), as the package
    state records them. A yank stays the latest statement whatever a log lists after it."""
    statements = [(i, e) for i, e in sorted(entries, key=lambda pair: pair[0])
                  if isinstance(e, Lifecycle) and e.package == package and e.version == version]
    yanks = [pair for pair in statements if pair[1].kind == YANK_KIND]
    if yanks:
        return yanks[-1], None
    if not statements:
        return None, None
    latest = statements[-1]
    rollouts = [pair for pair in statements[:-1] if pair[1].kind == ROLLOUT_KIND]
    before = rollouts[-1] if rollouts and latest[1].kind != ROLLOUT_KIND else None
    return latest, before


def decide(package: str, version: str, latest: Statement | None, rollout: Statement | None,
           device_id: str | None, now: datetime) -> Decision:
    """The decision for (package, version) from its latest statement and the latest
    rollout/v1 before it (only a resume/v1 consults it)."""
    name = f"{package} {version}"
    if latest is None:
        return Decision(ALLOWED, f"{name}: no rollout, halt or yank statement is logged")
    i, last = latest
    if last.kind == YANK_KIND:
        return Decision(YANKED, f"{name} is yanked (entry {i}): {_reason(last.entry)}"
                        + _rollback(last), last.rollback_version, i)
    if last.kind == HALT_KIND:
        return Decision(HALTED, f"{name} is halted (entry {i}): {_reason(last.entry)}"
                        + _rollback(last), last.rollback_version, i)
    if last.kind == ROLLOUT_KIND:
        return _rollout(name, last, i, device_id, now)
    if rollout is None:
        return Decision(ALLOWED, f"{name}: resumed (entry {i}), no rollout stage logged",
                        statement_index=i)
    j, stage = rollout
    return _rollout(name, stage, j, device_id, now)
