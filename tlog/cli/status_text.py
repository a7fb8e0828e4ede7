"""The text report of `tlog status` (tlog.cli.status gathers it): for a person at a
terminal, in colour only there.

Every string in a report comes from the log (its origin, error texts, refusal codes,
witness names): `printable` writes control and invisible format characters as escapes
before anything is shown, so a hostile log cannot move the cursor over the verdict, set
the terminal's title or reverse text with a bidi override.
"""

from __future__ import annotations

import os
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# Controls, format (bidi, zero-width), separators, private use, surrogates, unassigned.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})


def printable(value: Any) -> Any:
    """`value` (a report, or any part) with each hidden character of its strings, member
    names included, written as a Python escape (\\x1b, \\u202e)."""
    if isinstance(value, str):
        return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _HIDDEN else c
                       for c in value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def tree_size(report: dict[str, Any]) -> int | None:
    sizes = [s for s in (report.get("tree_size"), report["checkpoint"].get("size"))
             if s is not None]
    return max(sizes) if sizes else None


def plain(text: str, _: str) -> str:
    return text


def colours() -> Callable[[str, str], str]:
    """ANSI colours for a terminal, unless NO_COLOR (no-color.org) or TERM=dumb says not."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return plain
    codes = {"good": "32", "warn": "33", "bad": "31;1"}
    return lambda text, tone: f"\x1b[{codes[tone]}m{text}\x1b[0m"


def render(report: dict[str, Any], paint: Callable[[str, str], str]) -> str:
    lines = [f"log          {report['log']}" + (f"  ({report['origin']})"
                                                 if "origin" in report else "")]
    if "database" in report:  # the log answered /v1/status
        lines += _render_tree(report, paint) + _render_witnesses(report, paint)
        lines += _render_health(report, paint)
    tone = {"healthy": "good", "unhealthy": "warn"}.get(report["verdict"], "bad")
    problems = report.get("problems") or []
    verdict = report["verdict"].upper() if problems else report["verdict"]
    lines.append(f"status       {paint(verdict, tone)}" + (f": {problems[0]}" if problems
                                                           else ""))
    lines += [f"             {paint(p, tone)}" for p in problems[1:]]
    return "\n".join(lines) + "\n"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = max(0, int(seconds))
    return (f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h") + " ago"


def _render_tree(report: dict[str, Any], paint: Callable[[str, str], str]) -> list[str]:
    lines = [f"tree size    {report['tree_size'] if report['tree_size'] is not None else '?'}"]
    when = report["checkpoint_time"]
    stamp = ("" if when is None else " (stored " + datetime.fromtimestamp(when, UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC") + ")")
    lines.append(f"checkpoint   signed {_ago(report['checkpoint_age_seconds'])}{stamp}")
    checkpoint, key = report.get("checkpoint"), report.get("key")
    if checkpoint is None:  # its check failed: the status line says why
        return lines
    if not checkpoint["served"]:
        lines.append(f"             {paint('not served', 'warn')}: {checkpoint['problem']}")
    elif key is None:
        lines.append(f"             {paint('not verified', 'warn')}: {report['key_problem']}")
    else:
        note = "" if key["pinned"] else "  " + paint("(key not pinned: give --key or --policy)",
                                                     "warn")
        source = key["source"] if key["pinned"] else "GET /v1/log"
        name, kid = key["vkey"].split("+")[:2]
        lines.append(f"             size {checkpoint['size']} {paint('verified', 'good')} "
                     f"with {name}+{kid} from {source}{note}")
    return lines


def _render_witnesses(report: dict[str, Any], paint: Callable[[str, str], str]) -> list[str]:
    checkpoint, lines = report.get("checkpoint") or {}, []
    cosigs = checkpoint.get("cosignatures") or []
    if cosigs:
        lines.append("cosigned by  " + ", ".join(
            f"{c['name']} ({_ago(None if c['time'] is None else time.time() - c['time'])}"
            f"{'' if c['verified'] else ', not verified'})" for c in cosigs))
    if "quorum_met" in checkpoint:
        met = paint("met", "good") if checkpoint["quorum_met"] else paint("MISSED", "warn")
        age = checkpoint["witnessed_age_seconds"]
        lines.append(f"quorum       {met}: {checkpoint['quorum']}"
                     + ("" if age is None else f"; witnessed {_ago(age)}"))
    witnesses = report.get("witnesses")
    if witnesses is None:
        return lines
    tree = tree_size(report)
    lines.append(f"witnesses    {len(witnesses['list'])}; published size "
                 f"{witnesses['published_size']}")
    for row in witnesses["list"]:
        lines.append(f"  {row['name']:<11}{_witness_line(row, tree, paint)}")
    return lines


def _witness_line(row: dict[str, Any], tree: int | None, paint: Callable[[str, str], str]
                  ) -> str:
    size = "never cosigned" if row["size"] is None else f"cosigned {row['size']} of {tree}"
    how = ("verified" if row["verified"] else "as the log reports" if row["reported"]
           else "no cosignature seen")
    text = (paint("behind", "warn") + ": " if row["behind"] else paint("current", "good")
            + ": ") + f"{size} ({how})"
    if row["fork_alarm"]:
        text += "; " + paint(f"FORK ALARM: {row['fork_alarm']}", "bad")
    elif row["last_error"]:
        text += f"; last error: {str(row['last_error'])[:120]}"
    return text


def _render_health(report: dict[str, Any], paint: Callable[[str, str], str]) -> list[str]:
    db = report["database"]
    if not db["reachable"]:
        health = paint("unreachable", "bad") + f" ({report['database_error']})"
    elif db.get("read_only") or db.get("in_recovery"):
        health = paint("reachable, not writable", "warn")
    else:
        health = paint("reachable, writable", "good")
    appends = (paint("appends running", "good") if report["appends"] == "running"
               else paint(f"appends STOPPED: {report['appends_stopped']}", "bad"))
    refusals = report["refusals"]
    counts = ", ".join(f"{code} {n}" for code, n in
                       sorted(refusals["by_code"].items(), key=lambda kv: (-kv[1], kv[0])))
    return [f"submissions  {report['submissions_waiting']} waiting; {appends}",
            f"database     {health}",
            f"refusals     {counts or 'none'} (last {refusals.get('window_seconds', '?')} s)"]
