"""Every metric the dashboard and the alerts name is one the services really export: a log
with a witness policy, its witness and a monitor run as real processes, a few releases are
appended and cosigned, and /metrics of the log and of the monitor are scraped. They run
under the kernel's memory-deny-write-execute (tests/deploy/mdwe.py), as the systemd units'
MemoryDenyWriteExecute=yes runs them; the container health check is tried on them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import _create_database
from tests.deploy.mdwe import UNSUPPORTED
from tests.deploy.support import DEPLOY, REPO
from tests.support import free_port, make_release, write_key
from tlog.cli.pgcluster import Cluster
from verifier.protocol.note import Signer, generate_key

ENV = {**os.environ, "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
METRIC = re.compile(r"\btlog_[a-z_]+\b")
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def mdwe_works() -> bool:
    run = subprocess.run([sys.executable, "-m", "tests.deploy.mdwe", sys.executable, "-c",
                          "pass"], env=ENV, capture_output=True, check=False, timeout=60)
    return run.returncode != UNSUPPORTED


MDWE = mdwe_works()


def python_m(*args: str) -> list[str]:
    """`python -m ARGS`, under memory-deny-write-execute where the kernel has it."""
    wrap = [sys.executable, "-m", "tests.deploy.mdwe"] if MDWE else []
    return [*wrap, sys.executable, "-m", *args]


def http(url: str, body: Any = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Stack:
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> None:
        out = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(argv, env=ENV, stdout=out, stderr=subprocess.STDOUT)

    def wait(self, what: str, ok: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.procs.items():
                assert proc.poll() is None, \
                    f"{name} exited:\n{(self.tmp / f'{name}.log').read_text()}"
            try:
                if ok():
                    return
            except (OSError, ValueError, IndexError):
                pass  # not answering yet
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Running:
    log: str
    witness: str
    log_metrics: str
    monitor_metrics: str


def witness_policy(tmp: Path, log: Signer, port: int) -> Path:
    made = subprocess.run([sys.executable, "-m", "verifier.cli", "witness", "keygen", "--name",
                           "w1.example/witness", "--out", str(tmp / "w1")], env=ENV,
                          capture_output=True, text=True, check=False, timeout=60)
    assert made.returncode == 0, made.stderr
    vkey = (tmp / "w1" / "w1.example_witness.vkey").read_text().strip()
    policy = tmp / "policy"
    policy.write_text(f"log {log.verifier().text()}\n"
                      f"witness w1 {vkey} http://127.0.0.1:{port}\nquorum w1\n")
    return policy


def published_size(log: str) -> int:
    status, body = http(log + "/checkpoint")
    return int(body.split("\n")[1]) if status == 200 else -1


def tree_size(log: str) -> int:
    return int(json.loads(http(log + "/v1/log")[1])["tree_size"])


@pytest.fixture(scope="module")
def running(pg_cluster: Cluster, log_signer: Signer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("deploy-stack")
    database = asyncio.run(_create_database(pg_cluster, f"deploy_metrics{os.getpid()}"))
    key = write_key(tmp / "log.key", log_signer)
    vkey = tmp / "log.vkey"
    vkey.write_text(log_signer.verifier().text() + "\n")
    ports = {name: free_port() for name in ("witness", "log", "monitor")}
    policy = witness_policy(tmp, log_signer, ports["witness"])
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    stack = Stack(tmp)
    try:
        stack.start("witness", python_m(
            "verifier.cli", "witness", "serve", "--key", str(tmp / "w1/w1.example_witness.key"),
            "--log-key", str(vkey), "--state", str(tmp / "w1/state"),
            "--listen", f"127.0.0.1:{ports['witness']}"))
        stack.wait("the witness answers", lambda: http(urls["witness"] + "/healthz")[0] == 200)
        stack.start("log", python_m(
            "tlog", "serve", "--database-url", database, "--key", str(key), "--listen",
            f"127.0.0.1:{ports['log']}", "--policy", "open", "--witness-policy", str(policy),
            "--witness-interval", "0.2"))
        stack.wait("the log is ready", lambda: http(urls["log"] + "/readyz")[0] == 200)
        append_and_refuse(urls["log"])
        size = tree_size(urls["log"])
        stack.wait("the witness cosigns", lambda: published_size(urls["log"]) == size)
        stack.start("monitor", python_m(
            "verifier.cli", "monitor", "--log", urls["log"], "--policy", str(policy),
            "--state", str(tmp / "monitor"), "--follow", "--interval", "0.5", "--workers", "0",
            "--metrics-port", str(ports["monitor"])))
        stack.wait("the monitor finishes a round", lambda: monitor_done(urls["monitor"], size))
        yield Running(urls["log"], urls["witness"], http(urls["log"] + "/metrics")[1],
                      http(urls["monitor"] + "/metrics")[1])
    finally:
        stack.stop()


def append_and_refuse(log: str) -> None:
    """A few releases (batches, witness rounds, HTTP metrics) and a refusal (its code)."""
    publisher = generate_key("acme-release-bot")
    for i in range(3):
        status, body = http(log + "/v1/entries", make_release(publisher, "app", f"1.{i}"))
        assert status == 201, body
    status, _ = http(log + "/v1/entries", {"not": "an entry"})
    assert status == 422


def monitor_done(url: str, size: int) -> bool:
    samples = dict(line.rsplit(" ", 1) for line in http(url + "/metrics")[1].splitlines()
                   if line.startswith("tlog_monitor_") and "{" not in line)
    return (float(samples["tlog_monitor_tree_size"]) >= size
            and float(samples["tlog_monitor_last_success_timestamp_seconds"]) > 0)


def exported(scrape: str) -> set[str]:
    """The sample names of a scrape, and those its families declare (a labelled metric with
    no child yet has only its # TYPE line)."""
    names = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines()
             if line and not line.startswith("#")}
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def dashboard_queries() -> list[str]:
    board = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def alert_expressions() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_every_metric_the_dashboard_and_the_alerts_name_is_exported(running: Running) -> None:
    have = exported(running.log_metrics) | exported(running.monitor_metrics)
    for source, queries in (("dashboard", dashboard_queries()), ("alerts", alert_expressions())):
        assert queries
        for query in queries:
            missing = set(METRIC.findall(query)) - have
            assert not missing, f"{source}: {query}\nnames no exported metric: {missing}"


def test_the_scrapes_hold_what_happened(running: Running) -> None:
    """The scrapes are of a log that appended, cosigned and refused: not empty families."""
    log, monitor = running.log_metrics, running.monitor_metrics
    assert re.search(r"^tlog_published_tree_size [1-9]", log, re.M)
    assert re.search(r'^tlog_witness_requests_total\{result="cosigned",witness="w1"\} [1-9]',
                     log, re.M)
    assert re.search(r'^tlog_refusals_total\{code="invalid_entry"\} 1\.0', log, re.M)
    assert re.search(r"^tlog_database_up 1\.0", log, re.M)
    assert re.search(r"^tlog_checkpoint_timestamp_seconds [1-9]", log, re.M)
    assert re.search(r'^tlog_monitor_events_total\{alert="",type="release"\} 3\.0', monitor,
                     re.M)


def test_the_services_ran_under_memory_deny_write_execute(running: Running) -> None:
    if not MDWE:
        pytest.skip("this kernel has no prctl(PR_SET_MDWE) (Linux 6.3+)")
    denied = subprocess.run(  # prot 7: read, write and execute
        [sys.executable, "-m", "tests.deploy.mdwe", sys.executable, "-c",
         "import mmap; mmap.mmap(-1, 4096, prot=7)"], env=ENV, capture_output=True, text=True,
        check=False, timeout=60)
    assert "PermissionError" in denied.stderr  # the wrapper does deny what the unit denies


def healthcheck(env: dict[str, str]) -> int:
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py")],
                          env={**ENV, **env}, capture_output=True, check=False,
                          timeout=60).returncode


def test_the_container_health_check(running: Running) -> None:
    port = running.log.rpartition(":")[2]
    assert healthcheck({"TLOG_LISTEN": f"0.0.0.0:{port}"}) == 0
    assert healthcheck({"TLOG_HEALTH_URL": running.witness + "/healthz"}) == 0
    assert healthcheck({"TLOG_HEALTH_URL": f"http://127.0.0.1:{free_port()}/healthz"}) == 1
    assert healthcheck({"TLOG_HEALTH_URL": running.log + "/no-such-page"}) == 1
