"""Attacks by a hostile log, or a hostile mirror of receipts, on `tlog-verify`, one per test.

Each test is named after the attack it stops. The log is tests.evil_log: an in-memory C2SP
tlog-tiles log that lies about its tree or abuses the transport on demand. Under attack the
client must exit non-zero with the exit code of the blame (1: verification failed or the log
was caught, 3: transport) and print no "OK"; it must never crash, hang, or let a response
take more than a bounded amount of time and memory.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.attacks.evil_log import (
    CHECKPOINT,
    ENTRIES,
    PACKAGE_STATE,
    SEARCH,
    TILE,
    Abuse,
    EvilLog,
    serve_evil_log,
)
from tests.audit_support import honest_map_root
from tests.conftest import REPO
from tests.support import free_port, make_release, release_fields
from verifier.cli.main import build_parser, main
from verifier.client.log import MAX_BUNDLE_BYTES, MAX_JSON_BYTES, LogClient
from verifier.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    TransportError,
    VerifyError,
)
from verifier.protocol.entries.kinds import validate_log_entry
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import MAX_NOTE_SIZE, Signer, generate_key
from verifier.protocol.tiles import tile_path
from verifier.protocol.trust import KeyTrust

PACKAGE = "com.acme.app"
OTHER = "org.other.lib"
ARTIFACT = b"com.acme.app 1.1, the real build\n" * 64
INDEX = 2
"""Where the log holds PACKAGE 1.1, the release most tests ask about."""
FILLER = generate_key("other-team-bot")
WINDOW = {"not_before": "2026-01-01T00:00:00Z", "not_after": "2026-02-01T00:00:00Z"}


# -- running the client ----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    seconds: float


def tlog_verify(*argv: str | Path, within: float = 10.0) -> Run:
    """Run `tlog-verify` in this process; fail if it crashes or is still running `within` s."""
    args = [str(a) for a in argv]
    codes: list[int] = []
    crashes: list[BaseException] = []

    def run() -> None:
        try:
            codes.append(main(args))
        except SystemExit as exc:
            codes.append(exc.code if isinstance(exc.code, int) else 2)
        except BaseException as exc:
            crashes.append(exc)

    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    with redirect_stdout(out), redirect_stderr(err):
        worker.start()
        worker.join(within)
    seconds = time.monotonic() - started
    assert not worker.is_alive(), f"tlog-verify {' '.join(args)} still running after {within} s"
    if crashes:
        raise AssertionError(f"tlog-verify {' '.join(args)} crashed: {crashes[0]!r}") \
            from crashes[0]
    return Run(codes[0], out.getvalue(), err.getvalue(), seconds)


def assert_refused(run: Run, code: int = EXIT_FAILED, why: str = "") -> None:
    """Exit `code`, a FAIL line on stderr mentioning `why`, and no OK anywhere on stdout."""
    assert run.code == code, f"exit {run.code}, want {code}\nstdout:\n{run.out}\nstderr:\n{run.err}"
    assert "OK" not in run.out, run.out
    assert "FAIL" in run.err, run.err
    assert why in run.err, run.err


def assert_verified(run: Run) -> None:
    assert run.code == EXIT_OK, run.err
    assert run.out.startswith("OK "), run.out


def within_seconds(seconds: float, fn: Callable[[], object]) -> BaseException | None:
    """Call fn() in a thread; fail unless it ends within `seconds`; return what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return raised[0] if raised else None


# -- the log and its releases ------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """An evil log holding five releases, the pinned keys, and the real artifact of 1.1."""

    log: EvilLog
    publisher: Signer
    publisher_vkey: Path
    artifact: Path
    tmp: Path

    def online(self, command: str, *args: str | Path, url: str | None = None,
               timeout: float = 2.0, retries: int = 0) -> list[str | Path]:
        return [command, "--log", url or self.log.url, "--key", self.log.vkey_path,
                "--timeout", str(timeout), "--retries", str(retries), *args]

    def release(self, version: str = "1.1", *args: str | Path, url: str | None = None,
                state: Path | None = None, within: float = 10.0) -> Run:
        """`tlog-verify release` of PACKAGE `version`, pinning the publisher, with the artifact."""
        extra: list[str | Path] = ["--state", state] if state is not None else []
        return tlog_verify(*self.online(
            "release", "--package", PACKAGE, "--version", version,
            "--publisher", self.publisher_vkey, "--artifact", self.artifact, *extra, *args,
            url=url), within=within)

    def receipt_file(self, index: int = INDEX, name: str = "receipt.json") -> Path:
        """The receipt of entry `index`, written the way `tlog publish` writes it."""
        path = self.tmp / name
        path.write_text(json.dumps(self.log.tree.receipt(index), indent=2) + "\n")
        return path

    def bundle_args(self, receipt: Path, *args: str | Path, artifact: Path | None = None,
                    publisher: Path | None = None) -> list[str | Path]:
        return ["bundle", receipt, "--key", self.log.vkey_path,
                "--publisher", publisher or self.publisher_vkey,
                "--artifact", artifact or self.artifact, *args]

    def bundle(self, receipt: Path, *args: str | Path, artifact: Path | None = None,
               publisher: Path | None = None) -> Run:
        """`tlog-verify bundle` of `receipt`, pinning the publisher, with the artifact."""
        return tlog_verify(*self.bundle_args(receipt, *args, artifact=artifact,
                                             publisher=publisher))


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path, log_signer: Signer,
          publisher: Signer) -> Iterator[World]:
    vkey = tmp_path / "publisher.vkey"
    vkey.write_text(publisher.verifier().text() + "\n")
    artifact = tmp_path / "app-1.1.tar.gz"
    artifact.write_bytes(ARTIFACT)
    with serve_evil_log(log_signer, tmp_path) as log:
        log.tree.map_roots = request.node.get_closest_marker("no_map_roots") is None
        log.append(make_release(publisher, OTHER, "1.0"),
                   make_release(publisher, PACKAGE, "1.0"),
                   make_release(publisher, PACKAGE, "1.1", payload=ARTIFACT),
                   make_release(publisher, OTHER, "2.0"),
                   make_release(publisher, PACKAGE, "1.2"))
        yield World(log, publisher, vkey, artifact, tmp_path)


@functools.cache
def filler(tag: str, count: int) -> tuple[bytes, ...]:
    """`count` leaves of releases of OTHER (versions tag.0, tag.1, ...) to grow a tree with."""
    return tuple(validate_entry(make_release(FILLER, OTHER, f"{tag}.{i}")).leaf
                 for i in range(count))


def test_honest_log_is_verified(world: World) -> None:
    assert_verified(world.release())
    assert_verified(world.bundle(world.receipt_file()))
    run = tlog_verify(*world.online("checkpoint"))
    assert run.code == EXIT_OK and "size 6" in run.out  # five releases, then a map root


# -- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_signed_by_another_key_is_rejected(world: World, log_signer: Signer) -> None:
    world.log.sign_checkpoints_with(generate_key(log_signer.name))
    assert_refused(tlog_verify(*world.online("checkpoint")), why="pinned key")
    assert_refused(world.release(), why="pinned key")


def test_checkpoint_for_another_origin_is_rejected(world: World) -> None:
    world.log.sign_checkpoints_with(generate_key("evil.example.org/log"))
    assert_refused(tlog_verify(*world.online("checkpoint")), why="pinned key")


def test_checkpoint_without_signature_is_rejected(world: World) -> None:
    world.log.strip_checkpoint_signature()
    assert_refused(tlog_verify(*world.online("checkpoint")), why="pinned key")
    assert_refused(world.release(), why="pinned key")


# -- forks and rollbacks, caught by a client that keeps state ------------------------------------


@pytest.mark.parametrize("fork_size", [6, 7, 520], ids=["same-size", "one-more", "three-tiles"])
def test_forked_tree_shown_to_one_client_is_caught_by_release_state(
        world: World, fork_size: int) -> None:
    victim, bystander = world.tmp / "victim", world.tmp / "bystander"
    assert_verified(world.release(state=victim))
    honest = world.log.tree.note
    forked = world.log.fork_for("victim", keep=3)
    forked.append_leaves([validate_entry(make_release(world.publisher, PACKAGE, "1.3")).leaf,
                          *filler("fork", fork_size - 5)])  # and a map root: fork_size

    run = world.release("1.3", url=world.log.url_for("victim"), state=victim)

    assert_refused(run, why="fork" if fork_size == 6 else "inconsistent")
    assert (victim / "checkpoint").read_text() == honest
    [evidence] = (victim / "evidence").iterdir()
    assert (evidence / "old-checkpoint").read_text() == honest
    assert (evidence / "new-checkpoint").read_text() == forked.note
    assert_verified(world.release(state=bystander))


def test_rollback_is_caught(world: World) -> None:
    state = world.tmp / "state"
    assert_verified(world.release(state=state))
    world.log.tree.append_leaves(filler("3", 1))
    assert_verified(world.release(state=state))
    newest = world.log.tree.note

    world.log.roll_back(6)
    run = world.release(state=state)

    assert_refused(run, why="rollback")
    assert (state / "checkpoint").read_text() == newest


def test_tile_not_matching_the_root_fails_consistency_check(world: World) -> None:
    state = world.tmp / "state"
    assert_verified(world.release(state=state))
    world.log.tree.append_leaves(filler("3", 4))
    world.log.corrupt_tile(0, 0, 32 * 5)
    assert_refused(world.release(state=state), why="inconsistent")


@pytest.mark.parametrize("proof", ["inclusion", "consistency"])
def test_tile_corrupted_once_does_not_poison_the_cache(world: World, proof: str) -> None:
    state = world.tmp / "state"
    world.log.tree.append_leaves(filler("more", 300))
    if proof == "inclusion":
        corrupted = 0
        world.log.corrupt_tile(0, 0, 32 * (INDEX + 1))
        assert_refused(world.release(state=state), why="not proven")
    else:
        corrupted = 1
        assert_verified(world.release(state=state))
        world.log.tree.append_leaves(filler("later", 300))
        world.log.corrupt_tile(0, 1, 32 * 49)
        assert_refused(world.release(state=state), why="inconsistent")
    assert not (state / "tiles" / tile_path(0, corrupted)).exists()

    world.log.heal()

    assert_verified(world.release(state=state))


PROXY_ERROR_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"


@pytest.mark.parametrize("proof", ["inclusion", "consistency"])
def test_one_wrong_length_tile_answer_does_not_poison_the_cache(world: World, proof: str) -> None:
    # A proxy's error page, with status 200, in place of every tile, for one run.
    state = world.tmp / "state"
    world.log.tree.append_leaves(filler("more", 300))
    if proof == "consistency":
        assert_verified(world.release(state=state))
        world.log.tree.append_leaves(filler("later", 300))
    world.log.serve_body(TILE, PROXY_ERROR_PAGE)
    assert_refused(world.release(state=state), why="bytes, not")
    cached = [p for p in (state / "tiles").rglob("*") if p.is_file() and "entries" not in p.parts]
    assert all(p.stat().st_size == 32 * 256 for p in cached), cached

    world.log.heal()

    assert_verified(world.release(state=state))
    assert_verified(world.release(state=state))  # and again, from the cache


# -- tiles, entry bundles and search answers that do not match the signed root ------------------


@pytest.mark.parametrize("offset", [0, 63, 96, 159])
def test_tile_not_matching_the_root_fails_release_check(world: World, offset: int) -> None:
    # The proofs of entry 2 and of the map root (entry 5) in a tree of 6 use leaf hashes 0-5.
    world.log.corrupt_tile(0, 0, offset)
    assert_refused(world.release(), why="not proven")


def test_entry_bundle_not_matching_the_root_is_caught(world: World) -> None:
    evil_bytes = b"com.acme.app 1.1, with a backdoor\n" * 64
    evil_artifact = world.tmp / "app-1.1-evil.tar.gz"
    evil_artifact.write_bytes(evil_bytes)
    evil = make_release(world.publisher, PACKAGE, "1.1", payload=evil_bytes)
    world.log.swap_entry(INDEX, validate_entry(evil).leaf)

    assert_refused(world.release("1.1", "--artifact", evil_artifact), why="not proven")
    assert_refused(world.release(), why="not proven")


def test_entry_bundle_holding_another_release_does_not_verify(world: World) -> None:
    world.log.swap_entry(INDEX, world.log.tree.leaves[4])
    assert_refused(world.release(), why="not proven")


@pytest.mark.parametrize("cut", [1, 2, 300, -1], ids=["1-byte", "2-bytes", "an-entry", "extra"])
def test_truncated_bundle_is_rejected(world: World, cut: int) -> None:
    world.log.cut_bundles(cut)
    assert_refused(world.release(), why="entry bundle")


def test_search_hints_are_not_what_the_client_goes_by(world: World) -> None:
    """The release is found through the proven package state: search answers that point
    elsewhere (or nowhere) change nothing."""
    world.log.point_search_at([0, 3, 99])
    assert_verified(world.release())
    assert world.log.count(SEARCH) == 0


def halted(world: World) -> dict[str, Any]:
    """Halt 1.1 in the log; the honest package-state answer (as of the halt) is returned."""
    halt = sign_entry({"kind": "halt/v1", "package": PACKAGE, "version": "1.1",
                       "reason": "crash loop"}, world.publisher)
    world.log.tree.append_leaves([validate_log_entry(halt).leaf])
    answer = world.log.tree.package_state(PACKAGE, world.log.tree.size)
    assert answer is not None and answer["state"]["lifecycle"]["1.1"]["kind"] == "halt/v1"
    return answer


def test_a_halt_the_log_leaves_out_of_its_answer_is_caught(world: World) -> None:
    answer = halted(world)
    assert_refused(world.release(), why="halted")
    dropped = {**answer, "state": {**answer["state"], "lifecycle": {}}}
    world.log.serve_body(PACKAGE_STATE, json.dumps(dropped).encode())
    run = world.release()
    assert_refused(run, why="does not prove")
    assert "halted" not in run.err


def test_the_state_of_an_older_size_is_refused(world: World) -> None:
    """A log that answers with the state before the halt (a map root it did publish, but not
    the one that ends the client's checkpoint) is caught whatever it claims the size is."""
    before = world.log.tree.package_state(PACKAGE, world.log.tree.size)
    answer = halted(world)
    assert before is not None
    world.log.serve_body(PACKAGE_STATE, json.dumps(before).encode())
    assert_refused(world.release(), why="when asked for")
    world.log.serve_body(PACKAGE_STATE, json.dumps({**before, "size": answer["size"]}).encode())
    assert_refused(world.release(), why="does not prove")


def test_a_tree_not_ending_with_a_map_root_is_refused(world: World) -> None:
    """Entries appended without a map root after them: the checkpoint's last leaf is no map
    root, so no state can be proven against it, whatever the log answers."""
    before = world.log.tree.package_state(PACKAGE, world.log.tree.size)
    assert before is not None
    world.log.tree.append_leaves(filler("bare", 1), map_root=False)
    assert_refused(world.release(), why="cannot prove the state")
    world.log.serve_body(PACKAGE_STATE, json.dumps({**before, "size": 7}).encode())
    assert_refused(world.release(), why="map root entry: members")  # leaf 6 is a release


def test_an_earlier_map_root_at_the_end_of_the_tree_is_refused(world: World) -> None:
    """A log that ends its tree with a copy of an earlier map root (one from before a halt,
    say) commits to a root that does not cover the entries before it: refused."""
    before = world.log.tree.package_state(PACKAGE, world.log.tree.size)
    assert before is not None
    halted(world)
    world.log.tree.append_leaves([world.log.tree.leaves[5]], map_root=False)
    world.log.serve_body(PACKAGE_STATE, json.dumps({**before, "size": 9}).encode())
    run = world.release()
    assert_refused(run, why="map root entry covers 5 entries, not the 8 before it")


@pytest.mark.parametrize("body, code", [
    (b"<html>not json</html>", EXIT_TRANSPORT),
    (b"[]", EXIT_TRANSPORT),
    (b"[" * 100_000 + b"]" * 100_000, EXIT_TRANSPORT),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, EXIT_TRANSPORT),
    (b'{"package": "com.acme.other", "size": 6, "state": null, "proof": ""}', EXIT_FAILED),
    (b'{"package": "com.acme.app", "size": 6, "state": 5, "proof": ""}', EXIT_FAILED),
    (b'{"package": "com.acme.app", "size": 6, "state": null, "proof": "!"}', EXIT_FAILED),
    (b'{"package": "com.acme.app", "size": 6, "state": null, "proof": ""}', EXIT_FAILED),
], ids=["html", "array", "deep-array", "deep-object", "other-package", "number", "bad-base64",
        "absent"])
def test_malformed_package_state_answer_is_rejected(world: World, body: bytes,
                                                    code: int) -> None:
    world.log.serve_body(PACKAGE_STATE, body)
    assert_refused(world.release(), code)


def test_proving_a_release_costs_one_fetch_per_bundle(world: World) -> None:
    world.log.tree.append_leaves(filler("more", 300))
    assert_verified(world.release())
    assert world.log.count(ENTRIES) == 2  # bundle 0 (the release), bundle 1 (the map root)


def test_same_version_logged_twice_is_refused(world: World) -> None:
    world.log.append(make_release(world.publisher, PACKAGE, "1.1", payload=b"other bytes"))
    assert_refused(world.release(), why="ambiguous")


# -- releases the client must refuse even when the log is honest --------------------------------


def windowed_release(world: World) -> Path:
    fields = release_fields(PACKAGE, "2.0", payload=ARTIFACT)
    fields["install_window"] = WINDOW
    [index] = world.log.append(sign_entry(fields, world.publisher))
    return world.receipt_file(index, "windowed.json")


@pytest.mark.parametrize("now", ["2025-12-31T23:59:59Z", "2026-02-01T00:00:01Z"])
def test_release_outside_install_window_is_refused(world: World, now: str) -> None:
    receipt = windowed_release(world)
    assert_refused(world.release("2.0", "--now", now), why="install window")
    assert_refused(world.bundle(receipt, "--now", now), why="install window")
    assert_verified(world.release("2.0", "--now", "2026-01-15T12:00:00Z"))


def test_release_by_unpinned_publisher_is_refused(world: World) -> None:
    attacker = generate_key("acme-release-bot")
    world.log.append(make_release(attacker, PACKAGE, "1.3"))
    assert_refused(world.release("1.3"), why="not among the pinned publisher keys")
    other = world.tmp / "other.vkey"
    other.write_text(generate_key("someone-else").verifier().text() + "\n")
    run = tlog_verify(*world.online("release", "--package", PACKAGE, "--version", "1.1",
                                    "--publisher", other, "--no-artifact"))
    assert_refused(run, why="not among the pinned publisher keys")
    assert_refused(world.bundle(world.receipt_file(), publisher=other),
                   why="not among the pinned publisher keys")


# -- receipts and artifacts changed on the way -----------------------------------------------------


# -- an updater's stumbles: a forgotten flag never reads as "OK" ---------------------------------


def assert_usage_error(run: Run, why: str) -> None:
    """Exit 2 with "usage error" (not "FAIL", which blames what was checked), and no OK."""
    assert run.code == EXIT_USAGE, f"exit {run.code}\nstdout:\n{run.out}\nstderr:\n{run.err}"
    assert "OK" not in run.out and "FAIL" not in run.err, (run.out, run.err)
    assert "usage error" in run.err and why in run.err, run.err


def test_updater_that_forgets_the_artifact_is_refused_not_told_ok(world: World) -> None:
    receipt = world.receipt_file()
    assert_usage_error(tlog_verify("bundle", receipt, "--key", world.log.vkey_path),
                       why="--artifact FILE, or --no-artifact")
    assert_usage_error(tlog_verify(*world.online("release", "--package", PACKAGE,
                                                 "--version", "1.1")),
                       why="--artifact FILE, or --no-artifact")
    assert world.log.count(CHECKPOINT) == 0  # refused before asking the log anything
    both = ("--artifact", world.artifact, "--no-artifact")
    assert_usage_error(world.bundle(receipt, "--no-artifact"), why="exclude each other")
    assert_usage_error(tlog_verify(*world.online("release", "--package", PACKAGE, "--version",
                                                 "1.1", *both)), why="exclude each other")


def test_no_artifact_checks_only_that_the_release_is_logged(world: World) -> None:
    run = tlog_verify("bundle", world.receipt_file(), "--key", world.log.vkey_path,
                      "--no-artifact")
    assert_verified(run)
    assert "OK artifact" not in run.out
    assert_verified(tlog_verify(*world.online("release", "--package", PACKAGE, "--version",
                                              "1.1", "--no-artifact")))


def test_usage_errors_say_usage_error_and_failures_say_fail(world: World) -> None:
    missing = world.tmp / "no-such.vkey"
    assert_usage_error(tlog_verify(*world.bundle_args(world.receipt_file(), publisher=missing)),
                       why="no-such.vkey")
    assert_refused(world.bundle(world.receipt_file(), artifact=world.log.vkey_path),
                   why="artifact")


def test_artifact_changed_by_one_byte_fails_bundle(world: World) -> None:
    receipt = world.receipt_file()
    changed = world.tmp / "app-1.1-changed.tar.gz"
    flipped = [ARTIFACT[:i] + bytes([ARTIFACT[i] ^ 0x01]) + ARTIFACT[i + 1:]
               for i in range(0, len(ARTIFACT), 97)]
    for data in (*flipped, ARTIFACT[:-1], ARTIFACT + b"\n"):
        changed.write_bytes(data)
        assert_refused(world.bundle(receipt, artifact=changed), why="not in the logged release")
    assert_verified(world.bundle(receipt))


def run_parsed(args: argparse.Namespace) -> tuple[int, str]:
    """What `main` returns and prints for already parsed arguments: parsing once keeps
    thousands of runs fast."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        try:
            code: int = args.func(args)
        except VerifyError as exc:
            code = exc.exit_code
    return code, out.getvalue()


def test_receipt_changed_by_one_byte_fails_bundle(world: World) -> None:
    original = world.receipt_file().read_bytes()
    changed = world.tmp / "changed.json"
    args = build_parser().parse_args([str(a) for a in world.bundle_args(changed)])
    changed.write_bytes(original)
    code, out = run_parsed(args)
    assert code == EXIT_OK and out.startswith("OK "), out
    accepted = []
    changes = [(position, 0x01) for position in range(len(original))]
    changes += [(position, 0x20) for position in range(0, len(original), 5)]
    for position, mask in changes:
        data = bytearray(original)
        data[position] ^= mask
        changed.write_bytes(data)
        code, out = run_parsed(args)
        if code != EXIT_FAILED or "OK" in out:
            accepted.append((position, chr(original[position]), mask, code))
    assert accepted == []
    for position in range(0, len(original), 97):
        data = bytearray(original)
        data[position] ^= 0x01
        changed.write_bytes(data)
        assert_refused(world.bundle(changed))


def test_oversized_receipt_is_rejected(world: World) -> None:
    receipt = world.tmp / "huge.json"
    receipt.write_bytes(b" " * (4 << 20) + world.receipt_file().read_bytes())
    assert_refused(world.bundle(receipt), why="larger than")


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
                         ids=["array", "object"])
def test_deeply_nested_receipt_is_rejected(world: World, body: bytes) -> None:
    receipt = world.tmp / "deep.json"
    receipt.write_bytes(body)
    assert_refused(world.bundle(receipt), why="receipt")


# -- abuse of the transport ----------------------------------------------------------------------


@pytest.mark.parametrize("resource, abuse", [
    (CHECKPOINT, Abuse.HUGE_DECLARED), (CHECKPOINT, Abuse.HUGE_STREAMED),
    (TILE, Abuse.HUGE_DECLARED), (TILE, Abuse.HUGE_STREAMED),
    (ENTRIES, Abuse.HUGE_DECLARED), (ENTRIES, Abuse.HUGE_STREAMED),
    (PACKAGE_STATE, Abuse.HUGE_STREAMED),
])
def test_huge_response_is_cut_off(world: World, resource: str, abuse: Abuse) -> None:
    world.log.misbehave(resource, abuse)
    run = world.release(within=5.0)
    assert_refused(run, EXIT_TRANSPORT, why="exceeds the limit")
    assert run.seconds < 3.0


_MEASURED = """
import re, sys
from verifier.cli.main import main

def kib(name):
    with open("/proc/self/status") as status:
        return int(re.search(name + r":\\s+(\\d+) kB", status.read())[1])

with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak RSS (VmHWM) restarts from the current RSS
before = kib("VmRSS")
code = main(sys.argv[1:])
print("rss", before, kib("VmHWM"), file=sys.stderr)
sys.exit(code)
"""


def rss_growth(*argv: str | Path) -> tuple[int, int]:
    """(exit code, peak RSS growth in bytes) of `tlog-verify argv` in a process of its own."""
    proc = subprocess.run([sys.executable, "-c", _MEASURED, *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)
    found = re.search(r"^rss (\d+) (\d+)$", proc.stderr, re.MULTILINE)
    assert found, proc.stderr
    return proc.returncode, (int(found[2]) - int(found[1])) * 1024


needs_proc = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                reason="measuring the peak RSS needs Linux /proc")


@needs_proc
@pytest.mark.parametrize("resource, limit", [
    (CHECKPOINT, MAX_NOTE_SIZE), (ENTRIES, MAX_BUNDLE_BYTES), (PACKAGE_STATE, MAX_JSON_BYTES)])
def test_huge_response_is_cut_off_in_bounded_memory(world: World, resource: str,
                                                    limit: int) -> None:
    """200 MB streamed: the client holds at most the limit of what it asked for, plus a bit."""
    world.log.misbehave(resource, Abuse.HUGE_STREAMED)
    code, growth = rss_growth(*world.online("release", "--package", PACKAGE, "--version", "1.1",
                                            "--artifact", world.artifact))
    assert code == EXIT_TRANSPORT
    assert growth < limit + (8 << 20), f"RSS grew by {growth >> 20} MiB"


@pytest.mark.parametrize("abuse", [Abuse.ENDLESS, Abuse.ENDLESS_HEADERS])
@pytest.mark.parametrize("resource", [CHECKPOINT, TILE])
def test_endless_response_is_cut_off(world: World, log_signer: Signer, resource: str,
                                     abuse: Abuse) -> None:
    world.log.misbehave(resource, abuse)
    client = LogClient(world.log.url, timeout=0.25, deadline=0.5, retries=0)
    key = log_signer.verifier()
    if resource == CHECKPOINT:
        raised = within_seconds(2.0, lambda: client.checkpoint(KeyTrust(key)))
    else:
        raised = within_seconds(2.0, lambda: client.hash_tile(0, 0, 5))
    assert isinstance(raised, TransportError), repr(raised)


@pytest.mark.parametrize("resource", [CHECKPOINT, TILE, ENTRIES, PACKAGE_STATE])
def test_hanging_log_times_out(world: World, resource: str) -> None:
    world.log.misbehave(resource, Abuse.HANG)
    run = tlog_verify(*world.online("release", "--package", PACKAGE, "--version", "1.1",
                                    "--no-artifact", timeout=0.2, retries=1), within=6.0)
    assert_refused(run, EXIT_TRANSPORT, why="timed out")
    assert world.log.count(resource) == 2
    # Two attempts of at most ~1.2 s each (libcurl notices silence in whole seconds), the
    # backoff between them and the start of the process.
    assert run.seconds < 4.5


@pytest.mark.parametrize("abuse", [Abuse.GARBAGE, Abuse.CUT_MID_CHUNK])
@pytest.mark.parametrize("resource", [CHECKPOINT, ENTRIES])
def test_broken_http_exits_3(world: World, resource: str, abuse: Abuse) -> None:
    world.log.misbehave(resource, abuse)
    assert_refused(world.release(), EXIT_TRANSPORT)


def test_server_errors_exit_3_after_retries(world: World) -> None:
    world.log.misbehave(CHECKPOINT, Abuse.SERVER_ERROR)
    run = tlog_verify(*world.online("checkpoint", retries=1), within=5.0)
    assert_refused(run, EXIT_TRANSPORT, why="HTTP 500")
    assert world.log.count(CHECKPOINT) == 2
    assert run.seconds < 3.0


def test_transient_server_errors_are_retried(world: World) -> None:
    world.log.fail_next(1)
    run = tlog_verify(*world.online("checkpoint", retries=1), within=5.0)
    assert run.code == EXIT_OK, run.err
    assert world.log.count(CHECKPOINT) == 2


def test_unreachable_log_exits_3(world: World) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_refused(tlog_verify(*world.online("checkpoint", url=url, retries=1)), EXIT_TRANSPORT)
    assert_refused(world.release(url=url), EXIT_TRANSPORT)


# -- audit and monitor: state that outlives one run ----------------------------------------------


# The audit and the monitor do not read map-root/v1 leaves yet (they take them for invalid
# entries): their tests run on a log without them, as logs were before the package state map.
no_map_roots = pytest.mark.no_map_roots


def audit(world: World, state: Path, *args: str, url: str | None = None) -> Run:
    return tlog_verify(*world.online("audit", "--state", state, "--workers", "0", *args,
                                     url=url), within=20.0)


def assert_full_audit_refused(run: Run, why: str) -> None:
    """Exit 1 with the reason; the checkpoint may have been OK, the full audit is not."""
    assert run.code == EXIT_FAILED, f"exit {run.code}\nstdout:\n{run.out}\nstderr:\n{run.err}"
    assert "OK audited" not in run.out, run.out
    assert "FAIL" in run.err and why in run.err, run.err


@no_map_roots
def test_forked_tree_shown_to_one_client_is_caught_by_audit_state(world: World) -> None:
    state = world.tmp / "audit"
    assert audit(world, state).code == EXIT_OK
    honest = world.log.tree.note
    forked = world.log.fork_for("victim", keep=3)
    forked.append(make_release(world.publisher, PACKAGE, "1.3"))
    forked.append_leaves(filler("fork", 2))

    run = audit(world, state, url=world.log.url_for("victim"))

    assert_refused(run, why="inconsistent")
    assert (state / "checkpoint").read_text() == honest
    [evidence] = (state / "evidence").iterdir()
    assert (evidence / "new-checkpoint").read_text() == forked.note
    assert audit(world, state).code == EXIT_OK


@no_map_roots
def test_rollback_is_caught_by_audit(world: World) -> None:
    state = world.tmp / "audit"
    assert audit(world, state).code == EXIT_OK
    world.log.tree.append_leaves(filler("3", 1))
    assert audit(world, state).code == EXIT_OK
    world.log.roll_back(5)
    assert_refused(audit(world, state), why="rollback")


@no_map_roots
@pytest.mark.parametrize("extra", [0, 300], ids=["partial-tile", "full-tile"])
def test_tile_not_matching_the_root_is_caught_by_full_audit(world: World, extra: int) -> None:
    world.log.tree.append_leaves(filler("more", extra))
    world.log.corrupt_tile(0, 0, 32 * INDEX + 7)
    run = audit(world, world.tmp / "audit", "--full")
    assert_full_audit_refused(run, why=f"entry {INDEX}")


@no_map_roots
def test_entry_bundle_not_matching_the_root_is_caught_by_full_audit(world: World) -> None:
    evil = make_release(world.publisher, PACKAGE, "1.1", payload=b"a backdoor")
    world.log.swap_entry(INDEX, validate_entry(evil).leaf)
    run = audit(world, world.tmp / "audit", "--full")
    assert_full_audit_refused(run, why=f"entry {INDEX}")


@no_map_roots
def test_truncated_bundle_is_rejected_by_full_audit(world: World) -> None:
    world.log.cut_bundles(1)
    assert_full_audit_refused(audit(world, world.tmp / "audit", "--full"), why="entry bundle")


@no_map_roots
def test_invalid_entry_in_the_signed_tree_is_reported(world: World) -> None:
    [index] = world.log.tree.append_leaves([b'{"kind":"release/v1","package":"com.acme.app"}'])
    assert_full_audit_refused(audit(world, world.tmp / "audit", "--full"),
                              why=f"entry {index}")
    run = monitor(world, world.tmp / "monitor")
    assert run.code == EXIT_FAILED, run.err
    assert kinds(run)[-1] == "invalid_entry"


def monitor(world: World, state: Path, url: str | None = None) -> Run:
    return tlog_verify(*world.online("monitor", "--state", state, "--package", PACKAGE,
                                     "--workers", "0", url=url), within=20.0)


def events(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.out.splitlines()]


def kinds(run: Run) -> list[str]:
    return [e["type"] if e["type"] == "release" else e["alert"] for e in events(run)]


@no_map_roots
def test_forked_tree_shown_to_a_monitor_is_caught(world: World) -> None:
    state = world.tmp / "monitor"
    world.log.tree.append_map_root()  # a monitor checks each checkpoint ends with one
    first = monitor(world, state)
    assert first.code == EXIT_OK, first.err
    assert [e["version"] for e in events(first)] == ["1.0", "1.1", "1.2"]
    forked = world.log.fork_for("victim", keep=3)
    forked.append(make_release(world.publisher, PACKAGE, "1.3"))
    forked.append_leaves(filler("fork", 2))
    forked.append_map_root()

    run = monitor(world, state, url=world.log.url_for("victim"))

    assert run.code == EXIT_FAILED, run.err
    assert kinds(run) == ["checkpoint_inconsistent"]


@no_map_roots
def test_rollback_is_caught_by_monitor(world: World) -> None:
    state = world.tmp / "monitor"
    world.log.tree.append_map_root()
    assert monitor(world, state).code == EXIT_OK
    world.log.append(make_release(world.publisher, PACKAGE, "1.3"))
    world.log.tree.append_map_root()
    assert kinds(monitor(world, state)) == ["release"]
    world.log.roll_back(5)
    run = monitor(world, state)
    assert run.code == EXIT_FAILED, run.err
    assert kinds(run) == ["checkpoint_inconsistent"]


@no_map_roots
def test_entry_bundle_not_matching_the_root_is_caught_by_monitor(world: World) -> None:
    evil = make_release(world.publisher, PACKAGE, "1.1", payload=b"a backdoor")
    world.log.swap_entry(INDEX, validate_entry(evil).leaf)
    run = monitor(world, world.tmp / "monitor")
    assert run.code == EXIT_FAILED, run.err
    assert kinds(run) == ["checkpoint_inconsistent"]
    assert evil["artifacts"][0]["sha256"] not in run.out


@no_map_roots
def test_release_signed_with_a_stolen_key_is_alerted_by_monitor(world: World) -> None:
    state = world.tmp / "monitor"
    world.log.tree.append_map_root()
    assert monitor(world, state).code == EXIT_OK
    world.log.append(make_release(generate_key("acme-release-bot"), PACKAGE, "1.3"))
    world.log.tree.append_map_root()
    run = monitor(world, state)
    assert run.code == EXIT_OK, run.err
    assert kinds(run) == ["release", "new_publisher_key"]


@no_map_roots
@pytest.mark.parametrize("abuse", [Abuse.GARBAGE, Abuse.HUGE_STREAMED, Abuse.HANG])
@pytest.mark.parametrize("command, resource", [
    ("audit", TILE), ("audit", ENTRIES), ("monitor", ENTRIES)])
def test_broken_transport_stops_audit_and_monitor_with_exit_3(
        world: World, command: str, resource: str, abuse: Abuse) -> None:
    world.log.misbehave(resource, abuse)
    full = ["--full"] if command == "audit" else []
    run = tlog_verify(*world.online(command, "--state", world.tmp / command, "--workers", "0",
                                    *full, timeout=0.3), within=10.0)
    assert run.code == EXIT_TRANSPORT, run.err
    assert "OK audited" not in run.out and '"release"' not in run.out


# -- the package state map: a log that lies about a package's state -------------------------


def _hide_a_halt(world: World) -> tuple[int, bytes, bytes]:
    """The log ends its batches with map roots, then logs a halt of 1.1 but commits, in the
    halt's batch, the map root from before it: devices asking for the state of the package
    would be shown no halt. Returns the lying entry's index, its root and the honest one."""
    world.log.tree.append_map_root()
    halt = sign_entry({"kind": "halt/v1", "package": PACKAGE, "version": "1.1",
                       "reason": "backdoored build"}, world.publisher)
    before = honest_map_root(world.log.tree.leaves)
    world.log.tree.append_leaves([validate_log_entry(halt).leaf])
    honest = honest_map_root(world.log.tree.leaves)
    assert honest != before  # the halt changes the package's state, hence the root
    return world.log.tree.append_map_root(root=before), before, honest


@no_map_roots  # each batch's map root is placed by hand
def test_a_log_that_commits_a_map_root_omitting_a_halt_is_caught_by_the_monitor(
        world: World) -> None:
    state = world.tmp / "monitor"
    index, lie, honest = _hide_a_halt(world)
    run = monitor(world, state)
    assert run.code == EXIT_FAILED, run.err
    [alert] = [e for e in events(run) if e["type"] == "alert"]
    assert (alert["alert"], alert["index"]) == ("map_root_mismatch", index)
    assert (alert["committed_root"], alert["recomputed_root"]) == (lie.hex(), honest.hex())
    assert alert["leaf_hash"] == leaf_hash(world.log.tree.leaves[index]).hex()
    evidence = Path(alert["evidence"])
    assert (evidence / f"entry-{index}").read_bytes() == world.log.tree.leaves[index]
    assert "checkpoint" in {p.name for p in evidence.iterdir()}
    # Kept in the state directory: the next run does not report it again, nor replay.
    again = monitor(world, state)
    assert again.code == EXIT_OK, again.err
    assert events(again) == []


@no_map_roots  # each batch's map root is placed by hand
def test_a_log_that_commits_a_map_root_omitting_a_halt_is_caught_by_a_full_audit(
        world: World) -> None:
    index, lie, honest = _hide_a_halt(world)
    run = audit(world, world.tmp / "audit", "--full")
    assert run.code == EXIT_FAILED, run.err
    assert (f"the map-root entry {index} commits to map root {lie.hex()}, but the entries "
            f"before it make {honest.hex()}") in run.err
    [evidence] = (world.tmp / "audit" / "evidence").iterdir()
    facts = (evidence / "map-root.txt").read_text()
    assert f"index {index}\n" in facts and f"committed_root {lie.hex()}\n" in facts
    assert f"recomputed_root {honest.hex()}\n" in facts


@no_map_roots  # each batch's map root is placed by hand
def test_a_checkpoint_not_ending_with_a_map_root_is_alerted(world: World) -> None:
    """The world's log ends with a release: its checkpoint commits to no package state."""
    run = monitor(world, world.tmp / "monitor")
    assert run.code == EXIT_FAILED, run.err
    assert kinds(run)[-1] == "map_root_missing"
    last = events(run)[-1]
    assert (last["index"], last["size"]) == (4, 5)
    audited = audit(world, world.tmp / "audit", "--full")
    assert audited.code == EXIT_FAILED
    assert "checkpoint of size 5 does not end with a map-root entry" in audited.err
