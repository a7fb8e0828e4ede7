"""`tlog bench` against a real log: every mode's figures, appends that really land, the
baseline ratio, and clear failures (dead log, bad options, a log without a batch endpoint)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _create_database
from tests.support import Server, free_port, start_server, write_key
from tlog.cli.benchload import percentile
from tlog.cli.pgcluster import Cluster
from verifier.protocol.note import generate_key

# Quotas out of the way: the test measures the log, not its rate limits.
UNLIMITED = ("--policy", "open", "--client-rate", "100000", "--client-burst", "100000",
             "--read-rate", "100000", "--read-burst", "100000")


@pytest.fixture(scope="module")
def log(pg_cluster: Cluster) -> Iterator[Server]:
    """One open log for the whole file (starting one per test would cost most of its time)."""
    url = asyncio.run(_create_database(pg_cluster, f"bench{os.getpid()}"))
    with tempfile.TemporaryDirectory() as d:
        key = write_key(Path(d) / "log.key", generate_key("bench.example.org/log"))
        server = start_server(url, key, Path(d), extra=UNLIMITED)
        try:
            yield server
        finally:
            server.stop()


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlog", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def bench_json(*args: str) -> dict[str, Any]:
    proc = bench(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress line when not a terminal
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def assert_figures(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["throughput_rps"] > 0 and r["seconds"] > 0


def test_appends_land_in_the_log(log: Server) -> None:
    r = bench_json("append", "--log", log.url, "--count", "30", "--concurrency", "8",
                   "--packages", "1")
    assert r["requests"] == r["ok"] == r["entries"] == 30
    assert r["errors"] == {} and r["transport_errors"] == {}
    assert_figures(r)
    # 30 entries and one map-root leaf per batch they went in (1 to 30 batches).
    grown = r["tree_size_after"] - r["tree_size_before"]
    assert 31 <= grown <= 60
    assert get_json(f"{log.url}/v1/log")["tree_size"] == r["tree_size_after"]
    page = get_json(f"{log.url}/v1/entries?package={r['package']}&limit=100")
    assert len(page["entries"]) == 30


def test_appends_spread_over_packages(log: Server) -> None:
    # One package's thousands of versions would measure that package, not the log.
    r = bench_json("append", "--log", log.url, "--count", "9", "--packages", "3")
    assert r["entries"] == 9 and r["packages"] == 3
    for k in range(3):
        page = get_json(f"{log.url}/v1/entries?package={r['package']}-{k}&limit=100")
        assert len(page["entries"]) == 3


def test_read_mixes_proofs_tiles_bundles_and_checkpoints(log: Server) -> None:
    bench("append", "--log", log.url, "--count", "10")  # something to read, whatever ran first
    r = bench_json("read", "--log", log.url, "--count", "200", "--concurrency", "8")
    assert r["requests"] == r["ok"] == 200, r
    assert r["errors"] == {} and r["transport_errors"] == {}
    assert r["tree_size_after"] == r["tree_size_before"] > 0
    assert "entries" not in r
    assert_figures(r)
    kinds = r["by_kind"]
    assert set(kinds) == {"proof", "tile", "bundle", "checkpoint"}
    assert sum(k["requests"] for k in kinds.values()) == 200


def test_mixed_appends_and_reads(log: Server) -> None:
    r = bench_json("mixed", "--log", log.url, "--count", "80", "--read-ratio", "0.5",
                   "--concurrency", "8")
    assert r["requests"] == r["ok"] == 80, r
    assert 10 <= r["entries"] <= 70  # about half of them appends
    assert r["tree_size_after"] >= r["tree_size_before"] + r["entries"] + 1
    assert_figures(r)


def test_append_batch_says_when_the_log_has_no_batch_endpoint(log: Server) -> None:
    proc = bench("append-batch", "--log", log.url, "--count", "3", "--batch-size", "5",
                 "--json")
    if proc.returncode == 0:  # a log with the endpoint: every entry lands
        r = json.loads(proc.stdout)
        assert r["entries"] == 15 and r["entry_statuses"] == {"201": 15}
        assert r["tree_size_after"] - r["tree_size_before"] >= 16
    else:
        assert proc.returncode == 1
        assert "this log has no batch endpoint" in proc.stderr


def test_baseline_prints_the_log_as_a_ratio_to_trivial_handlers(log: Server) -> None:
    proc = bench("append", "--log", log.url, "--count", "40", "--concurrency", "4",
                 "--baseline")
    assert proc.returncode == 0, proc.stderr
    assert "baseline (trivial aiohttp, same client" in proc.stdout
    assert "log/baseline throughput:" in proc.stdout
    r = bench_json("read", "--log", log.url, "--count", "100", "--baseline")
    assert r["baseline"]["ok"] == 100 and r["baseline"]["errors"] == {}
    assert r["ratio"] > 0


def test_rate_schedules_requests_in_time(log: Server) -> None:
    bench("append", "--log", log.url, "--count", "5")  # something to read, whatever ran first
    started = time.monotonic()
    r = bench_json("read", "--log", log.url, "--count", "25", "--rate", "50")
    # 25 requests due 20 ms apart: the last is due at 0.48 s, whatever the concurrency.
    assert r["seconds"] >= 0.48 and time.monotonic() - started >= 0.48
    assert r["ok"] == 25
    sched = r["schedule"]
    assert sched["scheduled"] == sched["sent"] == 25 and sched["rate"] == 50
    assert sched["on_time"] + sched["waited_for_connection"] + sched["client_late"] >= 25 - 1


def test_rate_reports_requests_that_waited_for_a_connection(log: Server) -> None:
    # One connection and 200 requests due within 10 ms: most fall due while it is busy, and
    # the report must say so instead of quietly sending them later.
    bench("append", "--log", log.url, "--count", "5")  # something to read
    proc = bench("read", "--log", log.url, "--count", "200", "--rate", "20000",
                 "--concurrency", "1")
    assert proc.returncode == 0, proc.stderr
    assert "schedule: 200 requests due at 20000/s; 200 sent" in proc.stdout
    assert "fell due while every connection awaited the log's answer" in proc.stdout


def test_read_kinds_are_measured_each_on_its_own_with_their_baselines(log: Server) -> None:
    bench("append", "--log", log.url, "--count", "5")
    r = bench_json("read", "--log", log.url, "--read-kind", "proof,tile", "--read-kind",
                   "checkpoint", "--count", "30", "--concurrency", "4", "--runs", "2",
                   "--baseline")
    assert r["runs"] == 2 and r["read_kinds"] == ["proof", "tile", "checkpoint"]
    kinds = r["by_read_kind"]
    assert list(kinds) == ["proof", "tile", "checkpoint"]
    for kind, k in kinds.items():
        assert k["runs"] == 2 and len(k["rounds"]) == 2
        assert [x["requests"] for x in k["rounds"]] == [30, 30] and k["ok"] == 60
        assert "by_kind" not in k  # one kind of request each
        assert all(x["baseline"]["ok"] == 30 for x in k["rounds"])
        assert ("minimal_ratio" in k) == (kind == "proof")  # the trivial GET: proofs only
    assert kinds["proof"]["minimal_baseline"]["ok"] == 60
    # The same-size baseline answers as many bytes as the log's reply of that kind.
    tile = kinds["tile"]["baseline"]["reply_bytes"]
    assert tile > 0 and tile % 32 == 0
    assert kinds["checkpoint"]["baseline"]["reply_bytes"] == len(
        urllib.request.urlopen(f"{log.url}/checkpoint", timeout=10).read())


def test_mixed_rounds_of_each_read_kind_append_releases_of_their_own(log: Server) -> None:
    # Every round and kind numbers its releases apart: a version sent again with another
    # digest would be refused (409) and count as the log's error.
    r = bench_json("mixed", "--log", log.url, "--read-kind", "checkpoint,tile", "--count", "20",
                   "--read-ratio", "0.5", "--runs", "2", "--concurrency", "4")
    assert list(r["by_read_kind"]) == ["checkpoint", "tile"]
    for k in r["by_read_kind"].values():
        assert k["ok"] == k["requests"] == 40 and k["errors"] == {}, k
        assert k["entries"] >= 2 and "append" in k["by_kind"]
    appended = sum(k["entries"] for k in r["by_read_kind"].values())
    assert r["tree_size_after"] - r["tree_size_before"] >= appended


def test_runs_print_medians_and_every_round(log: Server) -> None:
    r = bench_json("append", "--log", log.url, "--count", "10", "--runs", "3",
                   "--concurrency", "2")
    rounds = r["rounds"]
    assert len(rounds) == 3 and r["entries"] == 30 and r["requests"] == 30
    assert r["throughput_rps"] == sorted(x["throughput_rps"] for x in rounds)[1]
    assert r["latency_ms"]["p99"] == sorted(x["latency_ms"]["p99"] for x in rounds)[1]
    proc = bench("read", "--log", log.url, "--count", "20", "--runs", "2", "--baseline")
    assert proc.returncode == 0, proc.stderr
    assert "2 interleaved rounds (medians; each round in brackets)" in proc.stdout
    assert proc.stdout.count("(median of 2) [") == 2  # the log's and the baseline's
    assert "log/baseline throughput: " in proc.stdout


def test_dead_log_exits_3_with_the_reason() -> None:
    port = free_port()
    proc = bench("append", "--log", f"http://127.0.0.1:{port}", "--count", "1")
    assert proc.returncode == 3
    assert f"can't reach the log at http://127.0.0.1:{port}" in proc.stderr


@pytest.mark.parametrize("option", [("--concurrency", "0"), ("--duration", "10x"),
                                    ("--batch-size", "1001"), ("--read-ratio", "2"),
                                    ("--rate", "0"), ("--count", "0"), ("--runs", "0"),
                                    ("--read-kind", "proofs"), ("--packages", "0")])
def test_bad_options_exit_2(option: tuple[str, str]) -> None:
    proc = bench("append", "--log", "http://127.0.0.1:9", *option)
    assert proc.returncode == 2
    assert option[0] in proc.stderr


def test_read_kind_is_refused_for_appends() -> None:
    proc = bench("append", "--log", "http://127.0.0.1:9", "--read-kind", "tile")
    assert proc.returncode == 2
    assert "--read-kind applies to the read and mixed modes" in proc.stderr


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) == 0.0
