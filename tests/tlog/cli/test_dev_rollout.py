"""`make run` end to end for issue 11: the rollout walk-through `tlog dev` writes and names
in its banner, run as printed against a real dev log with its demo witness."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.tlog.cli.test_dev import _line, _run, running_dev
from tlog.cli.devdemo import DEVICE_IN, DEVICE_LATER, PACKAGE, rollout_script
from verifier.protocol.cohort import in_rollout

README = Path(__file__).resolve().parents[3] / "README.md"


def _decisions(output: str) -> list[tuple[str, int, str]]:
    """(device, exit code, what tlog-verify said) for each verify in the walk-through."""
    found = []
    for block in re.finditer(r"^\$ tlog-verify release \.\.\. --device-id (\S+)\n(.*?)"
                             r"^=> \1: exit (\d+)$", output, re.S | re.M):
        found.append((block.group(1), int(block.group(3)), block.group(2)))
    return found


def test_the_devices_sit_on_both_sides_of_the_canary_and_inside_the_wider_stage() -> None:
    assert in_rollout(DEVICE_IN, PACKAGE, "1.1", 10)
    assert not in_rollout(DEVICE_LATER, PACKAGE, "1.1", 10)
    assert in_rollout(DEVICE_LATER, PACKAGE, "1.1", 50)


def test_readme_shows_the_walk_through_make_run_writes() -> None:
    text = README.read_text(encoding="utf-8")
    assert rollout_script("http://127.0.0.1:8080", witnessed=True) in text


def test_without_a_witness_the_walk_through_pins_the_log_key_and_does_not_wait() -> None:
    script = rollout_script("http://127.0.0.1:8080", witnessed=False)
    assert '--key "$DEV/log.vkey"' in script and "--policy" not in script
    assert "cosigned" not in script


def test_make_run_rollout_walk_through_shows_each_decision(searchable_dir: Path) -> None:
    """Published, rolled out to 10 % (one device in, one out), widened to 50 % (both in),
    halted (both refused), yanked (both refused and sent back to 1.0): each decision as an
    update client sees it, from the proven state of a witnessed checkpoint."""
    home = searchable_dir / "my dev"  # a space: the script quotes its paths
    with running_dev(home) as dev:
        command = _line(dev.banner, "rollout demo:")
        assert command == f"sh {shlex.quote(str(home / 'rollout-demo.sh'))}"
        done = _run(command, searchable_dir)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert f"logged {PACKAGE} 1.0 at index 0" in out
        assert "logged yank/v1 for rollout-demo 1.1" in out
        got = _decisions(done.stdout)
        assert [(device, code) for device, code, _ in got] == [
            (DEVICE_IN, 0), (DEVICE_LATER, 1),  # canary, 10 %
            (DEVICE_IN, 0), (DEVICE_LATER, 0),  # 50 %: the canary device stays in
            (DEVICE_IN, 1), (DEVICE_LATER, 1),  # halted
            (DEVICE_IN, 1), (DEVICE_LATER, 1),  # yanked
        ], out
        said = [text for _, _, text in got]
        assert all("allowed" in said[i] or "in rollout" in said[i] for i in (0, 2, 3)), said
        assert "outside_rollout" in said[1]
        assert all("halted" in text for text in said[4:6]), said
        for text in said[6:]:
            assert "yanked" in text and "1.0" in text.split("yanked", 1)[1], text
