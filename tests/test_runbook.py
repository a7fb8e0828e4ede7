"""docs/RUNBOOK.md cannot silently rot: its structure and its commands are checked here.

Alerts link to the runbook's procedures by anchor, so the five procedure headings must stay
exactly as they are. Every `tlog` and `tlog-verify` command in its ```sh blocks must name
subcommands and flags the CLIs really have: they are parsed with the parsers of
tlog.cli.main and verifier.cli.main, so renaming a flag without fixing the runbook fails here.
(Running the commands is a manual drill, on `make run`: the runbook says how.)
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlog.cli.main import build_parser as tlog_parser
from verifier.cli.main import build_parser as verify_parser

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "docs" / "RUNBOOK.md"
PROCEDURES = ("Log key compromise", "Publisher key compromise",
              "Fork alarm from a witness or monitor", "Bad release in rollout",
              "Database restore")
# Shell operators (and line ends) end one command: what follows is another command, or a
# redirection.
OPERATORS = "|&;()<>\n"


def runbook() -> str:
    return RUNBOOK.read_text(encoding="utf-8")


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(text: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"^(#{2,4}) (.+)$", text, flags=re.M)]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.M | re.S)


def words(block: str) -> list[str]:
    """The block as shell words, comments dropped, operators as words of their own."""
    joined = block.replace("\\\n", " ")
    lexer = shlex.shlex(joined, posix=True, punctuation_chars=OPERATORS)
    lexer.whitespace = " \t\r"  # a line end is an operator; inside quotes it is kept
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def is_operator(word: str) -> bool:
    return all(c in OPERATORS for c in word)


def commands(block: str) -> Iterator[tuple[str, list[str]]]:
    """Each `tlog ...` or `tlog-verify ...` command in a block: (program, its words)."""
    ws = words(block)
    for i, word in enumerate(ws):
        if word not in ("tlog", "tlog-verify"):
            continue
        end = i + 1
        while end < len(ws) and not is_operator(ws[end]):
            end += 1
        yield word, ws[i + 1:end]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_command(program: str, args: list[str]) -> list[str]:
    """What is wrong with one command line of the runbook (empty: nothing)."""
    parser = tlog_parser() if program == "tlog" else verify_parser()
    path = [program]
    rest = list(args)
    while (choices := subparsers(parser)):
        if not rest or rest[0] not in choices:
            return [f"{' '.join(path)}: no subcommand {rest[0] if rest else '(none)'!r}; "
                    f"it has {sorted(choices)}"]
        path.append(rest[0])
        parser = choices[rest.pop(0)]
    known = parser._option_string_actions
    return [f"{' '.join(path)}: no option {flag}" for flag in
            (w.split("=", 1)[0] for w in rest if w.startswith("--")) if flag not in known]


def test_the_five_procedures_and_the_preparation_have_their_headings() -> None:
    found = [h for h in headings(runbook()) if not h.startswith("#")]
    for title in ("Before you need this", *PROCEDURES):
        assert title in found, f"docs/RUNBOOK.md lost the heading '## {title}'"
    # Alerts link to these anchors: they are what the headings must produce.
    assert [anchor(t) for t in PROCEDURES] == [
        "log-key-compromise", "publisher-key-compromise",
        "fork-alarm-from-a-witness-or-monitor", "bad-release-in-rollout", "database-restore"]


def test_every_link_inside_the_runbook_names_a_heading() -> None:
    text = runbook()
    anchors = {anchor(h) for h in headings(text)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) >= 6  # the table of contents at least
    assert [link for link in links if link not in anchors] == []


def test_the_readme_links_the_runbook() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(docs/RUNBOOK.md)" in readme


def test_the_command_finder_sees_through_pipes_subshells_and_continuations() -> None:
    block = ("(umask 077 && tlog token issue --log $LOG \\\n    --scope 'a.*' > f)\n"
             "x=$(tlog-verify audit --state d --full | jq .) # tlog nothing --here\n")
    assert list(commands(block)) == [
        ("tlog", ["token", "issue", "--log", "$LOG", "--scope", "a.*"]),
        ("tlog-verify", ["audit", "--state", "d", "--full"])]
    assert check_command("tlog", ["token", "issue", "--log", "x", "--colour"]) == [
        "tlog token issue: no option --colour"]
    assert check_command("tlog", ["rotate-log-key"])[0].startswith(
        "tlog: no subcommand 'rotate-log-key'")


def runbook_commands() -> list[tuple[str, list[str]]]:
    return [cmd for block in sh_blocks(runbook()) for cmd in commands(block)]


def test_the_runbook_has_commands_of_both_programs() -> None:
    programs = [program for program, _ in runbook_commands()]
    assert programs.count("tlog") >= 20 and programs.count("tlog-verify") >= 15


@pytest.mark.parametrize("program,args", runbook_commands(),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]))
def test_every_command_in_the_runbook_exists_with_its_flags(program: str,
                                                            args: list[str]) -> None:
    assert check_command(program, args) == []
