"""The `tlog` command: keygen, serve's refusals, publish, and the embedded `tlog dev`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port, published_size, start_server, write_key
from tests.tlog.sizes import leaves
from tlog.cli.pgcluster import Cluster
from verifier.protocol.note import Signer, parse_private_key, parse_vkey
from verifier.protocol.receipt import verify_receipt
from verifier.protocol.trust import KeyTrust


def tlog(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlog", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    proc = tlog("keygen", "--name", "example.com/log", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    key, vkey = tmp_path / "example.com_log.key", tmp_path / "example.com_log.vkey"
    assert key.stat().st_mode & 0o777 == 0o600
    signer = parse_private_key(key.read_text().strip())
    assert signer.name == "example.com/log"
    assert parse_vkey(vkey.read_text().strip()) == signer.verifier()


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    assert tlog("keygen", "--name", "pub", "--out", str(tmp_path)).returncode == 0
    before = (tmp_path / "pub.key").read_text()
    proc = tlog("keygen", "--name", "pub", "--out", str(tmp_path))
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr
    assert (tmp_path / "pub.key").read_text() == before


def test_serve_refuses_a_key_file_others_can_read(tmp_path: Path, log_signer: Signer,
                                                  database_url: str) -> None:
    key = write_key(tmp_path / "log.key", log_signer)
    key.chmod(0o644)
    proc = tlog("serve", "--database-url", database_url, "--key", str(key))
    assert proc.returncode == 2
    assert "readable by others" in proc.stderr and "chmod 600" in proc.stderr


def test_serve_without_database_says_how_to_give_one(tmp_path: Path, log_signer: Signer) -> None:
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("TLOG_")}
    proc = subprocess.run([sys.executable, "-m", "tlog", "serve", "--key", "x"],
                          capture_output=True, text=True, env=env_free, check=False, timeout=60)
    assert proc.returncode == 2 and "TLOG_DATABASE_URL" in proc.stderr


def test_publish_logs_a_release_and_writes_a_verified_receipt(
        tmp_path: Path, log_signer: Signer, database_url: str) -> None:
    log_key = write_key(tmp_path / "log.key", log_signer)
    log_vkey = tmp_path / "log.vkey"
    log_vkey.write_text(log_signer.verifier().text() + "\n")
    assert tlog("keygen", "--name", "acme-bot", "--out", str(tmp_path / "keys")).returncode == 0
    apk = tmp_path / "app-1.2.apk"
    apk.write_bytes(os.urandom(100_000))
    server = start_server(database_url, log_key, tmp_path)
    try:
        args = ["publish", "--log", server.url, "--log-key", str(log_vkey),
                "--key", str(tmp_path / "keys" / "acme-bot.key"),
                "--package", "com.acme.app", "--version", "1.2", "--counter", "7", str(apk)]
        proc = tlog(*args)
        again = tlog(*args)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert "logged com.acme.app 1.2 at index 0" in proc.stdout
    assert again.returncode == 0 and "already logged" in again.stdout
    receipt = json.loads((tmp_path / "app-1.2.apk.tlog-receipt.json").read_text())
    verified = verify_receipt(receipt, KeyTrust(log_signer.verifier()))
    assert verified.index == 0
    assert verified.release.entry["counter"] == 7
    assert verified.release.entry["artifacts"][0]["size"] == 100_000


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def test_dev_runs_a_log_on_its_own_postgres_and_stops_it(searchable_dir: Path) -> None:
    home = searchable_dir / "devhome"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tlog", "dev", "--home", str(home),
                             "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = ""
        deadline = time.monotonic() + 90
        while "curl" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line and proc.poll() is not None:
                break
            banner += line
        assert "curl" in banner, banner
        vkey = parse_vkey((home / "log.vkey").read_text().strip())
        assert vkey.text() in banner
        assert published_size(f"http://127.0.0.1:{port}", vkey, 0) == 0
        assert (home / "log.key").stat().st_mode & 0o777 == 0o600
        assert tlog("keygen", "--name", "dev-bot", "--out", str(home / "keys")).returncode == 0
        artifact = home / "tool.bin"
        artifact.write_bytes(b"tool")
        pub = tlog("publish", "--log", f"http://127.0.0.1:{port}", "--log-key",
                   str(home / "log.vkey"), "--key", str(home / "keys" / "dev-bot.key"),
                   "--package", "tool", "--version", "1", str(artifact))
        assert pub.returncode == 0, pub.stderr
        assert published_size(f"http://127.0.0.1:{port}", vkey, leaves(1)) == leaves(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopping PostgreSQL" in out
    assert not Cluster(home / "postgres").is_running()


@pytest.mark.parametrize("argv", [
    ["token", "revoke", "--log", "http://127.0.0.1:1", "--admin-token", "s3cretVALUE", "x"],
    ["registry", "revoke", "--log", "http://127.0.0.1:1", "--admin-token", "s3cretVALUE",
     "--signer", "k", "--publisher", "p", "--all"],
    ["serve", "--admin-token", "s3cretVALUE"],
    ["token", "revoke", "--log", "http://127.0.0.1:1", "--admin-tok", "s3cretVALUE", "x"],
])
def test_an_admin_secret_on_the_command_line_is_refused_not_read_as_a_file(
        argv: list[str]) -> None:
    """No abbreviation of --admin-token-file: the secret is never taken for a file name (whose
    error would print it), and --admin-token itself says where a secret belongs."""
    proc = tlog(*argv)
    assert proc.returncode == 2, proc.stderr
    assert "couldn't read" not in proc.stderr
    if "--admin-token" in argv:
        assert "s3cretVALUE" not in proc.stderr
        assert "--admin-token-file" in proc.stderr
