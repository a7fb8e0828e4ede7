"""PKCS#11 signing (tlog.log.hsm) against a real SoftHSM2 token with an Ed25519 key.

A throwaway token lives in a temporary directory named by a private SOFTHSM2_CONF, so no
system token is touched. Without SoftHSM2 or python-pkcs11 (`make test` installs both), or
when the token cannot make or use an Ed25519 key, every test here skips with the exact
error as its reason.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import pytest

pytest.importorskip("pkcs11")

from tests.conftest import SHARED
from tests.support import make_release, start_server, submit_all
from tlog.config import ConfigError, from_options
from tlog.log.hsm import HsmError, Pkcs11Signer, generate_ed25519_key
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.protocol.note import NoteSigner, Verifier, generate_key, key_id, parse_vkey
from verifier.protocol.receipt import make_receipt, verify_receipt
from verifier.protocol.trust import KeyTrust

GO_VERIFIER = SHARED / "interop" / "go-verifier" / "run.sh"
MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so",
                     "/usr/lib/*/softhsm/libsofthsm2.so",
                     "/usr/local/lib/softhsm/libsofthsm2.so")
TOKEN, KEY, PIN, SO_PIN = "tlog", "log-key", "4711-tlog", "so-pin-0815"
ORIGIN = "hsm.example.org/log"


@dataclass(frozen=True)
class SoftHsm:
    """A SoftHSM2 token holding an Ed25519 key pair labelled KEY."""

    module: str
    pin_file: Path
    public_key: bytes
    vkey_file: Path

    def options(self, key: str = KEY) -> list[str]:
        return ["--pkcs11-module", self.module, "--pkcs11-token", TOKEN,
                "--pkcs11-key", key, "--pkcs11-pin-file", str(self.pin_file)]

    def signer(self, key: str = KEY, name: str = ORIGIN) -> Pkcs11Signer:
        return Pkcs11Signer(self.module, TOKEN, key, PIN, name)


def _module() -> str:
    for pattern in MODULE_CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            return path
    pytest.skip(f"SoftHSM2's PKCS#11 module is not installed (looked for "
                f"{', '.join(MODULE_CANDIDATES)}): apt-get install softhsm2")


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    module = _module()
    util = shutil.which("softhsm2-util")
    if util is None:
        pytest.skip("softhsm2-util is not on PATH: apt-get install softhsm2")
    home = tmp_path_factory.mktemp("softhsm")
    (home / "tokens").mkdir()
    conf = home / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        init = subprocess.run([util, "--init-token", "--free", "--label", TOKEN,
                               "--so-pin", SO_PIN, "--pin", PIN],
                              capture_output=True, text=True, check=False, timeout=60)
        if init.returncode != 0:
            pytest.skip(f"softhsm2-util --init-token failed ({init.returncode}): "
                        f"{init.stderr.strip() or init.stdout.strip()}")
        try:
            public_key = generate_ed25519_key(module, TOKEN, KEY, PIN)
        except HsmError as exc:
            pytest.skip(str(exc))
        pin_file = home / "pin"
        pin_file.write_text(PIN + "\n")
        pin_file.chmod(0o600)
        vkey = Verifier(ORIGIN, key_id(ORIGIN, public_key), public_key)
        vkey_file = home / "log.vkey"
        vkey_file.write_text(vkey.text() + "\n")
        yield SoftHsm(module, pin_file, public_key, vkey_file)


@pytest.fixture
def signer(softhsm: SoftHsm) -> Iterator[Pkcs11Signer]:
    s = softhsm.signer()
    try:
        yield s
    finally:
        s.close()


def test_token_signature_verifies_with_pynacl_and_the_token_public_key(
        softhsm: SoftHsm, signer: Pkcs11Signer) -> None:
    """CKM_EDDSA makes plain RFC 8032 signatures of the key read from CKA_EC_POINT."""
    msg = b"release 1.0 of example\n"
    sig = signer.sign(msg)
    assert len(sig) == 64
    nacl.signing.VerifyKey(softhsm.public_key).verify(msg, sig)
    assert signer.verifier().public_key == softhsm.public_key
    assert signer.key_id == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + softhsm.public_key
                                           ).digest()[:4]


def test_pkcs11_signer_is_a_note_signer(signer: Pkcs11Signer) -> None:
    as_protocol: NoteSigner = signer
    assert as_protocol.name == ORIGIN
    assert parse_vkey(signer.verifier().text()) == signer.verifier()


def test_hsm_signed_checkpoint_opens(signer: Pkcs11Signer) -> None:
    cp = Checkpoint(ORIGIN, 42, hashlib.sha256(b"root").digest(), ("extension line",))
    note = sign_checkpoint(cp, signer)
    assert open_checkpoint(note, signer.verifier()) == cp
    other = generate_key(ORIGIN).verifier()
    with pytest.raises(ValueError, match="no signature by a known key"):
        open_checkpoint(note, other)


def test_hsm_signed_checkpoint_has_the_go_signature_line(softhsm: SoftHsm,
                                                         signer: Pkcs11Signer) -> None:
    """The signature line decodes, independently of verifier.protocol.note, as Go's note package
    writes it: "— <name> base64(key ID || Ed25519 signature over the body)"."""
    cp = Checkpoint(ORIGIN, 7, bytes(range(32)))
    note = sign_checkpoint(cp, signer)
    body, _, line = note.rpartition("\n\n")
    prefix = f"— {ORIGIN} "
    assert line.startswith(prefix) and line.endswith("\n") and line.count("\n") == 1
    raw = base64.b64decode(line[len(prefix):-1], validate=True)
    assert raw[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + softhsm.public_key
                                     ).digest()[:4]
    nacl.signing.VerifyKey(softhsm.public_key).verify((body + "\n").encode(), raw[4:])


@pytest.mark.skipif(not GO_VERIFIER.exists(),
                    reason="the Go verifier (../shared/interop) is not beside this clone")
def test_go_note_package_opens_the_hsm_signed_checkpoint(softhsm: SoftHsm, signer: Pkcs11Signer,
                                                         tmp_path: Path) -> None:
    note_file = tmp_path / "checkpoint"
    note_file.write_text(sign_checkpoint(Checkpoint(ORIGIN, 3, bytes(32)), signer))
    proc = subprocess.run([str(GO_VERIFIER), "open", str(softhsm.vkey_file), str(note_file)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "OK" in proc.stdout


def test_signing_from_many_threads_is_serialised(signer: Pkcs11Signer) -> None:
    verifier = signer.verifier()
    bad: list[int] = []

    def work(t: int) -> None:
        for i in range(20):
            msg = f"{t}/{i}\n".encode()
            if not verifier.verify(msg, signer.sign(msg)):
                bad.append(t)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_closed_signer_refuses_to_sign(softhsm: SoftHsm) -> None:
    s = softhsm.signer()
    s.close()
    with pytest.raises(HsmError, match="closed"):
        s.sign(b"x\n")


def test_wrong_pin_missing_key_and_missing_token_say_so(softhsm: SoftHsm) -> None:
    with pytest.raises(HsmError, match="PinIncorrect"):
        Pkcs11Signer(softhsm.module, TOKEN, KEY, "0000-wrong", ORIGIN)
    with pytest.raises(HsmError, match="no usable EC-Edwards key pair labelled 'nope'"):
        softhsm.signer(key="nope")
    with pytest.raises(HsmError, match="no PKCS#11 token labelled 'absent'"):
        Pkcs11Signer(softhsm.module, "absent", KEY, PIN, ORIGIN)


def test_generate_refuses_an_existing_label(softhsm: SoftHsm) -> None:
    with pytest.raises(HsmError, match="already holds a key labelled"):
        generate_ed25519_key(softhsm.module, TOKEN, KEY, PIN)


def _config(softhsm: SoftHsm, vkey: Path, pin_file: Path | None = None) -> None:
    options = dict(zip(("pkcs11_module", "pkcs11_token", "pkcs11_key", "pkcs11_pin_file"),
                       (softhsm.module, TOKEN, KEY, str(pin_file or softhsm.pin_file)),
                       strict=True))
    config = from_options("postgresql://unused.invalid/db", str(vkey), None, policy="open",
                          **options)
    assert isinstance(config.signer, Pkcs11Signer)
    try:
        assert config.origin == ORIGIN
        assert config.signer.verifier() == parse_vkey(vkey.read_text().strip())
    finally:
        config.signer.close()


def test_config_builds_the_pkcs11_signer_from_the_vkey(softhsm: SoftHsm) -> None:
    _config(softhsm, softhsm.vkey_file)


def test_config_refuses_a_vkey_that_is_not_the_token_key(softhsm: SoftHsm,
                                                         tmp_path: Path) -> None:
    other = tmp_path / "other.vkey"
    other.write_text(generate_key(ORIGIN).verifier().text() + "\n")
    with pytest.raises(ConfigError, match=re.escape("the token's key 'log-key' is " + ORIGIN)):
        _config(softhsm, other)


def test_config_refuses_a_private_key_as_the_vkey(softhsm: SoftHsm, tmp_path: Path) -> None:
    key = tmp_path / "log.key"
    key.write_text(generate_key(ORIGIN).text() + "\n")
    with pytest.raises(ConfigError, match="--key names the log's public vkey file"):
        _config(softhsm, key)


def test_config_needs_all_four_pkcs11_options(softhsm: SoftHsm) -> None:
    with pytest.raises(ConfigError, match="also needs --pkcs11-token, --pkcs11-pin-file"):
        from_options("postgresql://unused.invalid/db", str(softhsm.vkey_file), None,
                     policy="open", pkcs11_module=softhsm.module, pkcs11_key=KEY)


def test_serve_refuses_a_pin_file_others_can_read(softhsm: SoftHsm, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "tlog", "serve", "--database-url", "postgresql://unused.invalid/db",
         "--key", str(softhsm.vkey_file), "--policy", "open",
         "--pkcs11-module", softhsm.module, "--pkcs11-token", TOKEN, "--pkcs11-key", KEY,
         "--pkcs11-pin-file", str(pin_file)],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "PKCS#11 PIN file" in proc.stderr and "readable by others" in proc.stderr
    assert "chmod 600" in proc.stderr


def test_keygen_makes_the_key_in_the_token_and_writes_only_the_vkey(softhsm: SoftHsm,
                                                                    tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tlog", "keygen", "--name", "keygen.example/log",
         "--out", str(tmp_path), *softhsm.options(key="keygen-key")],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keygen.example_log.vkey"]
    vkey = parse_vkey((tmp_path / "keygen.example_log.vkey").read_text().strip())
    s = softhsm.signer(key="keygen-key", name="keygen.example/log")
    try:
        assert s.verifier() == vkey
    finally:
        s.close()
    again = subprocess.run(
        [sys.executable, "-m", "tlog", "keygen", "--name", "keygen.example/log",
         "--out", str(tmp_path / "elsewhere"), *softhsm.options(key="keygen-key")],
        capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 1 and "already holds a key labelled" in again.stderr


def test_serve_signs_checkpoints_in_the_token(softhsm: SoftHsm, database_url: str,
                                             tmp_path: Path) -> None:
    """A real `tlog serve` whose log key is in SoftHSM: every receipt verifies with the
    token's vkey, and the log publishes that vkey."""
    log_key = parse_vkey(softhsm.vkey_file.read_text().strip())
    publisher = generate_key("hsm-release-bot")
    first = [make_release(publisher, f"pkg{i % 3}", f"1.{i}") for i in range(12)]
    late = [make_release(publisher, "late", "2.0")]
    server = start_server(database_url, softhsm.vkey_file, tmp_path,
                          extra=[*softhsm.options(), "--policy", "open"])
    try:
        results = asyncio.run(submit_all([server.url], first, connections=8))
        results += asyncio.run(submit_all([server.url], late))
        with urllib.request.urlopen(server.url + "/v1/log", timeout=10) as resp:
            published = json.load(resp)
    finally:
        server.stop()
    assert [r.status for r in results] == [201] * 13, [r.body for r in results]
    for entry, r in zip(first + late, results, strict=True):
        receipt = make_receipt(entry, r.body["index"],
                               [bytes.fromhex(h) for h in r.body["inclusion_proof"]],
                               r.body["checkpoint"])
        assert verify_receipt(receipt, KeyTrust(log_key)).checkpoint.origin == ORIGIN
    # 13 entries, and one map-root leaf per batch (each batch published its own size).
    size = 13 + len({r.body["tree_size"] for r in results})
    assert results[-1].body["tree_size"] == size
    assert published["vkey"] == log_key.text() and published["tree_size"] == size
