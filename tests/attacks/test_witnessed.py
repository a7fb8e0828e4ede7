"""Attacks that a witness policy stops, one per test, against every `tlog-verify` command.

No log server: the log is tests.witness_support.TiledLog, tlog-tiles files signed with the
log's own key (so a fork is as well signed as the truth) and cosigned by witness keys at
chosen times, read as a file: URL or served with the endpoints of a witnessed log
(v1/checkpoints/cosigned?covering=, the witnesses' read endpoints). What only witnesses can
stop: a fork or a frozen view signed by the log key itself, and a release installed before
anyone independent saw it logged.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import make_release
from tests.witness_support import Endpoints, TiledLog, cosign, policy_text, witnesses
from verifier.cli import main as cli
from verifier.client.keys import read_policy
from verifier.client.log import LogClient
from verifier.client.release import verify_release
from verifier.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, VerificationFailed
from verifier.protocol.note import generate_key
from verifier.protocol.policy import PolicyTrust
from verifier.protocol.trust import KeyTrust

LOG = generate_key("example.com/witnessed")
PUBLISHER = generate_key("acme")
W1, W2, W3 = witnesses("w1", "w2", "w3")
STRANGER = witnesses("stranger")[0]
NOW = int(time.time())
HOUR, DAY = 3600, 86400
PACKAGE = "com.acme.app"


@dataclass
class World:
    """The honest log (sizes 1 and 3, both cosigned by the quorum), its endpoints, a
    policy ("2 of w1, w2, w3", with the witnesses' URLs) and the log's key file."""

    log: TiledLog
    http: Endpoints
    policy: Path
    vkey: Path
    tmp: Path
    small: int = 1  # the sizes of the two cosigned checkpoints: 2 and 5 with map roots
    big: int = 3

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    def fork(self, name: str = "fork") -> TiledLog:
        """Another history under the same log key: the first entry differs."""
        fork = TiledLog(self.tmp / name, LOG, map_roots=self.log.map_roots)
        fork.grow([make_release(PUBLISHER, PACKAGE, "1.0", payload=b"evil")])
        fork.releases(PUBLISHER, "1.1", "1.2")
        return fork

    def receipt(self, log: TiledLog, index: int, note: str) -> Path:
        path = self.tmp / f"receipt-{len(list(self.tmp.glob('receipt-*')))}.json"
        path.write_text(json.dumps(log.receipt(index, note)))
        return path


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    # `tlog-verify release` needs the package state, so trees that end with map roots; the
    # audit and monitor do not read map-root leaves yet, so their tests go without.
    map_roots = request.node.get_closest_marker("map_roots") is not None
    small, big = (2, 5) if map_roots else (1, 3)
    log = TiledLog(tmp_path / "log", LOG, map_roots=map_roots)
    log.releases(PUBLISHER, "1.0")
    log.cosign(small, {W1: NOW - 10 * DAY, W2: NOW - 10 * DAY})
    log.releases(PUBLISHER, "1.1", "1.2")
    log.serve(log.cosign(big, {W1: NOW - HOUR, W2: NOW - HOUR, W3: NOW - HOUR}))
    http = Endpoints(log)
    urls = {w: http.witness_url(w) for w in ("w1", "w2", "w3")}
    policy = tmp_path / "policy"
    policy.write_text(policy_text(LOG, "q", [W1, W2, W3], urls, "group q 2 w1 w2 w3"))
    vkey = tmp_path / "log.vkey"
    vkey.write_text(LOG.verifier().text() + "\n")
    yield World(log, http, policy, vkey, tmp_path, small, big)
    http.close()


def release_args(w: World, log_url: str, *extra: str) -> list[str]:
    return ["release", "--log", log_url, "--policy", str(w.policy), "--package", PACKAGE,
            "--version", "1.0", "--no-artifact", "--retries", "0", *extra]


# -- a fork signed with the log's own key -----------------------------------------------------


def test_a_fork_signed_by_the_log_key_without_the_quorum_is_refused_by_every_command(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    fork = world.fork()
    fork.cosigned[3] = cosign(fork.notes[3], {W1: NOW})  # one witness was fooled
    fork.serve(fork.cosigned[3])
    served = Endpoints(fork)
    try:
        policy = ("--policy", str(world.policy))
        runs = {
            "checkpoint": ["checkpoint", "--log", fork.file_url, *policy],
            "audit": ["audit", "--log", fork.file_url, *policy, "--state",
                      str(world.tmp / "audit")],
            "bundle": ["bundle", str(world.receipt(fork, 0, fork.cosigned[3])), *policy,
                       "--no-artifact"],
            "release": release_args(world, served.log_url),
        }
        for command, argv in runs.items():
            code, out, err = world.run(capsys, *argv)
            assert (code, out) == (EXIT_FAILED, ""), command
            assert "short of quorum" in err and "cosigned by w1;" in err, command
        # The log key alone is fooled: the policy is what stops the fork.
        assert world.run(capsys, "checkpoint", "--log", fork.file_url, "--key",
                         str(world.vkey))[0] == EXIT_OK
    finally:
        served.close()


def test_a_checkpoint_one_cosignature_short_of_quorum_is_refused(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.log.serve(cosign(world.log.notes[3], {W3: NOW}))
    code, _, err = world.run(capsys, "checkpoint", "--log", world.log.file_url,
                             "--policy", str(world.policy))
    assert code == EXIT_FAILED and "short of quorum: checkpoint of size 3 is cosigned by w3;" \
        " the policy requires 2 of 3 in group q" in err
    world.log.serve(cosign(world.log.notes[3], {W3: NOW, W1: NOW}))
    code, out, _ = world.run(capsys, "checkpoint", "--log", world.log.file_url,
                             "--policy", str(world.policy))
    assert code == EXIT_OK and "size 3" in out and "cosigned by w1 at" in out


def test_cosignatures_from_unknown_keys_are_ignored_and_do_not_count(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    impostor = witnesses("w2")[0]  # w2's key name, another key
    world.log.serve(cosign(world.log.notes[3], {W1: NOW, STRANGER: NOW, impostor: NOW}))
    code, _, err = world.run(capsys, "checkpoint", "--log", world.log.file_url,
                             "--policy", str(world.policy))
    assert code == EXIT_FAILED and "short of quorum" in err and "cosigned by w1;" in err
    world.log.serve(cosign(world.log.notes[3], {W1: NOW, STRANGER: NOW, W3: NOW}))
    code, out, _ = world.run(capsys, "checkpoint", "--log", world.log.file_url,
                             "--policy", str(world.policy))
    assert code == EXIT_OK and "stranger" not in out


# -- a frozen view ----------------------------------------------------------------------------


@pytest.mark.map_roots
def test_a_stale_checkpoint_is_refused_with_max_age(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.log.serve(world.log.cosigned[world.small])  # frozen ten days ago
    for argv in (["checkpoint", "--log", world.log.file_url, "--policy", str(world.policy)],
                 release_args(world, world.http.log_url),
                 ["audit", "--log", world.log.file_url, "--policy", str(world.policy),
                  "--state", str(world.tmp / "audit")],
                 ["bundle", str(world.receipt(world.log, 0, world.log.cosigned[world.small])),
                  "--policy", str(world.policy), "--no-artifact"]):
        code, out, err = world.run(capsys, *argv, "--max-age", "1d")
        assert (code, out) == (EXIT_FAILED, ""), argv[0]
        assert f"stale: the quorum cosigned checkpoint of size {world.small}" in err, argv[0]
        assert world.run(capsys, *argv, "--max-age", "11d")[0] == EXIT_OK, argv[0]


@pytest.mark.map_roots
def test_a_stored_checkpoint_is_reopened_without_its_age_and_a_rollback_is_refused(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    state = world.tmp / "state"
    world.log.serve(world.log.cosigned[world.small])
    assert world.run(capsys, *release_args(world, world.http.log_url, "--state", str(state),
                                           "--max-age", "11d"))[0] == EXIT_OK
    # The stored checkpoint (ten days old) is the baseline, not the current view.
    world.log.serve(world.log.cosigned[world.big])
    assert world.run(capsys, *release_args(world, world.http.log_url, "--state", str(state),
                                           "--max-age", "1d"))[0] == EXIT_OK
    assert (state / "checkpoint").read_text() == world.log.cosigned[world.big]
    # Back to the older, still validly cosigned checkpoint: a rollback.
    world.log.serve(world.log.cosigned[world.small])
    code, out, err = world.run(capsys, *release_args(world, world.http.log_url, "--state",
                                                     str(state)))
    assert (code, out) == (EXIT_FAILED, "") and "rollback" in err
    code, _, err = world.run(capsys, "audit", "--log", world.log.file_url, "--policy",
                             str(world.policy), "--state", str(state))
    assert code == EXIT_FAILED and "rollback" in err


@pytest.mark.map_roots
def test_a_bundle_whose_package_state_is_older_than_max_age_is_refused(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A bundle carries the package state as of its checkpoint: a halt logged since does not
    show in it, so --max-age bounds how old that checkpoint (and so the state) may be."""
    world.log.serve(world.log.cosigned[world.small])  # frozen ten days ago
    bundle = world.tmp / "bundle.json"
    code, _, err = world.run(capsys, *release_args(world, world.http.log_url, "--max-age",
                                                   "11d", "--write-bundle", str(bundle)))
    assert code == EXIT_OK, err
    receipt = json.loads(bundle.read_text())
    assert receipt["package_state"]["state"]["releases"][0]["version"] == "1.0"
    args = ["bundle", str(bundle), "--policy", str(world.policy), "--no-artifact",
            "--device-id", "device-1"]
    code, out, err = world.run(capsys, *args, "--max-age", "1d")
    assert (code, out) == (EXIT_FAILED, "") and "stale" in err
    code, out, err = world.run(capsys, *args, "--max-age", "11d")
    assert code == EXIT_OK and "no rollout, halt or yank statement" in out, err


# -- the witnessed cooldown -------------------------------------------------------------------


def test_a_release_inside_its_cooldown_is_refused_offline(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    fresh = world.receipt(world.log, 0, world.log.cosigned[3])  # cosigned an hour ago
    args = ["bundle", str(fresh), "--policy", str(world.policy), "--no-artifact"]
    code, out, err = world.run(capsys, *args, "--min-age", "1d")
    assert (code, out) == (EXIT_FAILED, "")
    found = re.search(r"too new: the quorum cosigned checkpoint of size 3 only (\d+) s ago, "
                      r"less than the cooldown of 86400 s", err)
    # An hour before NOW, which was read when the module was imported (a long session ago)
    assert found and HOUR <= int(found[1]) <= HOUR + time.time() - NOW + 1, err
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + DAY))
    assert world.run(capsys, *args, "--min-age", "1d", "--now", later)[0] == EXIT_OK
    # A receipt written before the quorum cosigned carries no witnessed time.
    uncosigned = world.receipt(world.log, 0, world.log.notes[3])
    code, _, err = world.run(capsys, "bundle", str(uncosigned), "--policy",
                             str(world.policy), "--no-artifact", "--min-age", "1d")
    assert code == EXIT_FAILED and "short of quorum" in err


@pytest.mark.map_roots
def test_a_release_inside_its_cooldown_is_refused_online(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # Entry 2 (version 1.1, after 1.0's map root) was first cosigned an hour ago, in the
    # checkpoint of size 5.
    args = release_args(world, world.http.log_url, "--min-age", "1d")
    args[args.index("1.0")] = "1.1"
    code, out, err = world.run(capsys, *args)
    assert (code, out) == (EXIT_FAILED, "") and "too new" in err
    assert "/log/v1/checkpoints/cosigned?covering=2" in world.http.requests
    # Entry 0 has been in a cosigned checkpoint (size 2) for ten days.
    code, out, _ = world.run(capsys, *release_args(world, world.http.log_url,
                                                   "--min-age", "1d"))
    assert code == EXIT_OK and out.startswith("OK com.acme.app 1.0")


@pytest.mark.map_roots
def test_a_release_no_cosigned_checkpoint_holds_yet_is_too_new(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.log.releases(PUBLISHER, "1.3")  # entry 5, then a map root: size 7
    world.log.serve(world.log.cosign(7, {W1: NOW, W2: NOW}))
    del world.log.cosigned[7]  # the log has not recorded it as cosigned yet
    args = release_args(world, world.http.log_url, "--min-age", "0s")
    args[args.index("1.0")] = "1.3"
    code, _, err = world.run(capsys, *args)
    assert code == EXIT_FAILED and "too new: the log has no quorum-cosigned checkpoint " \
                                   "holding entry 5" in err


@pytest.mark.map_roots
def test_a_cooled_down_checkpoint_of_another_branch_does_not_vouch_for_a_release(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The log names an old checkpoint cosigned by colluding witnesses on a fork: it is old
    enough, but it does not hold the release the log proved, nor extend what it shows."""
    fork = world.fork()
    world.log.cosigned = {5: fork.cosign(5, {W1: NOW - 9 * DAY, W2: NOW - 9 * DAY})}
    state = world.tmp / "state"
    code, out, err = world.run(capsys, *release_args(world, world.http.log_url,
                                                     "--min-age", "1d", "--state", str(state)))
    assert (code, out) == (EXIT_FAILED, "")
    assert "fork: two different roots signed for size 5; evidence saved in" in err
    (evidence,) = (state / "evidence").iterdir()
    assert fork.cosigned[5] in {(evidence / n).read_text()
                                for n in ("old-checkpoint", "new-checkpoint")}
    # Smaller than the checkpoint the release was proven in, and not a prefix of it.
    world.log.cosigned = {2: fork.cosign(2, {W1: NOW - 9 * DAY, W2: NOW - 9 * DAY})}
    code, _, err = world.run(capsys, *release_args(world, world.http.log_url,
                                                   "--min-age", "1d"))
    assert code == EXIT_FAILED and "inconsistent: size 5 does not extend size 2" in err


# -- the monitor asks the witnesses -----------------------------------------------------------


def monitor(world: World, capsys: pytest.CaptureFixture[str],
            state: str = "monitor") -> tuple[int, list[dict[str, object]], str]:
    code, out, err = world.run(capsys, "monitor", "--log", world.http.log_url, "--policy",
                               str(world.policy), "--state", str(world.tmp / state),
                               "--workers", "0", "--retries", "0")
    return code, [json.loads(line) for line in out.splitlines()], err


def test_the_monitor_alerts_when_a_witness_view_is_a_fork_of_the_log(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.http.views["w1"] = world.log.cosigned[1]  # behind, consistent
    world.http.views["w2"] = world.log.cosigned[3]  # the same
    fork = world.fork()
    world.http.views["w3"] = cosign(fork.notes[3], {W3: NOW})  # what a victim was shown
    code, events, _ = monitor(world, capsys)
    assert code == EXIT_FAILED
    (alert,) = [e for e in events if e["type"] == "alert"]
    assert alert["alert"] == "witness_view_disagrees" and alert["witness"] == "w3"
    assert "fork: two different roots signed for size 3" in str(alert["message"])
    evidence = Path(str(alert["evidence"]))
    assert (evidence / "witness-view").read_text() == world.http.views["w3"]
    assert {p.name for p in evidence.iterdir()} >= {"old-checkpoint", "new-checkpoint",
                                                   "reason.txt", "witness.txt"}


def test_the_monitor_alerts_when_a_larger_witness_view_is_not_an_extension(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    fork = world.fork()
    fork.releases(PUBLISHER, "1.3")
    world.log.releases(PUBLISHER, "1.3")  # the log has tiles for size 4: another history
    world.http.views["w1"] = cosign(fork.notes[4], {W1: NOW})
    code, events, _ = monitor(world, capsys)
    assert code == EXIT_FAILED
    (alert,) = [e for e in events if e["type"] == "alert"]
    assert alert["alert"] == "witness_view_disagrees" and "size 4 does not extend size 3" in \
        str(alert["message"])


def test_the_monitor_only_warns_about_unreachable_or_useless_witnesses(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.log.end_batch()  # the monitor checks that the checkpoint ends with a map root
    world.log.serve(world.log.cosign(4, {W1: NOW, W2: NOW, W3: NOW}))
    world.http.views["w1"] = world.log.cosigned[3]
    world.http.views["w2"] = cosign(world.log.notes[3], {W1: NOW})  # not w2's cosignature
    world.policy.write_text(world.policy.read_text().replace(
        world.http.witness_url("w3"), "http://127.0.0.1:9/"))
    code, events, err = monitor(world, capsys)
    assert code == EXIT_OK and [e["type"] for e in events] == ["release"] * 3
    assert "warning: witness w2:" in err and "no cosignature by w2" in err
    assert "warning: witness w3:" in err


def test_the_monitor_refuses_a_checkpoint_short_of_quorum(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.log.serve(cosign(world.log.notes[3], {W1: NOW}))
    code, events, err = monitor(world, capsys)
    assert code == EXIT_FAILED and events == [] and "short of quorum" in err


# -- usage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "message"), [
    (["--max-age", "1d"], "--max-age needs --policy"),
    (["--min-age", "1d"], "--min-age needs --policy"),
])
def test_ages_without_a_policy_are_usage_errors(
        world: World, capsys: pytest.CaptureFixture[str], extra: list[str],
        message: str) -> None:
    receipt = world.receipt(world.log, 0, world.log.cosigned[3])
    code, _, err = world.run(capsys, "bundle", str(receipt), "--key", str(world.vkey),
                             "--no-artifact", *extra)
    assert code == EXIT_USAGE and message in err


def test_policy_usage_errors_exit_2_naming_the_problem(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    other = generate_key("example.com/other")
    other_vkey = world.tmp / "other.vkey"
    other_vkey.write_text(other.verifier().text() + "\n")
    two_logs = world.tmp / "two-logs"
    two_logs.write_text(f"log {other.verifier().text()}\n" + world.policy.read_text())
    broken = world.tmp / "broken"
    broken.write_text("log nonsense\nquorum none\n")
    base = ["checkpoint", "--log", world.log.file_url]
    cases = [
        ([], "give the log's verifier key with --key, or a witness policy"),
        (["--policy", str(world.policy), "--max-age", "soon"], "--max-age: duration 'soon'"),
        (["--policy", str(world.policy), "--max-age=-1d"], "--max-age: duration"),
        (["--policy", str(two_logs)], "lists 2 logs; name the one to use by its key"),
        (["--policy", str(world.policy), "--key", str(other_vkey)],
         "example.com/other is not one of the policy's logs"),
        (["--policy", str(broken)], f"{broken}: line 1: log vkey"),
        (["--policy", str(world.tmp / "missing")], "couldn't read the witness policy"),
    ]
    for extra, message in cases:
        code, out, err = world.run(capsys, *base, *extra)
        assert (code, out) == (EXIT_USAGE, ""), extra
        assert message in err, (extra, err)
    # Both given, the key one of the policy's logs: fine, and so is the log's own choice.
    assert world.run(capsys, *base, "--policy", str(two_logs), "--key",
                     str(world.vkey))[0] == EXIT_OK


def test_a_state_kept_without_a_policy_is_the_baseline_under_one(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Turning --policy on keeps the rollback protection of the stored checkpoint."""
    state = world.tmp / "state"
    world.log.serve(world.log.notes[3])
    audit = ["audit", "--log", world.log.file_url, "--state", str(state)]
    assert world.run(capsys, *audit, "--key", str(world.vkey))[0] == EXIT_OK
    world.log.serve(world.log.cosigned[1])
    code, _, err = world.run(capsys, *audit, "--policy", str(world.policy))
    assert code == EXIT_FAILED and "rollback" in err
    world.log.serve(world.log.cosigned[3])
    assert world.run(capsys, *audit, "--policy", str(world.policy))[0] == EXIT_OK


@pytest.mark.map_roots
def test_an_updater_calling_the_library_gets_the_same_cooldown(world: World) -> None:
    trust = PolicyTrust.for_log(read_policy(world.policy))
    client = LogClient(world.http.log_url, retries=0)
    with pytest.raises(VerificationFailed, match="too new"):
        verify_release(client, trust, PACKAGE, "1.1", min_age=DAY)
    assert verify_release(client, trust, PACKAGE, "1.0", min_age=DAY).release.version == "1.0"
    with pytest.raises(UsageError, match="needs a witness policy"):
        verify_release(client, KeyTrust(LOG.verifier()), PACKAGE, "1.0", min_age=DAY)


# -- a freeze that begins while a monitor follows the log ----------------------------------


def test_a_following_monitor_alerts_a_frozen_view_once_and_goes_on(world: World) -> None:
    """The freeze is measured against the clock of each round, not the monitor's start: a
    stale view is alerted once (checkpoint_stale) and the monitor keeps following."""
    world.log.serve(world.log.cosigned[world.small])  # frozen ten days ago
    proc = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "monitor", "--log", world.http.log_url,
         "--policy", str(world.policy), "--state", str(world.tmp / "state"), "--follow",
         "--interval", "0.1", "--max-age", "1d", "--workers", "0", "--retries", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert (first["type"], first["alert"]) == ("alert", "checkpoint_stale")
        assert "stale" in first["message"]
        time.sleep(0.5)  # several rounds, still stale: no second alert
        world.log.end_batch()  # the log moves on (ending its batch), freshly cosigned
        world.log.serve(world.log.cosign(4, {W1: NOW, W2: NOW, W3: NOW}))
        later = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert [e["type"] for e in later] == ["release"] * 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_cosignature_dated_in_the_future_does_not_count(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A witness whose clock runs ahead cannot make a frozen view look fresh: beyond the
    allowed skew its cosignature is ignored, so this note is one short of the quorum."""
    world.log.serve(cosign(world.log.notes[3], {W1: NOW - HOUR, W2: NOW + 10 * DAY}))
    code, _, err = world.run(capsys, "checkpoint", "--log", world.log.file_url, "--policy",
                             str(world.policy), "--max-age", "1d")
    assert code == EXIT_FAILED
    assert "short of quorum" in err and "w2 ignored: dated more than 600 s ahead" in err
