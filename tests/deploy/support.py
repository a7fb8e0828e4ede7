"""What the deploy tests share: the repository's deploy/ directory, the help text of a
command line (what `--help` prints), and the options a help text offers."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import pytest

from tlog.cli.main import build_parser as tlog_parser
from verifier.cli.main import build_parser as verify_parser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def help_text(program: str, *command: str) -> str:
    """What `program COMMAND... --help` prints (tlog or tlog-verify)."""
    parser = tlog_parser() if program == "tlog" else verify_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser.format_help()


def options_of(program: str, *command: str) -> set[str]:
    return set(_OPTION.findall(help_text(program, *command)))


def command_options(argv: list[str]) -> tuple[tuple[str, ...], set[str]]:
    """The subcommand words of a tlog or tlog-verify command line (before the first option)
    and the options it passes (--name, or --name=value)."""
    words = []
    for arg in argv:
        if arg.startswith("-"):
            break
        words.append(arg)
    return tuple(words), {a.split("=", 1)[0] for a in argv if a.startswith("--")}


def tool(name: str, ensure: str) -> str:
    """The path of `name` (on PATH or beside this Python), or skip saying how to get it."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (deploy/{ensure}, or `make deploy-tools`)")
    return found
