"""The demo witness of `tlog dev`: a `tlog-verify witness serve` beside the dev log, and the
policy that makes the log wait for its cosignature.

It shows the two stages (a checkpoint per batch, published per quorum) and gives receipts
with cosigned checkpoints to try `tlog-verify --policy` and `--min-age` on. Run by the same
person on the same machine as the log, it protects nothing: a witness is worth something
only when someone else runs it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from verifier.client.files import atomic_write
from verifier.client.keys import read_witness_key
from verifier.protocol.cosignature import generate_witness_key

DEV_WITNESS = "localhost/tlog-dev-witness"
POLICY_FILE = "witness-policy"
STARTUP_SECONDS = 15.0


class DevWitnessError(RuntimeError):
    """The demo witness did not start."""


def ensure_witness_key(home: Path) -> tuple[Path, str]:
    """The demo witness's key file under home/witness (made once) and its vkey text. The
    vkey file is written from the key each time, so a crash between the two writes never
    leaves a key without its vkey."""
    key = home / "witness" / "witness.key"
    if not key.exists():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        signer = generate_witness_key(DEV_WITNESS)
        atomic_write(key, (signer.text() + "\n").encode(), durable=True, overwrite=False)
        print(f"created demo witness key {key}")
    vkey = read_witness_key(key, "demo witness key").verifier().text()
    atomic_write(key.with_suffix(".vkey"), (vkey + "\n").encode(), durable=False, mode=0o644)
    return key, vkey


def write_policy(home: Path, log_vkey: str, witness_vkey: str, url: str) -> Path:
    """home/witness-policy: the dev log and its one demo witness, which must cosign."""
    path = home / POLICY_FILE
    atomic_write(path, (
        "# tlog dev: the log and its demo witness (co-located: it protects nothing).\n"
        f"log {log_vkey}\n"
        f"witness dev {witness_vkey} {url}\n"
        "quorum dev\n").encode(), durable=False)
    return path


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevWitnessError(f"the demo witness exited with status {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise DevWitnessError(f"the demo witness did not listen on {host}:{port} within "
                          f"{STARTUP_SECONDS:g} s")


def _free_port(host: str) -> int:
    """A port nobody listens on now (the witness takes it a moment later: good enough for a
    demo, and the policy must name the port before the witness runs)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_witness(home: Path, key: Path, log_vkey_file: Path, host: str,
                    port: int) -> Iterator[str]:
    """`tlog-verify witness serve` for the dev log, stopped on exit; yields its URL.
    Port 0 is a free port."""
    port = port or _free_port(host)
    state = home / "witness" / "state"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [sys.executable, "-m", "verifier.cli", "witness", "serve", "--key", str(key),
               "--log-key", str(log_vkey_file), "--state", str(state),
               "--listen", f"{host}:{port}"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(host, port, proc)
        yield f"http://{host}:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
