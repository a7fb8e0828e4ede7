"""Key files and atomic writes, one way each: verifier/client/keys.py and files.py, and the
error types each caller keeps (tlog's ConfigError, the verifier's UsageError)."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from tlog.config import ConfigError, load_signer, load_vkey, read_secret_file
from verifier.client.files import atomic_write
from verifier.client.keys import (
    KeyFileError,
    read_private_key,
    read_secret,
    read_vkey,
    read_witness_key,
)
from verifier.client.statedir import load_vkey as load_pinned_key
from verifier.errors import UsageError
from verifier.protocol.cosignature import generate_witness_key
from verifier.protocol.note import generate_key

SIGNER = generate_key("example.com/log")


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_a_private_key_is_read_only_from_a_file_no_one_else_may_read(tmp_path: Path) -> None:
    key = write(tmp_path / "log.key", SIGNER.text(), 0o600)
    assert read_private_key(key) == SIGNER
    key.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"is readable by others \(mode 0640\); run: chmod 600"):
        read_private_key(key)
    assert read_private_key(key, owner_only=False) == SIGNER
    with pytest.raises(ConfigError, match="readable by others"):
        load_signer(key)


def test_unreadable_and_malformed_files_are_named_with_what_they_should_hold(
        tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(KeyFileError, match=f"couldn't read PIN file {missing}: No such file"):
        read_secret(missing, "PIN file")
    with pytest.raises(ConfigError, match=f"couldn't read admin token file {missing}"):
        read_secret_file(missing, "admin token file")
    bad = write(tmp_path / "bad.key", "PRIVATE+KEY+nonsense", 0o600)
    with pytest.raises(ConfigError, match=f"key file {bad} does not hold a private key"):
        load_signer(bad)
    with pytest.raises(KeyFileError, match=f"{bad} is not a verifier key"):
        read_vkey(bad)
    with pytest.raises(ConfigError, match=f"couldn't read verifier key {missing}"):
        load_vkey(missing)


def test_the_verifier_keeps_its_usage_error_and_wording(tmp_path: Path) -> None:
    vkey = write(tmp_path / "log.vkey", SIGNER.verifier().text(), 0o644)
    assert load_pinned_key(str(vkey)) == SIGNER.verifier()
    with pytest.raises(UsageError, match="couldn't read the admin key /nonexistent"):
        load_pinned_key("/nonexistent", "admin key")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match=r"is not a verifier key \(name\+id\+key\)"):
        load_pinned_key(str(tmp_path / "binary"))


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path,
                                                                durable: bool) -> None:
    target = tmp_path / "a" / "b" / "state.json"
    atomic_write(target, b"one", durable=durable)
    atomic_write(target, b"two", durable=durable)
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["state.json"]


def test_atomic_write_fsyncs_only_when_durable(tmp_path: Path) -> None:
    with mock.patch("verifier.client.files.os.fsync") as fsync:
        atomic_write(tmp_path / "cache", b"x", durable=False)
        assert fsync.call_count == 0
        atomic_write(tmp_path / "state", b"x", durable=True)
        assert fsync.call_count == 2  # the file, then its directory


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    atomic_write(target, b"old", durable=True)
    with mock.patch("verifier.client.files.os.replace", side_effect=OSError("disk full")), \
            pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new", durable=True)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["checkpoint"]


def test_a_file_written_without_overwrite_never_replaces_one_that_exists(tmp_path: Path) -> None:
    target = tmp_path / "w.key"
    atomic_write(target, b"first", durable=True, overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write(target, b"second", durable=True, overwrite=False)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["w.key"]  # no stray temporary file
    atomic_write(tmp_path / "w.vkey", b"public", durable=False, mode=0o644)
    assert (tmp_path / "w.vkey").stat().st_mode & 0o777 == 0o644
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_witness_key_is_read_only_from_a_private_file_of_the_right_type(
        tmp_path: Path) -> None:
    witness = generate_witness_key("witness.example/w1")
    key = write(tmp_path / "w.key", witness.text(), 0o600)
    assert read_witness_key(key) == witness
    key.chmod(0o640)
    with pytest.raises(KeyFileError, match="readable by others"):
        read_witness_key(key)
    note_key = write(tmp_path / "log.key", SIGNER.text(), 0o600)
    with pytest.raises(KeyFileError, match="witness private key"):
        read_witness_key(note_key)
