"""`tlog-verify witness`: keygen files, refused key files, and the real server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port, write_key
from tests.verifier.witness.support import ORIGIN, TestLog
from verifier.cli.main import main
from verifier.client.keys import read_witness_key
from verifier.protocol.cosignature import parse_witness_vkey, verify_cosignature
from verifier.protocol.note import generate_key, parse_note
from verifier.protocol.witness import origin_hash

LOG = TestLog()


def test_keygen_writes_a_private_key_only_its_owner_reads_and_the_vkey(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["witness", "keygen", "--name", "witness.example/w1", "--out",
                 str(tmp_path / "keys")]) == 0
    key = tmp_path / "keys" / "witness.example_w1.key"
    vkey = tmp_path / "keys" / "witness.example_w1.vkey"
    assert key.stat().st_mode & 0o777 == 0o600
    signer = read_witness_key(key)
    text = vkey.read_text()
    assert text.endswith("\n") and parse_witness_vkey(text.strip()) == signer.verifier()
    out = capsys.readouterr().out
    assert str(key) in out and str(vkey) in out and text.strip() in out
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [key.name, vkey.name]


def test_keygen_never_overwrites_a_key_unless_forced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["witness", "keygen", "--name", "w1", "--out", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "w1.key").read_text()
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "w1.key").read_text() == before
    assert main([*args, "--force"]) == 0
    after = read_witness_key(tmp_path / "w1.key")
    assert (tmp_path / "w1.key").read_text() != before
    assert parse_witness_vkey((tmp_path / "w1.vkey").read_text().strip()) == after.verifier()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1.key", "w1.vkey"]


def test_keygen_refuses_a_bad_name(tmp_path: Path) -> None:
    assert main(["witness", "keygen", "--name", "bad name", "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    assert main(["witness", "keygen", "--name", "witness.example/w1", "--out",
                 str(tmp_path)]) == 0
    log_vkey = tmp_path / "log.vkey"
    log_vkey.write_text(LOG.signer.verifier().text() + "\n")
    return {"key": tmp_path / "witness.example_w1.key",
            "vkey": tmp_path / "witness.example_w1.vkey", "log": log_vkey}


def serve_args(keys: dict[str, Path], tmp_path: Path, *extra: str) -> list[str]:
    return ["witness", "serve", "--key", str(keys["key"]), "--log-key", str(keys["log"]),
            "--state", str(tmp_path / "state"), "--listen", "127.0.0.1:1", *extra]


@pytest.mark.parametrize(("change", "message"), [
    ("witness-key-as-log-key", "witness key (type 0x04)"),
    ("log-key-as-witness-key", "does not hold a witness private key"),
    ("readable-witness-key", "readable by others"),
    ("missing-log-key", "couldn't read"),
    ("bad-listen", "--listen"),
    ("state-not-a-database", "couldn't open the state"),
])
def test_bad_key_files_and_options_exit_2_with_a_reason(
        keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        change: str, message: str) -> None:
    args = serve_args(keys, tmp_path)
    if change == "witness-key-as-log-key":
        args[args.index(str(keys["log"]))] = str(keys["vkey"])
    elif change == "log-key-as-witness-key":
        args[args.index(str(keys["key"]))] = str(write_key(tmp_path / "log.key", LOG.signer))
    elif change == "readable-witness-key":
        keys["key"].chmod(0o644)
    elif change == "missing-log-key":
        args[args.index(str(keys["log"]))] = str(tmp_path / "nope.vkey")
    elif change == "bad-listen":
        args[args.index("127.0.0.1:1")] = "nowhere"
    else:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "witness.db").write_bytes(b"not a database" * 100)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "state").exists() or change == "state-not-a-database"


def test_evidence_of_a_missing_state_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["witness", "evidence", "--state", str(tmp_path)]) == 2


def _post(url: str, body: bytes) -> tuple[int, str]:
    req = urllib.request.Request(url + "/add-checkpoint", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _start(keys: dict[str, Path], tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    args = serve_args(keys, tmp_path)
    args[args.index("127.0.0.1:1")] = f"127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "verifier.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("witness witness.example/w1 witness.example/w1+"), (
        line + proc.stderr.read() if proc.stderr else line)
    assert f"127.0.0.1:{port}" in line and ORIGIN in line
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_the_served_witness_cosigns_refuses_forks_and_keeps_state_across_restarts(
        keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc, url = _start(keys, tmp_path)
    try:
        status, line = _post(url, LOG.body(0, 10))
        assert status == 200
        witness = parse_witness_vkey(keys["vkey"].read_text().strip())
        note = LOG.checkpoint(10) + line
        verify_cosignature(witness, parse_note(note).text, parse_note(note).signatures[-1])
        fork = TestLog(LOG.signer, tag="b", shared=4)
        assert _post(url, fork.body(10, 10))[0] == 409
        assert _post(url, TestLog(generate_key(ORIGIN)).body(10, 12))[0] == 403
    finally:
        _stop(proc)
    proc, url = _start(keys, tmp_path)
    try:
        assert _post(url, LOG.body(0, 20)) == (409, "10\n")
        assert _post(url, LOG.body(10, 20))[0] == 200
        with urllib.request.urlopen(f"{url}/{origin_hash(ORIGIN)}/checkpoint") as resp:
            assert resp.read().decode().startswith(LOG.checkpoint(20))
    finally:
        _stop(proc)
    capsys.readouterr()
    assert main(["witness", "evidence", "--state", str(tmp_path / "state"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # The fork only: the 409 on the old size after the restart is the spec's probe, not
    # misbehaviour.
    assert [r["origin"] for r in rows] == [ORIGIN]
    assert "fork" in rows[0]["reason"] and fork.checkpoint(10) in rows[0]["body"]
    assert main(["witness", "evidence", "--state", str(tmp_path / "state")]) == 0
    assert "1 evidence record(s)" in capsys.readouterr().out
