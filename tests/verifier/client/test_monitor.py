"""`tlog-verify monitor`: what it reports, what it alerts on, and what a crash leaves.

The log itself refuses a second artifact set for a version and never serves an invalid entry,
so those cases run on the monitor's pure core and on a static tile directory signed with the
log key (a log that enforces nothing), served over HTTP.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.audit_support import with_map_roots
from tests.conftest import _create_database
from tests.support import (
    Server,
    free_port,
    make_release,
    release_fields,
    start_server,
    submit_all,
    write_key,
)
from tlog.cli.pgcluster import Cluster
from verifier.cli import main as cli
from verifier.client.monitor import run as monitor_run
from verifier.client.monitor import watch
from verifier.client.monitor.db import MonitorDB
from verifier.client.monitor.run import Monitor
from verifier.client.monitor.summary import (
    Seen,
    encode,
    summarize,
    summarize_leaves,
    version_key,
)
from verifier.client.monitor.watch import Watcher
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.leaves import Checked
from verifier.protocol.merkle import RightEdge, leaf_hash, verify_inclusion
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.receipt import parse_tlog_proof
from verifier.protocol.tiles import ENTRIES_LEVEL, TILE_WIDTH, TreeBuilder, encode_bundle, tile_path

NOW = datetime(2026, 11, 24, tzinfo=UTC)
Events = list[dict[str, Any]]


class Crash(BaseException):
    """Stands for the process dying: nothing in the monitor catches it."""


def run_lines(capsys: pytest.CaptureFixture[str], url: str, vkey: Path, state: Path,
              *extra: str) -> tuple[int, list[str]]:
    """Run `tlog-verify monitor` in this process; return its exit code and stdout lines."""
    code = cli.main(["monitor", "--log", url, "--key", str(vkey), "--state", str(state),
                     "--workers", "0", "--retries", "0", *extra])
    return code, capsys.readouterr().out.splitlines()


def run(capsys: pytest.CaptureFixture[str], url: str, vkey: Path, state: Path,
        *extra: str) -> tuple[int, Events]:
    """Run `tlog-verify monitor` in this process; return its exit code and events."""
    code, lines = run_lines(capsys, url, vkey, state, *extra)
    return code, [json.loads(line) for line in lines]


def alerts(events: Events) -> list[tuple[int | None, str]]:
    return [(e["index"], e["alert"]) for e in events if e["type"] == "alert"]


def releases(events: Events) -> list[tuple[int, str, str]]:
    return [(e["index"], e["package"], e["version"]) for e in events if e["type"] == "release"]


def append(url: str, entries: list[dict[str, Any]]) -> list[int]:
    """Submit one at a time, so the log order is the list order; return the indices."""
    indices = []
    for entry in entries:
        (result,) = asyncio.run(submit_all([url], [entry]))
        assert result.status == 201, result.body
        indices.append(result.body["index"])
    return indices


@pytest.fixture
def vkey(tmp_path: Path, log_signer: Signer) -> Path:
    path = tmp_path / "log.vkey"
    path.write_text(log_signer.verifier().text() + "\n")
    return path


@pytest.fixture
def log(database_url: str, log_signer: Signer, tmp_path: Path) -> Iterator[Server]:
    """A real `tlog serve` on a fresh database."""
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path)
    yield server
    server.stop()


class StaticLog:
    """A tile directory signed with the log key and served over HTTP; enforces nothing."""

    def __init__(self, root: Path, signer: Signer) -> None:
        self.root, self.signer = root, signer
        self._entries: list[bytes] = []
        self._batches: list[int] = []
        self.leaves: list[bytes] = []
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, entries: list[bytes], *, map_roots: bool = True) -> list[bytes]:
        """Publish `entries` as the log does: a batch of the entries not published before
        (when `entries` extends the last call's; else all of them), ending with its honest
        map-root entry. Returns the leaves published. Without map_roots: exactly `entries`."""
        if map_roots:
            done = self._entries
            if entries[:len(done)] == done and len(entries) > len(done):
                self._batches.append(len(entries) - len(done))
            elif entries != done:
                self._batches = [len(entries)]
            self._entries = list(entries)
            self.leaves = with_map_roots(entries, self._batches)
        else:
            self._entries, self._batches, self.leaves = [], [], list(entries)
        self._publish(self.leaves)
        return self.leaves

    def _publish(self, leaves: list[bytes]) -> None:
        """Write every tile, bundle and the signed checkpoint of a tree of these leaves."""
        builder = TreeBuilder()
        for leaf in leaves:
            builder.append(leaf_hash(leaf))
        for (level, n), data in builder.take_changed().items():
            self._write(tile_path(level, n, len(data) // 32), data)
        for n in range(0, len(leaves), TILE_WIDTH):
            bundle = leaves[n:n + TILE_WIDTH]
            self._write(tile_path(ENTRIES_LEVEL, n // TILE_WIDTH, len(bundle)),
                        encode_bundle(bundle))
        cp = Checkpoint(self.signer.name, len(leaves), builder.root())
        self._write("checkpoint", sign_checkpoint(cp, self.signer).encode())

    def _write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def static_log(tmp_path: Path, log_signer: Signer) -> Iterator[StaticLog]:
    s = StaticLog(tmp_path / "static", log_signer)
    yield s
    s.close()


def leaf(entry: dict[str, Any]) -> bytes:
    return validate_entry(entry).leaf


def checked(index: int, entry: dict[str, Any]) -> Checked:
    from verifier.protocol.entries.kinds import validate_log_entry

    validated = validate_log_entry(entry)
    return Checked(index, validated.leaf_hash, validated.entry, None)


# -- against the real service ------------------------------------------------------------


def test_backfill_reports_every_entry_once_in_log_order_and_resumes_where_it_stopped(
        log: Server, vkey: Path, tmp_path: Path, publisher: Signer,
        capsys: pytest.CaptureFixture[str]) -> None:
    results = asyncio.run(submit_all([log.url], [
        make_release(publisher, f"pkg{i}", "1.0") for i in range(300)]))
    by_index = {r.body["index"]: r for r in results}
    assert len(by_index) == 300  # and a map-root entry after each batch the log made of them
    state = tmp_path / "state"

    code, first = run(capsys, log.url, vkey, state, "--workers", "2")
    assert code == 0
    assert [e["index"] for e in first] == sorted(by_index)
    assert [e["seq"] for e in first] == list(range(1, 301))
    assert {e["type"] for e in first} == {"release"}
    assert list(first[0]) == ["type", "seq", "index", "package", "version", "counter",
                              "publisher", "key", "artifacts", "leaf_hash"]
    for e in first:
        assert e["leaf_hash"] == by_index[e["index"]].body["leaf_hash"]
        assert e["publisher"] == "acme-release-bot"

    assert run(capsys, log.url, vkey, state) == (0, [])

    added = append(log.url, [make_release(publisher, f"late{i}", "1.0") for i in range(20)])
    code, third = run(capsys, log.url, vkey, state)
    assert code == 0
    # One batch each: every release is followed by its batch's map-root entry.
    first_new = max(by_index) + 2
    assert [e["index"] for e in third] == added == list(range(first_new, first_new + 40, 2))
    assert [e["seq"] for e in third] == list(range(301, 321))


BOT, INTRUDER = generate_key("acme-release-bot"), generate_key("intruder")


def _windowed(package: str, version: str, not_after: str) -> dict[str, Any]:
    fields = release_fields(package, version)
    fields["install_window"] = {"not_before": "2020-01-01T00:00:00Z", "not_after": not_after}
    return sign_entry(fields, BOT)


# One log for the scenarios below, appended in this order; each test watches its own packages.
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "globs": [make_release(BOT, p, "1.0")
              for p in ("com.acme.app", "com.acme.lib", "org.other.tool")],
    "growth": [
        make_release(BOT, "grow.app", "1.0", counter=1),
        make_release(BOT, "grow.app", "1.1", counter=2),
        make_release(BOT, "grow.app", "1.2", counter=2),      # [2] counter repeats
        make_release(BOT, "grow.app", "1.0.1", counter=3),    # [3] version goes back
        make_release(BOT, "grow.app", "2.0"),                 # no counter: not compared
        make_release(BOT, "grow.other", "0.1", counter=0),    # another package
        make_release(BOT, "grow.app", "2.1", counter=1),      # [6] counter goes back
    ],
    "keys": [
        make_release(BOT, "keys.app", "1.0"),
        make_release(INTRUDER, "keys.app", "1.1"),            # [1] a second key for the package
        make_release(INTRUDER, "keys.tool", "1.0"),           # a package's first key
        make_release(BOT, "keys.app", "1.2"),                 # a known key
        make_release(INTRUDER, "keys.app", "1.3"),            # known since [1]: no new alert
    ],
    "window": [_windowed("window.app", "1.0", "2020-02-01T00:00:00Z"),  # [0] closed long ago
               _windowed("window.app", "1.1", "2999-01-01T00:00:00Z")],
}


Scenarios = tuple[Server, dict[str, list[int]]]


@pytest.fixture(scope="module")
def scenarios(pg_cluster: Cluster, log_signer: Signer,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenarios]:
    """The real service holding SCENARIOS, and the index of each of their entries."""
    work = tmp_path_factory.mktemp("scenarios")
    url = asyncio.run(_create_database(pg_cluster, f"monitor{os.getpid()}"))
    server = start_server(url, write_key(work / "log.key", log_signer), work)
    try:
        yield server, {name: append(server.url, entries) for name, entries in SCENARIOS.items()}
    finally:
        server.stop()


def test_package_globs_limit_which_releases_are_reported(
        scenarios: Scenarios, vkey: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server, indices = scenarios
    app, lib, tool = indices["globs"]
    _, acme = run(capsys, server.url, vkey, tmp_path / "s1", "--package", "com.acme.*")
    _, two = run(capsys, server.url, vkey, tmp_path / "s2", "--package", "org.other.tool",
                 "--package", "com.acme.l*")
    _, everything = run(capsys, server.url, vkey, tmp_path / "s3")
    assert releases(acme) == [(app, "com.acme.app", "1.0"), (lib, "com.acme.lib", "1.0")]
    assert [e["seq"] for e in acme] == [1, 2]
    assert releases(two) == [(lib, "com.acme.lib", "1.0"), (tool, "org.other.tool", "1.0")]
    assert len(releases(everything)) == sum(len(e) for e in SCENARIOS.values())


def test_versions_and_counters_that_do_not_grow_are_alerted(
        scenarios: Scenarios, vkey: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server, indices = scenarios
    at = indices["growth"]
    code, events = run(capsys, server.url, vkey, tmp_path / "state", "--package", "grow.*")
    assert code == 0
    assert [i for i, _, _ in releases(events)] == at
    assert alerts(events) == [(at[2], "counter_not_growing"), (at[3], "version_not_growing"),
                              (at[6], "counter_not_growing")]
    counter = next(e for e in events if e.get("alert") == "counter_not_growing")
    assert (counter["counter"], counter["previous_counter"], counter["previous_index"]) == (
        2, 2, at[1])
    version = next(e for e in events if e.get("alert") == "version_not_growing")
    assert (version["previous_version"], version["previous_index"]) == ("1.2", at[2])
    assert (version["package"], version["version"]) == ("grow.app", "1.0.1")
    # an entry's alerts follow its release event
    seqs = {(e["index"], e["type"]): e["seq"] for e in events}
    assert seqs[(at[3], "alert")] == seqs[(at[3], "release")] + 1


def test_a_new_publisher_key_for_a_package_is_alerted(
        scenarios: Scenarios, vkey: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server, indices = scenarios
    code, events = run(capsys, server.url, vkey, tmp_path / "state", "--package", "keys.*")
    assert code == 0
    assert alerts(events) == [(indices["keys"][1], "new_publisher_key")]
    alert = next(e for e in events if e["type"] == "alert")
    assert alert["key"] == INTRUDER.verifier().text()
    assert BOT.verifier().text() in alert["message"]


def test_a_release_whose_install_window_closed_before_it_was_seen_is_alerted(
        scenarios: Scenarios, vkey: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server, indices = scenarios
    code, events = run(capsys, server.url, vkey, tmp_path / "state", "--package", "window.*")
    assert code == 0
    assert alerts(events) == [(indices["window"][0], "install_window_closed")]
    assert next(e for e in events if e["type"] == "alert")["not_after"] == "2020-02-01T00:00:00Z"


async def _wipe(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("TRUNCATE entries, tiles, checkpoints, cosignatures, published, "
                           "witness_state")
    finally:
        await conn.close()


def test_a_log_that_rewrites_its_history_is_caught_with_evidence(
        database_url: str, log_signer: Signer, vkey: Path, tmp_path: Path,
        publisher: Signer, capsys: pytest.CaptureFixture[str]) -> None:
    key = write_key(tmp_path / "log.key", log_signer)
    state = tmp_path / "state"
    server = start_server(database_url, key, tmp_path)
    try:
        append(server.url, [make_release(publisher, "app", f"1.{i}") for i in range(5)])
        code, before = run(capsys, server.url, vkey, state)
    finally:
        server.stop()
    assert code == 0 and len(before) == 5
    asyncio.run(_wipe(database_url))
    # The lying operator also removes the log's record of what it published
    # (tlog.log.highwater), which would refuse the wiped database: the monitor must catch it.
    (tmp_path / "log.published").unlink()
    server = start_server(database_url, key, tmp_path)
    try:
        append(server.url, [make_release(publisher, "app", f"9.{i}") for i in range(7)])
        code, after = run(capsys, server.url, vkey, state)
    finally:
        server.stop()
    assert code == 1
    assert [(e["type"], e["alert"], e["index"], e["seq"]) for e in after] == [
        ("alert", "checkpoint_inconsistent", None, 6)]
    (evidence,) = (state / "evidence").iterdir()
    files = {p.name for p in evidence.iterdir()}
    assert {"old-checkpoint", "new-checkpoint", "reason.txt"} <= files
    old = open_checkpoint((evidence / "old-checkpoint").read_text(), log_signer.verifier())
    assert old.size == 10  # 5 releases, each its own batch ending with a map-root entry
    assert str(evidence) in after[0]["message"]


def _reader(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _take(lines: queue.Queue[str], n: int, timeout: float = 30) -> Events:
    deadline = time.monotonic() + timeout
    return [json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            for _ in range(n)]


def test_follow_reports_entries_appended_while_it_runs_and_stops_cleanly_on_sigterm(
        log: Server, vkey: Path, tmp_path: Path, publisher: Signer,
        capsys: pytest.CaptureFixture[str]) -> None:
    append(log.url, [make_release(publisher, "app", "1.0")])
    state, port = tmp_path / "state", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "monitor", "--log", log.url, "--key", str(vkey),
         "--state", str(state), "--follow", "--interval", "0.2", "--workers", "1",
         "--metrics-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _reader(proc.stdout)
        assert releases(_take(lines, 1)) == [(0, "app", "1.0")]
        append(log.url, [make_release(publisher, "app", "1.1"),
                         make_release(publisher, "app", "1.0.5")])
        later = _take(lines, 3)
        # Each append is a batch of its own: a release, then its map-root entry.
        assert releases(later) == [(2, "app", "1.1"), (4, "app", "1.0.5")]
        assert alerts(later) == [(4, "version_not_growing")]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(metrics)
                   for s in family.samples}
        assert samples[("tlog_monitor_entries_scanned_total", ())] == 6
        assert samples[("tlog_monitor_tree_size", ())] == 6
        assert samples[("tlog_monitor_events_total",
                        (("alert", "version_not_growing"), ("type", "alert")))] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None and proc.stderr.read() == ""
    assert run(capsys, log.url, vkey, state) == (0, [])


def test_follow_outlives_an_unreachable_log_and_one_shot_runs_fail_with_status_3(
        vkey: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert run(capsys, dead, vkey, tmp_path / "once") == (3, [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "monitor", "--log", dead, "--key", str(vkey),
         "--state", str(tmp_path / "state"), "--follow", "--interval", "0.1", "--retries", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        errors = _reader(proc.stderr)
        assert "retrying" in errors.get(timeout=20)
        assert "retrying" in errors.get(timeout=20)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- against a log that enforces nothing ------------------------------------------------


def test_a_second_artifact_set_for_one_version_is_alerted(
        static_log: StaticLog, vkey: Path, tmp_path: Path, publisher: Signer,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A log that enforces nothing publishes no package state map either (a release made
    # twice makes no state): the missing map root is alerted too.
    static_log.publish([leaf(make_release(publisher, "app", "1.0", payload=b"a")),
                        leaf(make_release(publisher, "app", "1.0", payload=b"b"))],
                       map_roots=False)
    code, events = run(capsys, static_log.url, vkey, tmp_path / "state")
    assert code == 1
    assert alerts(events) == [(1, "version_not_growing"), (1, "second_artifact_set"),
                              (1, "map_root_missing")]
    assert events[-2]["previous_index"] == 0


def test_an_invalid_entry_is_alerted_once_with_evidence_that_proves_it_was_logged(
        static_log: StaticLog, vkey: Path, tmp_path: Path, publisher: Signer,
        log_signer: Signer, capsys: pytest.CaptureFixture[str]) -> None:
    forged = make_release(publisher, "app", "1.1")
    forged["version"] = "6.6.6"  # after signing: the signature no longer verifies
    bad = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    good = [leaf(make_release(publisher, "app", "1.0")), bad]
    static_log.publish(good)
    state = tmp_path / "state"
    code, events = run(capsys, static_log.url, vkey, state, "--package", "nothing-matches")
    assert code == 1
    assert alerts(events) == [(1, "invalid_entry")]
    assert "bad_signature" in events[0]["message"]
    evidence = Path(events[0]["evidence"])
    assert (evidence / "entry-1").read_bytes() == bad
    proof = parse_tlog_proof((evidence / "entry-1.tlog-proof").read_text())
    cp = open_checkpoint(proof.checkpoint, log_signer.verifier())
    verify_inclusion(1, cp.size, leaf_hash(bad), proof.hashes, cp.root)

    static_log.publish([*good, leaf(make_release(publisher, "app", "1.2"))])
    code, events = run(capsys, static_log.url, vkey, state)
    assert code == 0  # entry 2 is the first batch's map root, which leaves out the bad entry
    assert [(e["type"], e["index"], e["seq"]) for e in events] == [("release", 3, 2)]


def test_entries_that_do_not_hash_to_the_signed_tree_are_never_reported(
        static_log: StaticLog, vkey: Path, tmp_path: Path, publisher: Signer,
        capsys: pytest.CaptureFixture[str]) -> None:
    static_log.publish([leaf(make_release(publisher, "app", f"1.{i}")) for i in range(3)])
    swapped = [leaf(make_release(publisher, "app", f"6.{i}")) for i in range(3)]
    swapped.append(static_log.leaves[3])  # the map-root entry stays
    (static_log.root / tile_path(ENTRIES_LEVEL, 0, 4)).write_bytes(encode_bundle(swapped))
    code, events = run(capsys, static_log.url, vkey, tmp_path / "state")
    assert code == 1
    assert alerts(events) == [(None, "checkpoint_inconsistent")]
    assert releases(events) == []
    (evidence,) = (tmp_path / "state" / "evidence").iterdir()
    assert {"checkpoint", "computed-root", "reason.txt"} <= {p.name for p in evidence.iterdir()}


def _crash_on_call(n: int, real: Any) -> Any:
    calls = 0

    def patched(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n:
            raise Crash()
        return real(*args, **kwargs)

    return patched


@pytest.fixture
def six_hundred(static_log: StaticLog, publisher: Signer,
                monkeypatch: pytest.MonkeyPatch) -> StaticLog:
    """600 entries, committed one bundle (256 entries) at a time: 3 groups."""
    monkeypatch.setattr(monitor_run, "GROUP_BUNDLES", 1)
    static_log.publish([leaf(make_release(publisher, f"pkg{i}", "1.0")) for i in range(600)])
    return static_log


def test_package_states_restored_from_the_journal_still_match_the_honest_map_roots(
        static_log: StaticLog, vkey: Path, tmp_path: Path, publisher: Signer,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without state snapshots every run restores the states from the journal of records
    alone: a record lost or applied twice there would make the next honest map root look
    wrong (exit 1, map_root_mismatch), and one the log left out would go unnoticed."""
    from verifier.client.monitor import db as monitor_db

    monkeypatch.setattr(monitor_run, "GROUP_BUNDLES", 1)
    monkeypatch.setattr(monitor_db, "SNAPSHOT_SPACING", float("inf"))  # never due
    state, entries = tmp_path / "state", []
    for round_no in range(3):
        entries += [leaf(make_release(publisher, f"pkg{i % 7}", f"{round_no}.{i}"))
                    for i in range(300)]
        static_log.publish(list(entries))
        code, events = run(capsys, static_log.url, vkey, state)
        assert code == 0, alerts(events)
        assert len(releases(events)) == 300
    db = MonitorDB(state / "monitor.db")
    with db:
        assert db.conn.execute("SELECT count(*) FROM map_states").fetchone() == (0,)
        assert db.conn.execute("SELECT count(*) FROM map_journal").fetchone() == (900,)


def test_a_crash_after_saving_and_before_printing_loses_and_repeats_nothing(
        six_hundred: StaticLog, vkey: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    with monkeypatch.context() as m:
        m.setattr(Monitor, "_print", _crash_on_call(2, Monitor._print))
        with pytest.raises(Crash):
            run(capsys, six_hundred.url, vkey, state)
    before = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["seq"] for e in before] == list(range(1, 257))
    code, after = run(capsys, six_hundred.url, vkey, state)
    assert code == 0
    events = before + after
    assert [e["seq"] for e in events] == list(range(1, 601))
    assert [e["index"] for e in events] == list(range(600))


def test_a_crash_after_printing_repeats_those_events_with_the_same_seq_only(
        six_hundred: StaticLog, vkey: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    with monkeypatch.context() as m:
        m.setattr(MonitorDB, "clear_outbox", _crash_on_call(2, MonitorDB.clear_outbox))
        with pytest.raises(Crash):
            run(capsys, six_hundred.url, vkey, state)
    before = capsys.readouterr().out.splitlines()
    assert len(before) == 512
    code, after = run_lines(capsys, six_hundred.url, vkey, state)
    assert code == 0
    lines = before + after
    assert lines[512:768] == before[256:512]  # the unconfirmed group, printed again verbatim
    unique = {json.loads(line)["seq"]: json.loads(line) for line in lines}
    assert sorted(unique) == list(range(1, 601))
    assert sorted(e["index"] for e in unique.values()) == list(range(600))


# -- the pure core ------------------------------------------------------------------------


def test_pure_core_alerts_on_a_second_artifact_set_but_not_on_reordered_artifacts(
        publisher: Signer) -> None:
    two = release_fields("app", "1.0", payload=b"x")
    two["artifacts"].append({"name": "app.sig", "sha256": "0" * 64, "size": 1})
    reordered = {**two, "artifacts": list(reversed(two["artifacts"]))}
    other = release_fields("app", "1.0", payload=b"y")
    w = Watcher()
    assert alerts(w.observe(checked(0, sign_entry(two, publisher)), NOW)) == []
    assert alerts(w.observe(checked(1, sign_entry(reordered, publisher)), NOW)) == [
        (1, "version_not_growing")]
    assert alerts(w.observe(checked(2, sign_entry(other, publisher)), NOW)) == [
        (2, "version_not_growing"), (2, "second_artifact_set")]


def test_pure_core_reports_invalid_entries_whatever_the_package_filter() -> None:
    w = Watcher(["com.acme.*"])
    events = w.observe(Checked(0, b"\x11" * 32, None, "bad_signature: does not verify"), NOW)
    assert [(e["type"], e["alert"], e["seq"], e["leaf_hash"]) for e in events] == [
        ("alert", "invalid_entry", 1, "11" * 32)]
    assert w.next_index == 1


def test_pure_core_keeps_learning_about_packages_it_does_not_report(publisher: Signer) -> None:
    w = Watcher(["com.acme.*"])
    assert w.observe(checked(0, make_release(publisher, "other", "2.0", counter=9)), NOW) == []
    assert w.observe(checked(1, make_release(publisher, "other", "1.0", counter=1)), NOW) == []
    assert (w.packages["other"].version, w.packages["other"].counter) == ("2.0", 9)
    everything = Watcher(next_index=w.next_index, next_seq=w.next_seq, packages=w.packages)
    events = everything.observe(checked(2, make_release(publisher, "other", "1.5")), NOW)
    assert alerts(events) == [(2, "version_not_growing")]
    assert events[0]["seq"] == 1


def test_pure_core_alerts_on_a_registry_entry_that_does_not_validate() -> None:
    w = Watcher()
    other = {"kind": "publisher/v1", "publisher": "acme", "key": "k", "signature": "s"}
    assert alerts(w.observe(Checked(0, b"\x22" * 32, other, None), NOW)) == [
        (0, "invalid_entry")]
    assert (w.next_index, w.packages) == (1, {})


def test_pure_core_takes_lifecycle_statements_without_mistaking_them_for_releases(
        publisher: Signer) -> None:
    """A halt names a package and version but is no release: no release event, no alert
    (a second artifact set, a version not growing), and the next release is judged as
    before."""
    w = Watcher()
    assert alerts(w.observe(checked(0, make_release(publisher, "app", "1.0")), NOW)) == []
    halt = sign_entry({"kind": "halt/v1", "package": "app", "version": "1.0",
                       "reason": "crash"}, publisher)
    assert w.observe(checked(1, halt), NOW) == []
    assert (w.next_index, w.packages["app"].version) == (2, "1.0")
    assert alerts(w.observe(checked(2, make_release(publisher, "app", "0.9")), NOW)) == [
        (2, "version_not_growing")]


def test_pure_core_refuses_entries_out_of_order(publisher: Signer) -> None:
    with pytest.raises(ValueError, match="entry 1 fed where entry 0 is next"):
        Watcher().observe(checked(1, make_release(publisher, "app", "1.0")), NOW)


# What the judge must not reach for: storage, processes, threads, signals, the clock, the
# network, metrics, the command line, and the modules of the monitor that use them.
_IMPURE = ("sqlite3", "threading", "signal", "prometheus_client", "argparse", "os", "time", "io",
           "pathlib", "shutil", "tempfile", "socket", "subprocess", "multiprocessing",
           "concurrent", "asyncio", "urllib", "http", "pycurl", "verifier.client.log",
           "verifier.client.scan", "verifier.client.statedir", "verifier.client.tracking",
           "verifier.client.monitor.db", "verifier.client.monitor.metrics",
           "verifier.client.monitor.run", "verifier.cli")


@pytest.mark.parametrize("name", ["summary.py", "watch.py"])
def test_pure_core_modules_do_no_io(name: str) -> None:
    """The judge and what the workers send it: no imports of I/O, no open/print, no clock."""
    tree = ast.parse(Path(watch.__file__).with_name(name).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in imported for f in _IMPURE if m == f or m.startswith(f + ".")} == set()
    called = {c.func.id if isinstance(c.func, ast.Name) else getattr(c.func, "attr", "")
              for c in ast.walk(tree) if isinstance(c, ast.Call)}
    assert called & {"open", "print", "input", "now", "utcnow", "today"} == set()


@pytest.mark.parametrize(("earlier", "later", "alerted"), [
    ("1.0", "1.1", False),
    ("1.9", "1.10", False),
    ("v1.2", "1.3", False),
    ("1.0-rc.1", "1.0", False),
    ("1.0a1", "1.0b1", False),
    ("1.0.dev3", "1.0a1", False),
    ("2.0", "1.9.9", True),
    ("1.0", "1.0.0", True),
    ("1.0", "1.0-rc.2", True),
    ("1.0", "1.0", True),
    ("1.0.post1", "1.0", False),          # not comparable: only exact repeats count
    ("2024-05-01", "2024-04-01", False),
    ("1.0+build.2", "1.0+build.1", False),
])
def test_version_growth_rule(earlier: str, later: str, alerted: bool, publisher: Signer) -> None:
    w = Watcher()
    w.observe(checked(0, make_release(publisher, "app", earlier)), NOW)
    got = alerts(w.observe(checked(1, make_release(publisher, "app", later, payload=b"x")), NOW))
    assert ((1, "version_not_growing") in got) is alerted


def test_version_key_compares_numbers_as_integers() -> None:
    assert version_key("1.10") == ((1, 10), 4, 0)
    assert version_key("1.2.0-RC.3") == ((1, 2), 3, 3)
    assert version_key("release-5") is None


def test_usage_errors_exit_2(vkey: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:9"
    assert run(capsys, url, vkey, tmp_path / "s", "--interval", "1")[0] == 2
    assert run(capsys, url, vkey, tmp_path / "s", "--workers", "-1")[0] == 2
    assert run(capsys, url, tmp_path / "missing.vkey", tmp_path / "s")[0] == 2


def _registry(kind: str, publisher: str, signer: Signer, **fields: Any) -> dict[str, Any]:
    return sign_entry({"kind": kind, "publisher": publisher, **fields}, signer)


def test_key_and_ownership_changes_of_watched_packages_are_alerted() -> None:
    """A stolen key added to a publisher, a revoked key, a new owner: each is an alert."""
    admin, acme, thief = generate_key("admin"), generate_key("acme"), generate_key("acme")
    other = generate_key("other")
    now = datetime.now(UTC)
    w = Watcher(["com.acme.*"])
    feed = [
        _registry("publisher/v1", "acme", admin, packages=["com.acme.*"],
                  keys=[acme.verifier().text()]),
        _registry("keys/v1", "acme", acme, add=[thief.verifier().text()], remove=[]),
        _registry("revoke/v1", "acme", admin, keys=[acme.verifier().text()], reason="leaked"),
        _registry("publisher/v1", "other", admin, packages=["org.other.*"],
                  keys=[other.verifier().text()]),
        _registry("publisher/v1", "other", admin, packages=["org.other.*", "com.acme.app"],
                  keys=[other.verifier().text()]),
    ]
    codes = [[e["alert"] for e in w.observe(checked(i, entry), now)]
             for i, entry in enumerate(feed)]
    assert codes == [["publisher_registered"], ["key_added"], ["key_revoked"], [],
                     ["ownership_changed"]]


def test_release_breaking_the_registry_is_alerted_and_admin_forgery_is_caught() -> None:
    """With the admin key pinned, a registration by another key is an alert; a release by a
    revoked key of a registered publisher is an alert (the log should have refused both)."""
    from verifier.protocol.registry import Registry

    admin, forger, acme = generate_key("admin"), generate_key("admin"), generate_key("acme")
    now = datetime.now(UTC)
    w = Watcher(registry=Registry([admin.verifier()], enforce=False))
    forged = _registry("publisher/v1", "acme", forger, packages=["com.*"],
                       keys=[acme.verifier().text()])
    assert [e["alert"] for e in w.observe(checked(0, forged), now)] == [
        "registry_entry_not_authorized"]
    genuine = _registry("publisher/v1", "acme", admin, packages=["com.acme.*"],
                        keys=[acme.verifier().text()])
    w.observe(checked(1, genuine), now)
    w.observe(checked(2, _registry("revoke/v1", "acme", admin, keys=[acme.verifier().text()],
                                   reason="leaked")), now)
    events = w.observe(checked(3, sign_entry(release_fields("com.acme.app", "1.0"), acme)), now)
    assert "release_not_authorized" in [e.get("alert") for e in events]


# -- the main process's fast paths: same events as the plain ones --------------------------


def _seen(index: int, package: str, version: str, counter: int | None = None,
          key: str = "acme+1+k1", payload: str = "a", not_after: str | None = None,
          name: str = "app.tar.gz") -> Seen:
    """The Seen of an (unsigned) release entry: the Watcher trusts what the workers checked."""
    entry: dict[str, Any] = {"kind": "release/v1", "package": package, "version": version,
                             "key": key, "artifacts": [{"name": name, "sha256": payload * 64,
                                                        "size": 7}]}
    if counter is not None:
        entry["counter"] = counter
    if not_after is not None:
        entry["install_window"] = {"not_before": "2020-01-01T00:00:00Z", "not_after": not_after}
    return summarize(Checked(index, leaf_hash(json.dumps(entry).encode()), entry, None))


def test_release_lines_are_the_events_encoded_as_before() -> None:
    """The worker's pre-encoded body gives the bytes encode() gives the whole event."""
    w = Watcher()
    for i, seen in enumerate([_seen(0, "app", "1.0", counter=3, name="app-é\u2028.zip"),
                              _seen(1, "app", "ünïcode\"\\", key="acme+2+k2")]):
        (line, *_) = w.report(seen, NOW)
        expected = {"type": "release", "seq": i + 1, "index": i, "package": seen.package,
                    "version": seen.version, "counter": seen.counter, "publisher": "acme",
                    "key": seen.key, "artifacts": json.loads("{" + seen.body)["artifacts"],
                    "leaf_hash": seen.leaf_hash.hex()}
        assert line == encode(expected)
        assert line.isascii()


def test_a_chunk_summary_survives_pickling_as_seen_tuples(publisher: Signer) -> None:
    import pickle

    leaves = [leaf(make_release(publisher, "app", f"1.{i}")) for i in range(5)] + [b"{}"]
    summary = summarize_leaves(10, leaves)
    back = pickle.loads(pickle.dumps(summary))
    assert back == summary
    assert all(type(s) is Seen for s in back.entries)
    assert back.entries[-1].error is not None and back.entries[-1].leaf == b"{}"


_VERSIONS = ["1.0", "1.1", "2.0", "1.0.0", "2.0-rc.1", "1.0.post1", "nightly"]
_step = st.tuples(st.sampled_from(["app", "lib"]), st.sampled_from(_VERSIONS),
                  st.none() | st.integers(0, 3), st.sampled_from(["acme+1+k1", "acme+2+k2"]),
                  st.sampled_from("ab"), st.sampled_from([None, "2020-02-01T00:00:00Z"]))


def _feed_all(w: Watcher, seen: list[Seen]) -> list[str]:
    return [e if isinstance(e, str) else encode(e) for s in seen
            for e in w.report(s, NOW)]


@settings(max_examples=80, deadline=None)
@given(st.lists(_step, max_size=30), st.integers(1, 7))
def test_fast_paths_report_what_the_plain_checks_report(
        steps: list[tuple[str, str, int | None, str, str, str | None]], group: int) -> None:
    """The shortcut for unremarkable entries and the versions looked up in storage (only
    those that may be there) change no event and no knowledge."""
    import tempfile

    seen = [_seen(i, *step) for i, step in enumerate(steps)]
    plain = Watcher()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(watch, "_unremarkable", lambda pkg, seen: False)
        expected = _feed_all(plain, seen)
    stored, got = Watcher(), []
    with tempfile.TemporaryDirectory() as tmp, MonitorDB(Path(tmp) / "m.db") as db:
        for n in range(0, len(seen), group):
            part = seen[n:n + group]
            stored.preload(db.lookup_versions(stored.stored_version_names(part)))
            got += _feed_all(stored, part)
            db.save(stored, RightEdge(), "origin", [])
            stored.forget_versions()
        rows = db.conn.execute("SELECT name, knowledge FROM packages")
        assert {name: json.loads(text) for name, text in rows} == {
            name: json.loads(json.dumps(p.to_json())) for name, p in plain.packages.items()}
    assert got == expected


# -- what a run says on stderr when stdout stays empty --------------------------------------


def run_err(capsys: pytest.CaptureFixture[str], url: str, vkey: Path, state: Path,
            *extra: str) -> tuple[int, list[str], str]:
    code = cli.main(["monitor", "--log", url, "--key", str(vkey), "--state", str(state),
                     "--workers", "0", "--retries", "0", *extra])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_a_run_with_nothing_new_says_so_on_stderr(
        static_log: StaticLog, vkey: Path, tmp_path: Path, publisher: Signer,
        capsys: pytest.CaptureFixture[str]) -> None:
    static_log.publish([leaf(make_release(publisher, f"pkg{i}", "1.0")) for i in range(3)])
    state = tmp_path / "state"
    code, out, err = run_err(capsys, static_log.url, vkey, state)
    assert (code, len(out)) == (0, 3) and "no new entries" not in err
    code, out, err = run_err(capsys, static_log.url, vkey, state)
    assert (code, out) == (0, [])
    assert "no new entries (the log has 4 entries)" in err  # 3 and their map root
    static_log.publish([leaf(make_release(publisher, f"pkg{i}", "1.0")) for i in range(5)])
    code, out, err = run_err(capsys, static_log.url, vkey, state, "--package", "com.*")
    assert (code, out) == (0, [])
    assert "3 new entries scanned, none to report (the log has 7 entries)" in err


def test_a_new_package_glob_on_an_existing_state_says_it_applies_to_new_entries_only(
        static_log: StaticLog, vkey: Path, tmp_path: Path, publisher: Signer,
        capsys: pytest.CaptureFixture[str]) -> None:
    static_log.publish([leaf(make_release(publisher, f"pkg{i}", "1.0")) for i in range(3)])
    state = tmp_path / "state"
    assert run_err(capsys, static_log.url, vkey, state, "--package", "pkg0")[0] == 0
    code, out, err = run_err(capsys, static_log.url, vkey, state, "--package", "pkg1")
    assert (code, out) == (0, [])  # pkg1's entry was scanned before: not reported now
    assert "--package changed from pkg0 to pkg1" in err
    assert "the new globs apply from entry 4 on" in err
    code, out, err = run_err(capsys, static_log.url, vkey, state, "--package", "pkg1")
    assert "--package changed" not in err


def test_refused_key_change_of_a_watched_publisher_is_alerted_under_a_package_filter() -> None:
    """A keys/v1 names no packages: a forged one for a watched publisher is still alerted
    when only that publisher's packages are watched."""
    from verifier.protocol.registry import Registry

    admin, acme, thief = generate_key("admin"), generate_key("acme"), generate_key("acme")
    now = datetime.now(UTC)
    w = Watcher(["com.acme.*"], registry=Registry([admin.verifier()], enforce=False))
    w.observe(checked(0, _registry("publisher/v1", "acme", admin, packages=["com.acme.*"],
                                   keys=[acme.verifier().text()])), now)
    forged = _registry("keys/v1", "acme", thief, add=[thief.verifier().text()], remove=[])
    assert [e["alert"] for e in w.observe(checked(1, forged), now)] == [
        "registry_entry_not_authorized"]
