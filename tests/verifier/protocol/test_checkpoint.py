"""Tests for verifier/protocol/checkpoint.py: c2sp.org/tlog-checkpoint."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.conftest import VECTORS
from verifier.protocol.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from verifier.protocol.note import NoteError, generate_key, parse_vkey, sign_note

GO_VKEY = parse_vkey((VECTORS / "go-log.vkey").read_text().strip())

LOG = generate_key("example.com/log")
OTHER = generate_key("example.com/other")
WITNESS = generate_key("witness.example")
ROOT = hashlib.sha256(b"root").digest()
ROOT64 = base64.b64encode(ROOT).decode()


def _body(size: str = "42", root: str = ROOT64, origin: str = "example.com/log") -> str:
    return f"{origin}\n{size}\n{root}\n"


# -- round trips and vectors ---------------------------------------------------------------


def test_go_checkpoint_opens() -> None:
    cp = open_checkpoint((VECTORS / "go-checkpoint-1000.note").read_bytes(), GO_VKEY)
    assert cp.origin == "example.com/log"
    assert cp.size == 1000
    assert base64.b64encode(cp.root).decode() == "NGxrnLicS3b6ydyyDNqG46AcCldBfBOQKOrNRTj96Vs="
    assert cp.extensions == ()


def test_body_has_the_c2sp_layout() -> None:
    cp = Checkpoint("example.com/log", 42, ROOT, ("ext one", "ext2"))
    assert cp.body() == f"example.com/log\n42\n{ROOT64}\next one\next2\n"


@pytest.mark.parametrize("extensions", [(), ("a",), ("x y z", "second")])
def test_sign_and_open_round_trip(extensions: tuple[str, ...]) -> None:
    cp = Checkpoint("example.com/log", 7, ROOT, extensions)
    assert open_checkpoint(sign_checkpoint(cp, LOG), LOG.verifier()) == cp
    assert parse_checkpoint(cp.body()) == cp


def test_empty_tree_size_zero_is_accepted() -> None:
    assert parse_checkpoint(_body("0")).size == 0


def test_largest_size_is_accepted() -> None:
    assert parse_checkpoint(_body(str(2**63 - 1))).size == 2**63 - 1


def test_witness_cosignatures_are_ignored() -> None:
    cp = Checkpoint("example.com/log", 7, ROOT)
    signed = sign_note(cp.body(), [LOG, WITNESS])
    assert open_checkpoint(signed, LOG.verifier()) == cp


# -- strict body parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", ["01", "00", "+5", " 5", "5 ", "-1", "", "0x10", "1_000", "1e3", "٣", str(2**63)]
)
def test_non_canonical_tree_size_is_rejected(size: str) -> None:
    with pytest.raises(CheckpointError, match="tree size"):
        parse_checkpoint(_body(size))


def test_leading_zeros_are_rejected() -> None:
    with pytest.raises(CheckpointError, match="leading zeros"):
        parse_checkpoint(_body("0042"))


def test_root_with_bad_base64_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="invalid base64"):
        parse_checkpoint(_body(root=ROOT64.replace("=", "!")))


def test_root_with_non_canonical_base64_is_rejected() -> None:
    last = ROOT64[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    altered = alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(CheckpointError, match="non-canonical"):
        parse_checkpoint(_body(root=ROOT64[:-2] + altered + "="))


def test_root_of_wrong_length_is_rejected() -> None:
    short = base64.b64encode(ROOT[:31]).decode()
    with pytest.raises(CheckpointError, match="31 bytes"):
        parse_checkpoint(_body(root=short))


def test_missing_final_newline_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="newline"):
        parse_checkpoint(_body()[:-1])


def test_missing_root_line_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="needs origin"):
        parse_checkpoint("example.com/log\n42\n")


def test_empty_extension_line_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="non-empty"):
        parse_checkpoint(_body() + "ext\n\n")


@pytest.mark.parametrize("origin", ["", " example.com/log", "example.com/log ", "a b", "a\tb"])
def test_bad_origin_is_rejected(origin: str) -> None:
    with pytest.raises(CheckpointError, match="origin"):
        parse_checkpoint(_body(origin=origin))


def test_checkpoint_fields_are_validated_on_construction() -> None:
    with pytest.raises(CheckpointError):
        Checkpoint("example.com/log", -1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("example.com/log", 2**63, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("example.com/log", 1, ROOT[:31])
    with pytest.raises(CheckpointError):
        Checkpoint("example.com/log", 1, ROOT, ("two\nlines",))


# -- signatures --------------------------------------------------------------------------------


def test_origin_different_from_key_name_is_rejected() -> None:
    signed = sign_note(_body(origin="example.com/other"), [LOG])
    with pytest.raises(CheckpointError, match="not the log"):
        open_checkpoint(signed, LOG.verifier())


def test_sign_checkpoint_refuses_key_not_named_after_origin() -> None:
    with pytest.raises(CheckpointError, match="not the origin"):
        sign_checkpoint(Checkpoint("example.com/log", 1, ROOT), OTHER)


def test_tampered_checkpoint_is_rejected() -> None:
    signed = sign_checkpoint(Checkpoint("example.com/log", 42, ROOT), LOG)
    with pytest.raises(NoteError, match="invalid signature"):
        open_checkpoint(signed.replace("\n42\n", "\n43\n"), LOG.verifier())


def test_checkpoint_signed_by_another_key_is_rejected() -> None:
    impostor = generate_key("example.com/log")
    signed = sign_checkpoint(Checkpoint("example.com/log", 42, ROOT), impostor)
    with pytest.raises(NoteError):
        open_checkpoint(signed, LOG.verifier())


def test_go_checkpoint_does_not_open_with_another_key() -> None:
    with pytest.raises(NoteError):
        open_checkpoint((VECTORS / "go-checkpoint-1000.note").read_bytes(), LOG.verifier())
