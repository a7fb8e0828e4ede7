"""deploy/systemd: the units load (`systemd-analyze verify`, with ExecStart pointed at this
checkout's commands), their sandboxing keeps its `systemd-analyze security` exposure score
(1.1 each when written; the threshold fails the test on any loosening), and every option
they pass exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, command_options, options_of, tool

UNITS = DEPLOY / "systemd"
# The score is tenths of the 0-10 exposure scale: 11 is 1.1 ("OK").
THRESHOLD = 11
# What a log or witness must keep (it serves the network; asyncio needs a socketpair; the
# program lives in the host's root): every other check systemd-analyze makes must pass. The
# score alone is too coarse to notice one protection dropped (MemoryDenyWriteExecute is 0.1
# of it, lost in rounding), so the test names the checks left exposed.
EXPOSED = {"RootDirectory=/RootImage=", "RestrictAddressFamilies=~AF_UNIX",
           "RestrictAddressFamilies=~AF_(INET|INET6)", "PrivateNetwork=", "DeviceAllow=",
           "IPAddressDeny="}


def analyze() -> str:
    return tool("systemd-analyze", "ensure-systemd.sh")


def exposed(report: str) -> set[str]:
    """The checks a `systemd-analyze security` report marks as failed (✗)."""
    return {line.split()[1] for line in report.splitlines() if line.startswith("\u2717 ")}


@pytest.mark.parametrize("unit", ["tlog.service", "tlog-witness.service"])
def test_the_sandboxing_keeps_its_exposure_score(unit: str) -> None:
    run = subprocess.run([analyze(), "security", "--offline=true", f"--threshold={THRESHOLD}",
                          str(UNITS / unit)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert re.search(r"Overall exposure level for \S+: 1\.[01] OK", run.stdout), run.stdout[-300:]
    assert exposed(run.stdout) == EXPOSED


def test_dropping_one_protection_is_noticed(tmp_path: Path) -> None:
    """The check above is not blind to a single loosening the score rounds away."""
    unit = tmp_path / "tlog.service"
    text = (UNITS / "tlog.service").read_text()
    unit.write_text(text.replace("MemoryDenyWriteExecute=yes\n", ""))
    run = subprocess.run([analyze(), "security", "--offline=true", str(unit)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert exposed(run.stdout) == EXPOSED | {"MemoryDenyWriteExecute="}


@pytest.mark.parametrize("unit", ["tlog.service", "tlog-witness.service"])
def test_the_unit_loads(unit: str, tmp_path: Path) -> None:
    """verify wants ExecStart's program to exist: this checkout's venv has the same ones."""
    here = tmp_path / unit
    bin_dir = Path(sys.executable).parent
    here.write_text((UNITS / unit).read_text().replace("/opt/tlog/bin/", f"{bin_dir}/"))
    run = subprocess.run([analyze(), "verify", str(here)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("unit", ["tlog.service", "tlog-witness.service"])
def test_every_option_given_exists(unit: str) -> None:
    text = re.sub(r"\\\n\s*", " ", (UNITS / unit).read_text())
    start = re.search(r"^ExecStart=(\S+) (.*)$", text, re.M)
    assert start is not None
    program = Path(start.group(1)).name
    words, given = command_options(start.group(2).split())
    assert given <= options_of(program, *words), start.group(0)
