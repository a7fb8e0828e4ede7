"""The rollout walk-through of `tlog dev`: a shell script the dev log writes to its home and
its banner names (`sh .tlog/rollout-demo.sh`).

A script rather than printed commands: the walk-through is a dozen commands, too many for a
banner, and a file the user can read, copy from and run as a whole. It finds the dev home from
its own path, so the same text works for every home and the README shows it verbatim
(tests/tlog/cli/test_dev_rollout.py compares them and runs it against a real `tlog dev`).

Its package is not the publish recipe's `demo`: a user who published `demo 1.0 FILE` first
would otherwise see the walk-through's own `demo 1.0` refused as a second artifact set.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT = "rollout-demo.sh"
PACKAGE = "rollout-demo"
# Two devices on different sides of the 10 % canary, both inside the 50 % stage
# (verifier.protocol.cohort.in_rollout for rollout-demo 1.1), so the widening shows.
DEVICE_IN = "phone-9"
DEVICE_LATER = "phone-4"

_HEAD = """\
#!/bin/sh
# The rollout walk-through of tlog dev (README: "Rollouts, halts and rollback"). It publishes
# rollout-demo 1.0 and 1.1, rolls 1.1 out to 10 % of devices and then to 50 %, halts it and
# yanks it back to 1.0; after each step it asks tlog-verify release what two devices may do.
# A yank is final: run it once per dev log (rm -rf the dev home for a fresh one).
set -u
LOG=@URL@
DEV=$(cd "$(dirname "$0")" && pwd)
KEY="$DEV/keys/my-publisher.key"
mkdir -p "$DEV/rollout-demo" && cd "$DEV/rollout-demo" || exit 2
[ -f "$KEY" ] || tlog keygen --name my-publisher --out "$DEV/keys" || exit 2

"""

_WAIT = """\
  # The log serves a checkpoint once the demo witness cosigned it: wait for one holding it.
  index=$(echo "$out" | sed -n 's/.* at index \\([0-9]*\\) .*/\\1/p')
  until curl -sf "$LOG/v1/checkpoints/cosigned?covering=$index" > /dev/null; do
    sleep 0.5
  done
"""

_STEPS = """\
step() {  # a tlog command, shown with its output; the walk-through stops if it fails
  echo; echo "\\$ tlog $*"
  out=$(tlog "$@" 2>&1) || { echo "$out"; exit 1; }
  echo "$out"
@WAIT@}

statement() {  # tlog rollout|halt|yank ... about rollout-demo 1.1
  kind=$1; shift
  step "$kind" --log "$LOG" --log-key "$DEV/log.vkey" --key "$KEY" \\
      --package @PACKAGE@ --version 1.1 "$@"
}

verify() {  # what an update client with each device id is told about rollout-demo 1.1 now
  for device in @DEVICE_IN@ @DEVICE_LATER@; do
    echo "\\$ tlog-verify release ... --device-id $device"
    tlog-verify release --log "$LOG" @TRUST@ \\
        --package @PACKAGE@ --version 1.1 --device-id "$device" --no-artifact 2>&1
    echo "=> $device: exit $?"
  done
}

echo "rollout-demo 1.0" > 1.0.bin && echo "rollout-demo 1.1" > 1.1.bin
for version in 1.0 1.1; do
  step publish --log "$LOG" --log-key "$DEV/log.vkey" --key "$KEY" \\
      --package @PACKAGE@ --version "$version" "$version.bin"
done
statement rollout --stage canary --percent 10 && verify
statement rollout --stage half --percent 50 && verify
statement halt --reason "crash loop on boot" && verify
statement yank --reason "data loss on upgrade" --rollback-version 1.0 && verify
"""


def rollout_script(url: str, witnessed: bool) -> str:
    """The walk-through for the dev log at `url`; with the demo witness, clients trust
    checkpoints under its policy and each step waits until one holds the step's entry."""
    trust = ('--policy "$DEV/witness-policy"' if witnessed else '--key "$DEV/log.vkey"')
    text = _HEAD + _STEPS
    for name, value in (("@URL@", url), ("@WAIT@", _WAIT if witnessed else ""),
                        ("@PACKAGE@", PACKAGE), ("@DEVICE_IN@", DEVICE_IN),
                        ("@DEVICE_LATER@", DEVICE_LATER), ("@TRUST@", trust)):
        text = text.replace(name, value)
    return text


def write_rollout_script(home: Path, url: str, witnessed: bool) -> Path:
    """home/rollout-demo.sh for this run of the dev log (its URL and witness may change)."""
    path = home / SCRIPT
    path.write_text(rollout_script(url, witnessed), encoding="utf-8")
    path.chmod(0o755)
    return path
