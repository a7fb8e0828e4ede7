"""Two independent witness implementations in one quorum, all real processes: `tlog serve`
with a witness policy, `tlog-verify witness serve`, and tests/alt_witness.py (written from
the C2SP texts alone, sharing no code with verifier/). What publishers and clients see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from tests.alt_witness import WitnessKey
from tests.support import Server, free_port, start_server, write_key
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.note import Signer, generate_key

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@contextmanager
def process(*args: str, port: int) -> Iterator[str]:
    """A witness process listening on `port` (waited for), terminated on exit."""
    proc = subprocess.Popen([sys.executable, "-m", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, f"{args[0]} did not listen"
            try:
                urllib.request.urlopen(url + "/", timeout=1)
            except urllib.error.HTTPError:
                break  # answering
            except OSError:
                time.sleep(0.1)
                continue
            break
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=120, check=False)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


def published_size(server: Server) -> int:
    try:
        return int(get(server.url + "/checkpoint").split("\n")[1])
    except urllib.error.HTTPError:
        return -1


def wait_size(server: Server, size: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while published_size(server) < size:
        assert time.monotonic() < deadline, f"size {size} not published: {server.output()}"
        time.sleep(0.1)


class Quorum:
    def __init__(self, tmp: Path, log: Signer) -> None:
        self.tmp, self.log = tmp, log
        self.log_vkey = tmp / "log.vkey"
        self.log_vkey.write_text(log.verifier().text() + "\n")
        made = run("verifier.cli", "witness", "keygen", "--name", "w1.example/witness",
                   "--out", str(tmp / "w1"), cwd=tmp)
        assert made.returncode == 0, made.stderr
        self.w1_key = tmp / "w1" / "w1.example_witness.key"
        self.w1_state = tmp / "w1" / "state"
        self.w1_port, self.w2_port = free_port(), free_port()
        alt = WitnessKey.generate("w2.example/alt")
        self.w2_key = tmp / "w2.key"
        self.w2_key.write_text(alt.private_text() + "\n")
        self.policy = tmp / "policy"
        self.policy.write_text(
            f"log {log.verifier().text()}\n"
            f"witness ours {(tmp / 'w1' / 'w1.example_witness.vkey').read_text().strip()} "
            f"http://127.0.0.1:{self.w1_port}\n"
            f"witness alt {alt.vkey()} http://127.0.0.1:{self.w2_port}\n"
            "group both all ours alt\nquorum both\n")

    def ours(self) -> AbstractContextManager[str]:
        return process("verifier.cli", "witness", "serve", "--key", str(self.w1_key),
                       "--log-key", str(self.log_vkey), "--state", str(self.w1_state),
                       "--listen", f"127.0.0.1:{self.w1_port}", port=self.w1_port)

    def alt(self) -> AbstractContextManager[str]:
        return process("tests.alt_witness", "serve", "--key", str(self.w2_key), "--log-vkey",
                       str(self.log_vkey), "--listen", f"127.0.0.1:{self.w2_port}",
                       port=self.w2_port)


def publish(q: Quorum, server: Server, version: str,
            *wait: str) -> subprocess.CompletedProcess[str]:
    publisher = q.tmp / "pub.key"
    if not publisher.exists():
        write_key(publisher, generate_key("acme-bot"))
    artifact = q.tmp / f"app-{version}.bin"
    artifact.write_bytes(version.encode())
    return run("tlog", "publish", "--log", server.url, "--log-key", str(q.log_vkey), "--key",
               str(publisher), "--package", "com.acme.app", "--version", version, *wait,
               str(artifact), cwd=q.tmp)


def test_two_witness_implementations_cosign_and_clients_verify_the_quorum(
        database_url: str, tmp_path: Path) -> None:
    log = generate_key("log.example.org/quorum")
    q = Quorum(tmp_path, log)
    key = write_key(tmp_path / "log.key", log)
    with q.ours(), q.alt():
        server = start_server(database_url, key, tmp_path, extra=(
            "--policy", "open", "--witness-policy", str(q.policy), "--witness-interval", "0.3"))
        try:
            done = publish(q, server, "1.0", "--wait-cosigned", "--policy", str(q.policy),
                           "--wait-timeout", "30s")
            assert done.returncode == 0, done.stdout + done.stderr
            receipt_file = tmp_path / "app-1.0.bin.tlog-receipt.json"
            proof = json.loads(receipt_file.read_text())["proof"]
            assert "— w1.example/witness " in proof and "— w2.example/alt " in proof
            verified = run("verifier.cli", "bundle", str(receipt_file), "--policy",
                           str(q.policy), "--artifact", str(tmp_path / "app-1.0.bin"),
                           cwd=tmp_path)
            assert verified.returncode == 0, verified.stderr
            online = run("verifier.cli", "checkpoint", "--log", server.url, "--policy",
                         str(q.policy), "--max-age", "1m", cwd=tmp_path)
            assert online.returncode == 0, online.stderr
            assert "cosigned by alt" in online.stdout and "ours" in online.stdout
        finally:
            server.stop()


def test_a_fork_under_the_log_key_is_refused_by_both_witnesses(database_url: str,
                                                               tmp_path: Path) -> None:
    """The log key alone cannot get a second history cosigned: both implementations refuse
    a checkpoint of the published size with another root, and one that is not an extension."""
    log = generate_key("log.example.org/quorum")
    q = Quorum(tmp_path, log)
    key = write_key(tmp_path / "log.key", log)
    with q.ours() as ours, q.alt() as alt:
        server = start_server(database_url, key, tmp_path, extra=(
            "--policy", "open", "--witness-policy", str(q.policy), "--witness-interval", "0.3"))
        try:
            assert publish(q, server, "1.0").returncode == 0
            wait_size(server, 2)  # the release and its batch's map-root entry
        finally:
            server.stop()
        fork = sign_checkpoint(Checkpoint(log.name, 2, b"\x66" * 32), log)
        bigger = sign_checkpoint(Checkpoint(log.name, 3, b"\x67" * 32), log)
        for url in (ours, alt):
            same_size = _add_checkpoint(url, f"old 2\n\n{fork}")
            assert same_size == 409, url
            not_extension = _add_checkpoint(url, f"old 2\n{'AA' * 21}A=\n\n{bigger}")
            assert not_extension in (400, 422), url
            assert _add_checkpoint(url, f"old 0\n\n{fork}") == 409  # a rollback


def _add_checkpoint(url: str, body: str) -> int:
    req = urllib.request.Request(url + "/add-checkpoint", data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_witness_down_delays_publication_never_appends_and_the_log_catches_up(
        database_url: str, tmp_path: Path) -> None:
    log = generate_key("log.example.org/quorum")
    q = Quorum(tmp_path, log)
    key = write_key(tmp_path / "log.key", log)
    with q.alt():
        server = start_server(database_url, key, tmp_path, extra=(
            "--policy", "open", "--witness-policy", str(q.policy), "--witness-interval", "0.3"))
        try:
            with q.ours():
                assert publish(q, server, "1.0").returncode == 0
                wait_size(server, 2)  # 1.0 at index 0, its batch's map root at 1
            for version in ("2.0", "3.0"):  # our witness is down: appends go on
                done = publish(q, server, version)
                assert done.returncode == 0, done.stderr
                assert "tree size" in done.stdout
            assert published_size(server) == 2  # short of the quorum: not published
            ready = json.loads(get(server.url + "/readyz"))
            assert ready["witnesses"]["ours"]["last_error"]
            wait = ("--wait-cosigned", "--policy", str(q.policy), "--wait-timeout", "2s")
            gave_up = publish(q, server, "3.0", *wait)
            assert gave_up.returncode == 3, gave_up.stderr  # transient: the entry is logged
            assert "entry 4 is logged" in gave_up.stderr  # 2.0 at 2, 3.0 at 4
            assert "run the same command again" in gave_up.stderr
            with q.ours():  # back, with its state: the log catches up from size 2
                wait_size(server, 6)
                again = publish(q, server, "3.0", *wait[:-1], "30s")
                assert again.returncode == 0, again.stderr
                assert "already logged: com.acme.app 3.0 at index 4 (cosigned tree size 6)" \
                    in again.stdout
        finally:
            server.stop()


def test_waiting_for_cosignatures_of_a_log_without_witnesses_is_a_usage_error(
        database_url: str, tmp_path: Path) -> None:
    log = generate_key("log.example.org/quorum")
    q = Quorum(tmp_path, log)
    server = start_server(database_url, write_key(tmp_path / "log.key", log), tmp_path)
    try:
        done = publish(q, server, "1.0", "--wait-cosigned", "--policy", str(q.policy))
        assert done.returncode == 2, done.stderr
        assert "runs without --witness-policy" in done.stderr
    finally:
        server.stop()
