"""The log's core promise under trouble: whatever happens to `tlog serve`, its database or
its clients, every receipt the log ever returned stays true, indices stay dense, nothing is
logged twice, a retry gets the index it already had, every checkpoint is consistent with
the last, and `tlog-verify audit --full` passes (tests.reliability.invariants).

Each test runs real `tlog serve` processes under concurrent load (tests.reliability.load);
bench/soak.py runs the same scenarios for longer.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability import chaos
from tests.reliability.chaos import LogUnderTest, Outcome
from tests.reliability.invariants import REPO, check
from tests.reliability.load import Load, Submission
from tlog.log.faults import MODES, POINTS, FaultConfigError, from_env
from verifier.protocol.note import Signer

FAULT_ENV = {"TLOG_FAULTS_I_KNOW": "1"}
PERSISTING = {"commit", "reply"}  # the points whose failure can come after COMMIT


def assert_promise_kept(outcome: Outcome) -> None:
    report = outcome.report
    assert report.ok, report.explain()
    assert report.lost == 0 and report.duplicates == 0
    assert outcome.acknowledged == report.acknowledged > 0
    assert report.entries >= outcome.acknowledged


@pytest.fixture
def log(database_url: str, log_signer: Signer, tmp_path: Path) -> LogUnderTest:
    return LogUnderTest(database_url, log_signer, tmp_path)


def test_sigkill_of_tlog_serve_under_load_loses_no_acknowledged_entry(
        log: LogUnderTest) -> None:
    log.start()
    try:
        outcome = asyncio.run(chaos.run("sigkill", log, chaos.kill_serve(10, random.Random())))
    finally:
        log.stop()
    assert outcome.disruptions == 10
    assert outcome.stats.retried > 0  # the kills did cut submissions off
    assert_promise_kept(outcome)


def test_postgres_crash_under_load_tlog_reconnects_by_itself(
        log_signer: Signer, tmp_path: Path) -> None:
    with chaos.separate_cluster() as (cluster, url):
        log = LogUnderTest(url, log_signer, tmp_path)
        log.start()
        try:
            outcome = asyncio.run(chaos.run(
                "pgcrash", log, chaos.crash_postgres(cluster, 2, random.Random())))
            # The same process, never restarted, appended again after each crash.
            assert log.servers[0] is not None and log.servers[0].proc.poll() is None
        finally:
            log.stop()
    assert outcome.stats.failures, "the crashes went unnoticed by the clients"
    assert_promise_kept(outcome)


def test_three_servers_on_one_database_with_one_killed(log: LogUnderTest) -> None:
    log.start(3)
    try:
        outcome = asyncio.run(chaos.run("three", log, chaos.kill_one_of(random.Random()),
                                        clients=9))
    finally:
        log.stop()
    assert_promise_kept(outcome)


def test_commit_refused_by_postgres_leaves_no_trace_and_retries_succeed(
        log: LogUnderTest) -> None:
    log.start()
    try:
        outcome = asyncio.run(chaos.run("commitfail", log, chaos.refuse_commits(0.3, 150)))
    finally:
        log.stop()
    assert "chaos: COMMIT refused" in log.output()
    assert outcome.stats.failures
    assert_promise_kept(outcome)


def test_clients_hanging_up_mid_request_get_their_index_on_retry(log: LogUnderTest) -> None:
    log.start()
    try:
        outcome = asyncio.run(chaos.run("hangups", log, chaos.keep_loading(150),
                                        disconnect_rate=0.3))
    finally:
        log.stop()
    assert outcome.stats.disconnects > 20
    assert_promise_kept(outcome)


@pytest.mark.parametrize("point", POINTS)
def test_fault_at_each_durability_point_before_and_after_the_step(
        point: str, log: LogUnderTest) -> None:
    log.env = {**FAULT_ENV, "TLOG_FAULTS": f"{point}:fail:0.2,{point}:fail-after:0.2"}

    def both_fired(log: LogUnderTest, load: Load) -> bool:
        output = log.output()
        return (all(f"injected fault {point}:{mode}\n" in output for mode in MODES)
                and (point not in PERSISTING or any(s.found_on_retry for s in load.submissions)))

    log.start()
    try:
        outcome = asyncio.run(chaos.run(f"fault-{point}", log,
                                        chaos.keep_loading_until(both_fired, 100)))
    finally:
        log.stop()
    for mode in MODES:
        assert f"injected fault {point}:{mode}\n" in log.output(), f"{mode} never fired"
    assert_promise_kept(outcome)
    if point in PERSISTING:  # some failed attempts had appended: their retries found them
        assert outcome.found_on_retry > 0
    else:  # nothing of a failed batch persisted: every first acknowledgment created it
        assert outcome.found_on_retry == 0


def test_fault_injection_cannot_be_turned_on_by_accident(log: LogUnderTest) -> None:
    with pytest.raises(FaultConfigError, match="TLOG_FAULTS_I_KNOW=1"):
        from_env({"TLOG_FAULTS": "commit:fail:1"})
    with pytest.raises(FaultConfigError, match="point:mode:probability"):
        from_env({**FAULT_ENV, "TLOG_FAULTS": "comit:fail:1"})
    with pytest.raises(FaultConfigError, match=r"0\.\.1"):
        from_env({**FAULT_ENV, "TLOG_FAULTS": "commit:fail:2"})
    assert not from_env({}).enabled
    # The server refuses to start rather than run with a stray variable.
    run = subprocess.run(
        [sys.executable, "-m", "tlog", "serve", "--database-url", log.database_url,
         "--key", str(log.key_file), "--listen", "127.0.0.1:1", "--policy", "open"],
        env={**{k: v for k, v in os.environ.items() if k != "TLOG_FAULTS_I_KNOW"},
             "TLOG_FAULTS": "commit:fail:1", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode != 0
    assert "TLOG_FAULTS_I_KNOW=1" in run.stderr


def test_the_checker_sees_a_moved_receipt_and_a_lost_entry(log: LogUnderTest) -> None:
    """The invariants are not vacuous: a receipt whose index moved, and an acknowledged
    entry deleted from the database, both fail them."""
    log.start()
    try:
        outcome = asyncio.run(chaos.run("checker", log, chaos.keep_loading(20)))
        assert_promise_kept(outcome)
        sub = next(s for s in outcome.submitted if s.receipts)
        moved = Submission(sub.body, [*sub.receipts, {**sub.receipts[0],
                                                      "index": sub.receipts[0]["index"] + 1}])
        report = check(log.database_url, log.live_url(), log.signer.verifier(),
                       log.vkey_file, [moved], log.workdir)
        assert report.lost == 1 and report.duplicates == 1, report.explain()
        asyncio.run(chaos.sql(log.database_url, "DELETE FROM entries WHERE idx = "
                              f"{sub.receipts[0]['index']}"))
        report = check(log.database_url, log.live_url(), log.signer.verifier(),
                       log.vkey_file, [sub], log.workdir)
    finally:
        log.stop()
    assert report.lost == 1 and not report.audit_ok, report.explain()
    assert any("not dense" in p for p in report.problems), report.explain()
