"""`tlog publish --artifact` and `tlog publish --batch` against a real log (tlog serve).

The batch tests run whichever path the log offers: POST /v1/entries/batch when the route
exists, else the one-by-one fallback (POST /v1/entries), which must then say so on stderr.
`batch_route` probes the route, so each test asserts the path it took.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, start_server, write_key
from tlog.client.publish import Publisher
from verifier.client.keys import read_vkey
from verifier.errors import VerificationFailed
from verifier.protocol.note import Signer, Verifier, generate_key
from verifier.protocol.receipt import verify_receipt
from verifier.protocol.trust import KeyTrust

ACME = generate_key("acme")
NOTICE = "has no POST /v1/entries/batch"


def tlog(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlog", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def tree_size(server: Server) -> int:
    with urllib.request.urlopen(server.url + "/v1/log", timeout=5) as resp:
        return int(json.load(resp)["tree_size"])


def batch_route(server: Server) -> bool:
    """Whether the log has POST /v1/entries/batch (an empty body is refused, not 404)."""
    req = urllib.request.Request(server.url + "/v1/entries/batch", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code not in (404, 405)


def assert_path_taken(server: Server, stderr: str) -> None:
    assert (NOTICE in stderr) != batch_route(server), stderr


def release(i: int, package: str = "com.acme.app") -> dict[str, Any]:
    r: dict[str, Any] = {
        "package": package, "version": f"1.0.{i}",
        "artifacts": [{"name": f"app-1.0.{i}.apk",
                       "sha256": hashlib.sha256(str(i).encode()).hexdigest(), "size": i}]}
    if i % 3 == 0:
        r["counter"] = i
    if i % 5 == 0:
        r["metadata"] = {"commit": f"{i:040x}"}
    if i % 7 == 0:
        r["install_window"] = {"not_before": "2026-01-01T00:00:00Z",
                               "not_after": "2036-01-01T00:00:00Z"}
    return r


def write_batch(path: Path, releases: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in releases))
    return path


def receipts_of(path: Path, log: Verifier) -> list[tuple[str, str, int]]:
    """(package, version, index) of every line of a receipts file, each verified."""
    out = []
    for line in path.read_text().splitlines():
        verified = verify_receipt(json.loads(line), KeyTrust(log))
        out.append((verified.release.package, verified.release.version, verified.index))
    return out


@pytest.fixture
def world(tmp_path: Path, log_signer: Signer, database_url: str) -> Any:
    log_vkey = tmp_path / "log.vkey"
    log_vkey.write_text(log_signer.verifier().text() + "\n")
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path)
    yield server, log_vkey, write_key(tmp_path / "acme.key", ACME)
    server.stop()


def batch_args(server: Server, log_vkey: Path, key: Path, batch: Path, *extra: str) -> list[str]:
    return ["publish", "--log", server.url, "--log-key", str(log_vkey), "--key", str(key),
            "--batch", str(batch), *extra]


def test_artifact_publishes_files_not_here_and_the_receipt_verifies_offline(
        world: Any, tmp_path: Path) -> None:
    server, log_vkey, key = world
    digest = hashlib.sha256(b"apk").hexdigest()
    out = tmp_path / "receipt.json"
    proc = tlog("publish", "--log", server.url, "--log-key", str(log_vkey), "--key", str(key),
                "--package", "com.acme.app", "--version", "2.0", "--counter", "3",
                "--artifact", f"app:arm64.apk:{digest}:3", "--artifact", f"app.sig:{digest}:0",
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "logged com.acme.app 2.0 at index 0" in proc.stdout
    entry = json.loads(out.read_text())["entry"]
    assert entry["artifacts"] == [{"name": "app:arm64.apk", "sha256": digest, "size": 3},
                                  {"name": "app.sig", "sha256": digest, "size": 0}]
    check = subprocess.run([sys.executable, "-m", "verifier.cli", "bundle", str(out), "--key",
                            str(log_vkey), "--no-artifact"], capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(("spec", "says"), [
    (f"app.apk:{'A' * 64}:3", "64 lowercase hex"),
    (f"app.apk:{'a' * 63}:3", "64 lowercase hex"),
    (f"app.apk:{'a' * 64}:3k", "decimal byte count"),
    (f"app.apk:{'a' * 64}:-1", "decimal byte count"),
    (f"{'a' * 64}:3", "NAME:SHA256:SIZE"),
    (f"{'n' * 257}:{'a' * 64}:3", "1-256 characters"),
])
def test_a_malformed_artifact_spec_is_a_usage_error_and_nothing_is_sent(
        tmp_path: Path, spec: str, says: str) -> None:
    # No log listens there: the spec is refused before any connection.
    proc = tlog("publish", "--log", "http://127.0.0.1:9", "--log-key", "nonexistent",
                "--key", str(write_key(tmp_path / "acme.key", ACME)), "--package", "p",
                "--version", "1", "--artifact", spec)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr


def test_artifact_and_files_together_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "app.apk"
    f.write_bytes(b"x")
    proc = tlog("publish", "--log", "http://127.0.0.1:9", "--key", "k", "--package", "p",
                "--version", "1", "--artifact", f"a:{'a' * 64}:1", str(f))
    assert proc.returncode == 2 and "not both" in proc.stderr


def test_batch_logs_every_release_and_a_rerun_submits_nothing(world: Any,
                                                               tmp_path: Path) -> None:
    server, log_vkey, key = world
    releases = [release(i) for i in range(300)]
    batch = write_batch(tmp_path / "releases.jsonl", releases)
    proc = tlog(*batch_args(server, log_vkey, key, batch, "--chunk-size", "100"))
    assert proc.returncode == 0, proc.stderr
    assert "logged 300 new, 0 already logged, 0 skipped" in proc.stdout
    assert_path_taken(server, proc.stderr)
    receipts = tmp_path / "releases.jsonl.receipts.jsonl"
    logged = receipts_of(receipts, read_vkey(log_vkey))
    assert sorted(p[:2] for p in logged) == sorted((r["package"], r["version"])
                                                   for r in releases)
    assert len({index for *_, index in logged}) == 300
    first = tmp_path / "first.json"
    first.write_text(receipts.read_text().splitlines()[0])
    check = subprocess.run([sys.executable, "-m", "verifier.cli", "bundle", str(first),
                            "--key", str(log_vkey), "--no-artifact"], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr
    size = tree_size(server)
    again = tlog(*batch_args(server, log_vkey, key, batch))
    assert again.returncode == 0, again.stderr
    assert "logged 0 new, 0 already logged, 300 skipped" in again.stdout
    assert tree_size(server) == size
    assert len(receipts.read_text().splitlines()) == 300


def test_an_interrupted_batch_resumes_where_its_receipts_end(world: Any,
                                                             tmp_path: Path) -> None:
    server, log_vkey, key = world
    batch = write_batch(tmp_path / "r.jsonl", [release(i) for i in range(400)])
    receipts = tmp_path / "r.jsonl.receipts.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tlog",
                             *batch_args(server, log_vkey, key, batch, "--chunk-size", "10")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if receipts.exists() and receipts.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL, "the run finished before it could be killed"
    before = receipts.read_bytes().count(b"\n")
    assert 20 <= before < 400
    with receipts.open("ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"entry": {"kind": "release/v1", "package": "com.ac')
    again = tlog(*batch_args(server, log_vkey, key, batch, "--chunk-size", "10"))
    assert again.returncode == 0, again.stderr
    # The chunk in flight at the kill may be logged without its receipts: answered 200 now.
    counts = re.search(r"logged (\d+) new, (\d+) already logged, (\d+) skipped", again.stdout)
    assert counts is not None, again.stdout
    new, old, skipped = map(int, counts.groups())
    assert skipped == before and new + old == 400 - before and old <= 10
    logged = receipts_of(receipts, read_vkey(log_vkey))
    assert len(logged) == 400 and len({v for _, v, _ in logged}) == 400


def test_a_chunk_over_the_logs_body_cap_is_split_until_it_fits(
        tmp_path: Path, log_signer: Signer, database_url: str) -> None:
    """A log whose batch body cap (--max-in-flight-bytes) is below a chunk of releases with
    large metadata answers 413; the client halves the chunk until each part fits."""
    log_vkey = tmp_path / "log.vkey"
    log_vkey.write_text(log_signer.verifier().text() + "\n")
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path,
                          extra=["--policy", "open", "--max-in-flight-bytes", "131072"])
    try:
        releases = [{**release(i), "metadata": {"notes": "x" * 4000}} for i in range(40)]
        batch = write_batch(tmp_path / "big.jsonl", releases)
        proc = tlog(*batch_args(server, log_vkey, write_key(tmp_path / "acme.key", ACME),
                                batch, "--chunk-size", "40"))
        assert_path_taken(server, proc.stderr)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert "logged 40 new" in proc.stdout
    assert len(receipts_of(tmp_path / "big.jsonl.receipts.jsonl", log_signer.verifier())) == 40


def test_a_bad_line_is_refused_upfront_with_its_line_number(world: Any,
                                                            tmp_path: Path) -> None:
    server, log_vkey, key = world
    bad_hash = {**release(3), "artifacts": [{"name": "a", "sha256": "F" * 64, "size": 1}]}
    lines = [json.dumps(release(1)), json.dumps(release(2)), json.dumps(bad_hash),
             "", "{not json", json.dumps({**release(6), "signature": "x"}),
             json.dumps(release(1))]
    batch = tmp_path / "bad.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    proc = tlog(*batch_args(server, log_vkey, key, batch))
    assert proc.returncode == 2, proc.stderr
    for number in (3, 5, 6, 7):
        assert f"bad.jsonl:{number}:" in proc.stderr
    assert "bad.jsonl:1:" not in proc.stderr and "bad.jsonl:2:" not in proc.stderr
    assert "also on line 1" in proc.stderr and "nothing was submitted" in proc.stderr
    assert tree_size(server) == 0
    assert not (tmp_path / "bad.jsonl.receipts.jsonl").exists()


def test_a_log_answering_under_another_key_gets_no_receipt_written(
        world: Any, tmp_path: Path) -> None:
    """A log (or a machine in the middle) that signs with a key other than the pinned one:
    the batch stops at its first answer and no receipt is kept."""
    server, _, key = world
    other = tmp_path / "other.vkey"
    other.write_text(generate_key("log.example.org/test").verifier().text() + "\n")
    batch = write_batch(tmp_path / "r.jsonl", [release(i) for i in range(5)])
    proc = tlog(*batch_args(server, other, key, batch))
    assert proc.returncode == 1 and "does not verify" in proc.stderr, proc.stderr
    assert (tmp_path / "r.jsonl.receipts.jsonl").read_text() == ""


def test_registered_log_with_a_token_refuses_only_the_lines_it_does_not_cover(
        tmp_path: Path, log_signer: Signer, database_url: str) -> None:
    admin = generate_key("log-admin")
    admin_vkey, acme_vkey, log_vkey = (tmp_path / n for n in ("admin.vkey", "acme.vkey",
                                                              "log.vkey"))
    admin_vkey.write_text(admin.verifier().text() + "\n")
    acme_vkey.write_text(ACME.verifier().text() + "\n")
    log_vkey.write_text(log_signer.verifier().text() + "\n")
    admin_token, token = tmp_path / "admin-token", tmp_path / "token"
    admin_token.write_text("admin-secret-3f9a1c0e55d24b7e\n")
    admin_token.chmod(0o600)
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path,
                          extra=["--policy", "registered", "--admin-key", str(admin_vkey),
                                 "--token-key", str(write_key(tmp_path / "tk.key",
                                                              generate_key("tlog-tokens"))),
                                 "--admin-token-file", str(admin_token)])
    try:
        reg = tlog("registry", "register", "--log", server.url, "--log-key", str(log_vkey),
                   "--signer", str(write_key(tmp_path / "admin.key", admin)),
                   "--publisher", "acme", "--package", "com.acme.*", "--publisher-key",
                   str(acme_vkey), "--admin-token-file", str(admin_token))
        assert reg.returncode == 0, reg.stderr
        issued = tlog("token", "issue", "--log", server.url, "--publisher", "acme",
                      "--scope", "com.acme.*", "--admin-token-file", str(admin_token))
        assert issued.returncode == 0, issued.stderr
        token.write_text(issued.stdout)
        token.chmod(0o600)
        # The package uses counters once one release has one: every line gives one, in
        # order (the fallback keeps a package's releases in file order).
        releases = [{**release(i), "counter": i + 1} for i in range(5)]
        releases.append(release(9, package="org.other.app"))
        batch = write_batch(tmp_path / "r.jsonl", releases)
        proc = tlog(*batch_args(server, log_vkey, write_key(tmp_path / "acme.key", ACME),
                                batch, "--token-file", str(token)))
        assert_path_taken(server, proc.stderr)
    finally:
        server.stop()
    assert proc.returncode == 1, proc.stderr
    assert "logged 5 new" in proc.stdout, proc.stderr and "1 refused" in proc.stdout
    assert "r.jsonl:6: org.other.app 1.0.9 refused: 403" in proc.stderr, proc.stderr
    logged = receipts_of(tmp_path / "r.jsonl.receipts.jsonl", log_signer.verifier())
    assert sorted(v for _, v, _ in logged) == [f"1.0.{i}" for i in range(5)]


def test_the_publisher_api_verifies_what_it_returns(world: Any) -> None:
    server, log_vkey, _ = world

    async def run(log_key: Verifier) -> list[Any]:
        async with Publisher(server.url, ACME, log_key, chunk_size=2) as p:
            receipt = await p.publish(release(100))
            return [receipt, *await p.publish_many([release(101), release(102),
                                                    release(100)])]

    log_key = read_vkey(log_vkey)
    receipt, *outcomes = asyncio.run(run(log_key))
    assert verify_receipt(receipt, KeyTrust(log_key)).release.version == "1.0.100"
    assert [o.created for o in outcomes] == [True, True, False]
    assert all(o.ok for o in outcomes)
    with pytest.raises(VerificationFailed):
        asyncio.run(run(generate_key("log.example.org/test").verifier()))
