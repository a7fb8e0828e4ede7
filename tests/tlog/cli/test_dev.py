"""`tlog dev`: where its cluster goes, the recipes and the database URL it prints."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, make_release, published_size
from tlog.cli.dev import ROOT_CLUSTERS, cluster_home
from tlog.cli.pgcluster import Cluster
from verifier.protocol.note import generate_key, parse_vkey

BIN = Path(sys.executable).parent  # where the `tlog` command of this environment is


@dataclass
class Dev:
    home: Path
    url: str
    banner: str


@contextmanager
def running_dev(home: Path, *options: str) -> Iterator[Dev]:
    """`tlog dev` in a subprocess until its banner is out; stopped (and checked to stop
    PostgreSQL cleanly) on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tlog", "dev", "--home", str(home),
                             "--listen", f"127.0.0.1:{port}", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    banner = ""
    try:
        deadline = time.monotonic() + 90
        while "stop:" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line and proc.poll() is not None:
                break
            banner += line
        assert "stop:" in banner, banner
        yield Dev(home, f"http://127.0.0.1:{port}", banner)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, banner + out
    assert "stopping PostgreSQL" in out
    assert not Cluster(cluster_home(home.absolute())).is_running()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def _size(dev: Dev, want: int) -> int:
    """The size of the dev log's /checkpoint once it is `want` (its demo witness cosigns
    every second)."""
    return published_size(dev.url, parse_vkey((dev.home / "log.vkey").read_text().strip()),
                          want)


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120, check=False)


def _recipe(banner: str) -> str:
    """The publish commands of the banner, continuation lines joined as a shell reads them."""
    lines = banner.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  publish:"))
    out = [lines[start].split("publish:", 1)[1].strip()]
    while out[-1].endswith("\\"):
        start += 1
        out.append(lines[start].strip())
    return "\n".join(out)


def test_dev_as_root_from_a_home_postgres_cannot_reach_runs_and_says_where(tmp_path: Path
                                                                            ) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user (postgres)")
    home = Path(tempfile.mkdtemp(prefix="tlog-dev-private-"))  # mode 0700, owned by root
    assert home.stat().st_mode & 0o777 == 0o700
    placed = cluster_home(home)
    try:
        with running_dev(home) as dev:
            assert _size(dev, 0) == 0
            assert placed.parent == ROOT_CLUSTERS
            assert f"PostgreSQL in {placed}" in dev.banner
            assert Cluster(placed).is_running()
        assert (home / "log.key").exists() and not (home / "postgres").exists()
        with running_dev(home) as dev:  # the second start finds the same cluster and log
            assert _size(dev, 0) == 0
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(placed, ignore_errors=True)


def test_dev_registered_prints_a_publish_recipe_that_works(searchable_dir: Path) -> None:
    home = searchable_dir / "my dev"  # a space: the recipe quotes its paths
    artifact = searchable_dir / "tool.bin"
    artifact.write_bytes(b"tool")
    with running_dev(home, "--policy", "registered") as dev:
        recipe = _recipe(dev.banner)
        assert "--token-file" in recipe and "Authorization" not in recipe
        keygen, rest = recipe.split(" && \\\n", 1)
        assert _run(keygen, searchable_dir).returncode == 0
        publish = "tlog publish" + rest.split("tlog publish", 1)[1].replace("FILE", str(artifact))
        token = shlex.quote(str(home / "keys" / "my-publisher.token"))
        no_token = _run(publish.replace(f" --token-file {token}", ""), searchable_dir)
        assert no_token.returncode != 0
        assert "401" in no_token.stderr and "token_missing" in no_token.stderr, no_token.stderr
        assert "use --token-file with tlog publish" in no_token.stderr
        assert _size(dev, 0) == 0
        done = _run(rest.replace("FILE", str(artifact)), searchable_dir)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "logged demo 1.0" in done.stdout
        assert "warning" not in done.stderr  # every step pins the log key
        # The registration, then the release: each batch ends with its map-root leaf.
        assert _size(dev, 4) == 4


def _line(banner: str, label: str) -> str:
    return next(line.split(label, 1)[1].strip() for line in banner.splitlines()
                if line.startswith(f"  {label}"))


def _post(url: str, entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{url}/v1/entries", data=json.dumps(entry).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextmanager
def _second_server(command: str, cwd: Path) -> Iterator[str]:
    """The banner's second-server command, run by a shell, until it answers /readyz."""
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(["sh", "-c", command.replace("PORT", str(port))], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own group: the shell and tlog serve
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "second server died"
            try:
                _get(f"{url}/readyz")
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)


def test_dev_takes_the_quotas_of_serve_and_shares_its_database(searchable_dir: Path) -> None:
    """Bulk loading into a dev log needs its quotas and its database URL: a second `tlog
    serve` and psql join the same database with the URL file the banner names."""
    home = searchable_dir / "dev"
    pub = generate_key("bulk-bot")
    with running_dev(home, "--client-burst", "1", "--client-rate", "0.001") as dev:
        url_file = home / "database-url"
        assert url_file.stat().st_mode & 0o777 == 0o600
        database_url = url_file.read_text().strip()
        password = Cluster(cluster_home(home)).password()
        assert password in database_url and password not in dev.banner
        assert _line(dev.banner, "database:") == database_url.replace(password, "***")
        assert _post(dev.url, make_release(pub, "bulk", "1"))[0] == 201
        status, body = _post(dev.url, make_release(pub, "bulk", "2"))
        assert (status, body["error"]["code"]) == (429, "rate_limited")
        assert _size(dev, 2) == 2  # the release and its batch's map-root leaf
        psql = _line(dev.banner, "psql:") + " -X -A -t -c 'SELECT count(*) FROM entries'"
        counted = _run(psql, searchable_dir)
        assert (counted.returncode, counted.stdout.strip()) == (0, "2"), counted.stderr
        with _second_server(_line(dev.banner, "second server:"), searchable_dir) as second:
            assert _post(second, make_release(pub, "bulk", "2"))[0] == 201
        assert _size(dev, 4) == 4


def _verify_recipe(banner: str) -> str:
    lines = banner.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  verify:"))
    return lines[start].split("verify:", 1)[1].strip().rstrip("\\") + lines[start + 1].strip()


def test_dev_publishes_per_its_demo_witness_and_the_printed_recipes_keep_a_cooldown(
        searchable_dir: Path) -> None:
    """`make run` end to end: the banner's recipe publishes with --wait-cosigned, the receipt
    carries the demo witness's cosignature, and the banner's verify command refuses the
    release inside its cooldown (too new) and accepts it once the cooldown is over."""
    home = searchable_dir / "dev"
    artifact = searchable_dir / "app.bin"
    artifact.write_bytes(b"app")
    with running_dev(home) as dev:
        assert "protects nothing" in dev.banner
        recipe = _recipe(dev.banner).replace("FILE", str(artifact))
        assert "--wait-cosigned --policy" in recipe
        done = _run(recipe, searchable_dir)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "at index 0 (cosigned tree size 2)" in done.stdout  # and the map-root leaf
        receipt = json.loads((searchable_dir / "app.bin.tlog-receipt.json").read_text())
        assert "— localhost/tlog-dev-witness " in receipt["proof"]
        verify = _verify_recipe(dev.banner).replace("FILE", str(artifact))
        assert "--min-age 10s" in verify
        early = _run(verify, searchable_dir)
        assert early.returncode == 1 and "too new" in early.stderr, early.stderr
        later = _run(verify.replace("--min-age 10s", "--min-age 1s"), searchable_dir)
        if later.returncode != 0:  # cosigned less than a second ago: wait it out once
            time.sleep(1.5)
            later = _run(verify.replace("--min-age 10s", "--min-age 1s"), searchable_dir)
        assert later.returncode == 0, later.stderr
        assert "OK demo 1.0" in later.stdout
        receipt_file = shlex.quote(str(searchable_dir / "app.bin.tlog-receipt.json"))
        no_policy = _run(f"tlog-verify bundle {receipt_file} --key "
                         f"{shlex.quote(str(home / 'log.vkey'))} --min-age 1s "
                         f"--artifact {shlex.quote(str(artifact))}", searchable_dir)
        assert no_policy.returncode == 2, no_policy.stderr
        assert "--min-age needs --policy" in no_policy.stderr


def test_dev_without_witness_serves_the_log_signed_checkpoint(searchable_dir: Path) -> None:
    with running_dev(searchable_dir / "dev", "--no-witness") as dev:
        assert "none (--no-witness)" in dev.banner
        assert "--wait-cosigned" not in _recipe(dev.banner)
        assert b"tlog-dev-witness" not in _get(f"{dev.url}/checkpoint")
